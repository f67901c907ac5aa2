# Per instance: set by the gateway in the Terraform object's `vars`.

variable "name" {
  description = "VM name and hostname: a DNS-1123 label."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.name))
    error_message = "name must be a DNS-1123 label."
  }
}

variable "cores" {
  description = "vCPU cores."
  type        = number
}

variable "memory" {
  description = "Memory in MiB."
  type        = number
}

variable "disk" {
  description = "Size of the root disk in GiB."
  type        = number
}

variable "template" {
  description = "Name of the cloud-init VM template to clone."
  type        = string
}

variable "started" {
  description = "Whether the VM runs: stopInstance sets false, startInstance true; drift detection keeps it so."
  type        = bool
  default     = true
}

variable "ssh_public_key" {
  description = "OpenSSH public key for the default user; empty for none."
  type        = string
  default     = ""
}

# Per platform: the keys of the Secret named in `varsFrom` (OPENCSP_TERRAFORM_VARS_SECRET).

variable "proxmox_endpoint" {
  description = "Proxmox VE API URL, e.g. https://pve.example.org:8006/."
  type        = string
}

variable "proxmox_api_token" {
  description = "Proxmox VE API token: USER@REALM!TOKENID=SECRET."
  type        = string
  sensitive   = true
}

variable "proxmox_insecure" {
  description = "Skip TLS verification of the Proxmox API (self-signed lab clusters only)."
  type        = bool
  default     = false
}

variable "proxmox_node" {
  description = "Proxmox node that holds the template and runs the VM."
  type        = string
}

variable "proxmox_datastore" {
  description = "Datastore of the VM's disks and cloud-init drive."
  type        = string
  default     = "local-lvm"
}

variable "proxmox_bridge" {
  description = "Network bridge of the VM's NIC."
  type        = string
  default     = "vmbr0"
}
