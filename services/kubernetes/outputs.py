"""Read the outputs Secret tofu-controller writes (`spec.writeOutputsToSecret`).

Its writeOutput stores a string output as the raw string; any other output as its JSON value under
`<name>` plus the output's cty type, as JSON, under `<name>__type`. Secret values arrive base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

TYPE_SUFFIX: Final = "__type"
# RFC 1123 labels, at most 253 characters in all: what a VM's name can be, and nothing a peer could
# smuggle other text in (the hostname is shown to every reader with instance:read:network).
HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)


class OutputsError(ValueError):
    """The Secret does not hold what the module promised (bad encoding or wrong types)."""


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


def instance_outputs(outputs: Mapping[str, Any]) -> InstanceOutputs | None:
    """The network facts of a VM, or None while an output is still missing or empty."""
    ip_address, hostname = outputs.get("ip_address"), outputs.get("hostname")
    if not ip_address or not hostname:
        return None
    if not isinstance(ip_address, str) or not isinstance(hostname, str):
        raise OutputsError("ip_address and hostname must be string outputs")
    try:
        ipaddress.ip_address(ip_address)
    except ValueError:
        raise OutputsError(f"ip_address is not an IP address: {ip_address[:100]!r}") from None
    if not HOSTNAME.match(hostname):
        raise OutputsError(f"hostname is not a DNS name: {hostname[:100]!r}")
    return InstanceOutputs(ip_address=ip_address, hostname=hostname)


def _b64decode(key: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OutputsError(f"secret key {key!r} is not base64") from exc
