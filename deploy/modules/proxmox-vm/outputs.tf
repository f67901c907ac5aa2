# Strings, so tofu-controller writes them raw into the outputs Secret (writeOutputsToSecret),
# where the gateway reads them.

output "ip_address" {
  description = "First non-loopback IPv4 address of the VM, as the guest agent reports it."
  value       = local.ip_address
}

output "hostname" {
  description = "Hostname of the VM (its name; cloud-init sets it)."
  value       = proxmox_virtual_environment_vm.this.name
}
