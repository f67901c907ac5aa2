"""The gateway's Kubernetes boundary: tofu-controller `Terraform` objects, their outputs, and the watch."""
