"""Read the outputs Secret tofu-controller writes (`spec.writeOutputsToSecret`).

Its writeOutput stores a string output as the raw string; any other output as its JSON value under
`<name>` plus the output's cty type, as JSON, under `<name>__type`. Secret values arrive base64-encoded.

What the Secret says is a peer's word, and whoever can write Secrets in the instances' namespace (or the
module's inputs) can write it: the address and hostname are handed to Ansible as the SSH target, so they
are parsed (`ipaddress`, DNS name rules) and only their canonical forms go on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

TYPE_SUFFIX: Final = "__type"
MAX_HOSTNAME: Final = 253
# One DNS label, matched whole (fullmatch): letters, digits and inner hyphens, 1-63 characters.
_LABEL: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutputsError(ValueError):
    """The Secret does not hold what the module promised (bad encoding or wrong types)."""


class InvalidOutputs(OutputsError):
    """The outputs decode, but their values are not an address and a hostname the gateway may use."""


def parse_outputs(data: Mapping[str, str] | None) -> dict[str, Any]:
    """Secret `data` → `{output name: value}`; strings stay strings, typed outputs are JSON-decoded."""
    raw = {key: _b64decode(key, value) for key, value in (data or {}).items()}
    outputs: dict[str, Any] = {}
    for key, value in raw.items():
        if key.endswith(TYPE_SUFFIX) and key[: -len(TYPE_SUFFIX)] in raw:
            continue
        if key + TYPE_SUFFIX in raw:
            try:
                outputs[key] = json.loads(value)
            except ValueError as exc:
                raise OutputsError(f"output {key!r} is typed but not JSON") from exc
        else:
            outputs[key] = value.decode("utf-8", errors="replace")
    return outputs


@dataclass(frozen=True, slots=True)
class InstanceOutputs:
    ip_address: str
    hostname: str


def instance_outputs(outputs: Mapping[str, Any], networks: Sequence[Network] = ()) -> InstanceOutputs | None:
    """The network facts of a VM, checked; None while an output is still missing or empty."""
    ip_address, hostname = outputs.get("ip_address"), outputs.get("hostname")
    if not ip_address or not hostname:
        return None
    if not isinstance(ip_address, str) or not isinstance(hostname, str):
        raise OutputsError("ip_address and hostname must be string outputs")
    return checked_outputs(ip_address, hostname, networks)


def checked_outputs(ip_address: str, hostname: str, networks: Sequence[Network] = ()) -> InstanceOutputs:
    """The canonical address and hostname, or InvalidOutputs saying which is wrong (values shown escaped)."""
    return InstanceOutputs(
        ip_address=checked_address(ip_address, networks), hostname=checked_hostname(hostname)
    )


def checked_address(value: str, networks: Sequence[Network] = ()) -> str:
    """An IP address (no IPv6 zone, which is free text), not loopback, unspecified or multicast, and
    inside one of `networks` when any are configured."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidOutputs(f"ip_address {_shown(value)} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise InvalidOutputs(f"ip_address {_shown(value)} carries an IPv6 zone")
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        raise InvalidOutputs(f"ip_address {address} is not a machine's address")
    if networks and not any(address in network for network in networks):
        allowed = ", ".join(str(network) for network in networks)
        raise InvalidOutputs(f"ip_address {address} is outside the instance networks ({allowed})")
    return str(address)


def checked_hostname(value: str) -> str:
    """A DNS name: dot-separated labels of letters, digits and inner hyphens, at most 253 characters."""
    name = value[:-1] if value.endswith(".") else value
    if not 0 < len(name) <= MAX_HOSTNAME or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidOutputs(f"hostname {_shown(value)} is not a DNS name")
    return name


def _shown(value: str) -> str:
    """A peer's string in a status message: escaped, and short."""
    return repr(value[:80] + ("…" if len(value) > 80 else ""))


def _b64decode(key: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OutputsError(f"secret key {key!r} is not base64") from exc
