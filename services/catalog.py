"""What users may order: flavors (sizes) and images. Configured in settings, read-only at run time."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field


class Flavor(BaseModel, frozen=True):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")
    cpu: int = Field(gt=0, le=512)
    memory_mib: int = Field(gt=0)
    disk_gib: int = Field(gt=0)


class Image(BaseModel, frozen=True):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")
    description: str = ""
    # The OpenTofu module (path inside the Flux source) and the Proxmox template that build this image.
    module_path: str = "./deploy/modules/proxmox-vm"
    template: str = ""


DEFAULT_FLAVORS = (
    Flavor(name="small", cpu=1, memory_mib=2048, disk_gib=20),
    Flavor(name="medium", cpu=2, memory_mib=4096, disk_gib=40),
    Flavor(name="large", cpu=4, memory_mib=8192, disk_gib=80),
    Flavor(name="xlarge", cpu=8, memory_mib=16384, disk_gib=160),
)

DEFAULT_IMAGES = (
    Image(name="debian-12", description="Debian 12 (bookworm)", template="debian-12-cloudinit"),
    Image(name="ubuntu-24.04", description="Ubuntu 24.04 LTS (noble)", template="ubuntu-2404-cloudinit"),
    Image(name="rocky-9", description="Rocky Linux 9", template="rocky-9-cloudinit"),
)


class Catalog:
    """Lookup by name; order is kept as configured so the console lists them as the operator chose."""

    def __init__(self, flavors: Sequence[Flavor], images: Sequence[Image]) -> None:
        self.flavors = tuple(flavors)
        self.images = tuple(images)
        self._flavors = {flavor.name: flavor for flavor in self.flavors}
        self._images = {image.name: image for image in self.images}

    def flavor(self, name: str) -> Flavor | None:
        return self._flavors.get(name)

    def image(self, name: str) -> Image | None:
        return self._images.get(name)
