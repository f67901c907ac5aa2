"""Validation of what a user asks for, before anything is stored. Failures are data, not exceptions."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from services.catalog import Catalog, Flavor, Image
from services.instances.labels import label_problems
from services.instances.ssh_keys import InvalidSshKey, SshPublicKey, parse_ssh_public_key

# Always `fullmatch`: with `match`, `$` also matches before a final newline ("web-1\n").
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
MAX_DESCRIPTION = 1024  # bytes of UTF-8
MAX_IDEMPOTENCY_KEY = 128


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
    labels: tuple[tuple[str, str], ...] = ()  # (key, value), as given: duplicates are an error


@dataclass(frozen=True, slots=True)
class ValidCreate:
    """What may be stored: the request's checked values, the key only in its re-serialised form."""

    request: CreateRequest
    flavor: Flavor
    image: Image
    ssh_public_key: SshPublicKey | None = None


def validate_create(request: CreateRequest, catalog: Catalog) -> ValidCreate | list[UserError]:
    errors: list[UserError] = []
    if not DNS_LABEL.fullmatch(request.name):
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
    ssh_key: SshPublicKey | None = None
    if request.ssh_public_key is not None:
        try:
            ssh_key = parse_ssh_public_key(request.ssh_public_key)
        except InvalidSshKey as error:
            errors.append(
                UserError(
                    "sshPublicKey", f"is not an accepted OpenSSH public key: {error}", "INVALID_SSH_KEY"
                )
            )
    if request.description is not None:
        errors.extend(_description_errors(request.description))
    key = request.idempotency_key
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        errors.append(
            UserError(
                "idempotencyKey", f"must be 1-{MAX_IDEMPOTENCY_KEY} printable characters", "INVALID_KEY"
            )
        )
    errors.extend(labels_errors(request.labels))
    if errors or flavor is None or image is None:
        return errors
    return ValidCreate(request, flavor, image, ssh_key)


def labels_errors(labels: tuple[tuple[str, str], ...]) -> list[UserError]:
    """Kubernetes label syntax and limits (`services.instances.labels`), as userErrors on `labels`."""
    return [UserError("labels", message, code) for code, message in label_problems(labels)]


def _description_errors(description: str) -> list[UserError]:
    if len(description.encode("utf-8", errors="surrogatepass")) > MAX_DESCRIPTION:
        return [UserError("description", f"must be at most {MAX_DESCRIPTION} bytes (1 KiB)", "TOO_LONG")]
    # Cc: C0/C1 controls (newline, \r, \x85, …); Zl/Zp: U+2028/U+2029, line breaks to YAML and JavaScript;
    # Cs: lone surrogates, which no database encoding stores.
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") for char in description):
        return [
            UserError(
                "description", "must not contain control characters or line breaks", "INVALID_DESCRIPTION"
            )
        ]
    return []
