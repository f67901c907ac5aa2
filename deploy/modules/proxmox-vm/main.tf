# One VM, full-cloned from a cloud-init template. The template must have the QEMU guest agent
# installed: the VM's address is read from it.

data "proxmox_virtual_environment_vms" "template" {
  node_name = var.proxmox_node

  filter {
    name   = "template"
    values = ["true"]
  }

  filter {
    name   = "name"
    values = [var.template]
  }
}

locals {
  template_vm_id = one(data.proxmox_virtual_environment_vms.template.vms[*].vm_id)
}

resource "proxmox_virtual_environment_vm" "this" {
  name      = var.name
  node_name = var.proxmox_node
  tags      = ["opencsp"]
  on_boot   = var.started
  started   = var.started

  clone {
    vm_id = local.template_vm_id
    full  = true
  }

  agent {
    enabled = true
  }

  cpu {
    cores = var.cores
    type  = "x86-64-v2-AES"
  }

  memory {
    dedicated = var.memory
  }

  disk {
    datastore_id = var.proxmox_datastore
    interface    = "scsi0"
    size         = var.disk
    discard      = "on"
  }

  network_device {
    bridge = var.proxmox_bridge
  }

  initialization {
    datastore_id = var.proxmox_datastore

    ip_config {
      ipv4 {
        address = "dhcp"
      }
    }

    user_account {
      username = "opencsp"
      keys     = var.ssh_public_key == "" ? [] : [trimspace(var.ssh_public_key)]
    }
  }

  lifecycle {
    precondition {
      condition     = local.template_vm_id != null
      error_message = "no VM template named ${var.template} on node ${var.proxmox_node}."
    }
  }
}

locals {
  # ipv4_addresses lists one list per interface the guest agent reports; drop loopback.
  addresses  = [for address in flatten(proxmox_virtual_environment_vm.this.ipv4_addresses) : address if !startswith(address, "127.")]
  ip_address = length(local.addresses) > 0 ? local.addresses[0] : ""
}
