"""Validation of what a user asks for, before anything is stored. Failures are data, not exceptions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from services.catalog import Catalog, Flavor, Image

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")  # \Z: `$` would let a final "\n" in
MAX_DESCRIPTION = 1024
MAX_IDEMPOTENCY_KEY = 128
MAX_SSH_KEY = 16_384


@dataclass(frozen=True, slots=True)
class UserError:
    field: str | None
    message: str
    code: str


@dataclass(frozen=True, slots=True)
class CreateRequest:
    name: str
    flavor: str
    image: str
    ssh_public_key: str | None = None
    description: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class ValidCreate:
    request: CreateRequest
    flavor: Flavor
    image: Image


def validate_create(request: CreateRequest, catalog: Catalog) -> ValidCreate | list[UserError]:
    errors: list[UserError] = []
    if not DNS_LABEL.match(request.name):
        errors.append(
            UserError(
                "name",
                "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
                "INVALID_NAME",
            )
        )
    flavor = catalog.flavor(request.flavor)
    if flavor is None:
        known = ", ".join(f.name for f in catalog.flavors)
        errors.append(UserError("flavor", f"unknown flavor; choose one of {known}", "UNKNOWN_FLAVOR"))
    image = catalog.image(request.image)
    if image is None:
        known = ", ".join(i.name for i in catalog.images)
        errors.append(UserError("image", f"unknown image; choose one of {known}", "UNKNOWN_IMAGE"))
    if request.ssh_public_key is not None and not _valid_ssh_key(request.ssh_public_key):
        errors.append(
            UserError("sshPublicKey", "is not an OpenSSH public key (ssh-ed25519 AAAA…)", "INVALID_SSH_KEY")
        )
    if request.description is not None and len(request.description) > MAX_DESCRIPTION:
        errors.append(UserError("description", f"must be at most {MAX_DESCRIPTION} characters", "TOO_LONG"))
    key = request.idempotency_key
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        errors.append(
            UserError(
                "idempotencyKey", f"must be 1-{MAX_IDEMPOTENCY_KEY} printable characters", "INVALID_KEY"
            )
        )
    if errors or flavor is None or image is None:
        return errors
    return ValidCreate(request, flavor, image)


def _valid_ssh_key(value: str) -> bool:
    value = value.strip()
    if not value or len(value) > MAX_SSH_KEY or "\n" in value:
        return False
    try:
        load_ssh_public_key(value.encode())
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True
