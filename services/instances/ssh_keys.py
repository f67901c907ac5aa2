"""One OpenSSH public key, parsed rather than pattern-matched, because it ends up in a VM's cloud-init.

The key reaches the VM as a line of YAML and then of `authorized_keys`: a line break of any kind in it
(`\\r`, `\\x85`, U+2028, which YAML also counts as line breaks) becomes a new line there, i.e. a second
key or a cloud-init directive run as root on boot. So the whole line must be printable ASCII, the blob
must parse (by `cryptography`) as a key of an allowed type whose embedded type is the declared one, and
what is stored and forwarded is re-serialised from the parsed key plus the checked comment.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key

MAX_BYTES: Final = 8192
MIN_RSA_BITS: Final = 2048
SK_ED25519: Final = "sk-ssh-ed25519@openssh.com"
SK_ECDSA_P256: Final = "sk-ecdsa-sha2-nistp256@openssh.com"
# Security-key (FIDO) variants exist for ed25519 and P-256 only; the library parses both.
ALLOWED_TYPES: Final = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    SK_ED25519,
    SK_ECDSA_P256,
)
_CURVES: Final = {
    "ecdsa-sha2-nistp256": ec.SECP256R1,
    "ecdsa-sha2-nistp384": ec.SECP384R1,
    "ecdsa-sha2-nistp521": ec.SECP521R1,
    SK_ECDSA_P256: ec.SECP256R1,
}
# Tokens that start another key (or key option) inside what would otherwise be the comment.
_KEY_PREFIXES: Final = ("ssh-", "ecdsa-", "sk-", "rsa-sha2-")


class InvalidSshKey(ValueError):
    """Why the text is not one acceptable key, in words for the person who pasted it."""


@dataclass(frozen=True, slots=True)
class SshPublicKey:
    key_type: str
    blob: bytes
    comment: str

    def openssh(self) -> str:
        """The `authorized_keys` line: type, base64 blob and (if any) the comment."""
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {self.comment}" if self.comment else line


def parse_ssh_public_key(text: str) -> SshPublicKey:
    """The one key in `text` (surrounding spaces and one final line break allowed), or InvalidSshKey."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_BYTES:
        raise InvalidSshKey(f"is longer than {MAX_BYTES // 1024} KiB")
    line = text.strip(" \t\r\n")  # not str.strip(): that also eats \x85 and U+2028 at the ends
    if not line:
        raise InvalidSshKey("is empty")
    if "\n" in line or "\r" in line:
        raise InvalidSshKey("must be one key on one line")
    if not all(" " <= char <= "~" for char in line):
        raise InvalidSshKey(
            "may contain only printable ASCII characters (no tabs, control characters or line breaks)"
        )
    parts = line.split(None, 2)
    if len(parts) < 2:
        raise InvalidSshKey("must be a key type followed by the key data, e.g. 'ssh-ed25519 AAAA… you@host'")
    declared, encoded = parts[0], parts[1]
    comment = parts[2] if len(parts) == 3 else ""
    if declared not in ALLOWED_TYPES:
        allowed = ", ".join(ALLOWED_TYPES)
        raise InvalidSshKey(f"key type {declared[:40]!r} is not allowed; use one of {allowed}")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSshKey("the key data is not valid base64") from None
    embedded = _embedded_type(blob)
    if embedded != declared:
        raise InvalidSshKey(f"the key data is of type {embedded[:40]!r}, but the line says {declared!r}")
    if any(token.startswith(_KEY_PREFIXES) for token in comment.split()):
        raise InvalidSshKey("must hold exactly one key")
    try:
        key = load_ssh_public_key(f"{declared} {encoded}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidSshKey(f"the key data is not a valid {declared} key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidSshKey(
                f"RSA keys must have at least {MIN_RSA_BITS} bits (this one has {key.key_size})"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if declared not in _CURVES or not isinstance(key.curve, _CURVES[declared]):
            raise InvalidSshKey(f"the key data is not a valid {declared} key")
    elif not isinstance(key, ed25519.Ed25519PublicKey) or declared not in ("ssh-ed25519", SK_ED25519):
        raise InvalidSshKey(f"the key data is not a valid {declared} key")
    if declared not in (SK_ED25519, SK_ECDSA_P256):
        # Re-serialised from the parsed key; security keys also carry their application, which the
        # library parses (and checks for trailing data) but does not return, so their blob is kept.
        blob = base64.b64decode(key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[1])
        if _embedded_type(blob) != declared:
            raise InvalidSshKey(f"the key data is not a valid {declared} key")
    return SshPublicKey(declared, blob, comment)


def _embedded_type(blob: bytes) -> str:
    """The key type the blob names in its first SSH string (RFC 4253 §6.6)."""
    if len(blob) < 4:
        raise InvalidSshKey("the key data is too short to be a key")
    (length,) = struct.unpack(">I", blob[:4])
    name = blob[4 : 4 + length]
    if length > 64 or len(name) != length:
        raise InvalidSshKey("the key data does not start with a key type")
    try:
        return name.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidSshKey("the key data does not start with a key type") from None
