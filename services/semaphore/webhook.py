"""Verification of the hint the Ansible playbook's last step posts to ``POST /webhooks/semaphore``.

Semaphore has no generic outbound webhook, so the playbook itself signs ``{"task_id": N}``:
``X-OpenCSP-Timestamp: <unix seconds>`` and ``X-OpenCSP-Signature: sha256=<hex>`` where the hex is
HMAC-SHA256 with the shared secret over ``f"{timestamp}.{body}"`` (the raw body bytes). The hint only
makes the gateway read the task at once; the task as Semaphore reports it stays the truth, so a
verified hint is never trusted for a status. The timestamp window limits replays.

Shell equivalent, for the playbook docs::

    ts=$(date +%s)
    sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

TIMESTAMP_HEADER = "X-OpenCSP-Timestamp"
SIGNATURE_HEADER = "X-OpenCSP-Signature"
DEFAULT_TOLERANCE_SECONDS = 300.0
MAX_BODY_BYTES = 4096

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookError(ValueError):
    """The hint is not acceptable; ``reason`` is a short machine-friendly word for logs and metrics."""

    reason = "invalid"


class WebhookMalformed(WebhookError):
    reason = "malformed"


class WebhookSignatureMismatch(WebhookError):
    reason = "bad_signature"


class WebhookStale(WebhookError):
    reason = "stale_timestamp"


@dataclass(frozen=True, slots=True)
class TaskHint:
    task_id: int


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``X-OpenCSP-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"sha256={_digest(secret, body, str(timestamp))}"


def signed_headers(secret: str | bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, body, ts)}


def verify_hint(
    secrets: str | bytes | Sequence[str | bytes],
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> TaskHint:
    """Check the signature and timestamp of a hint and return its task id, or raise a WebhookError.

    ``secrets`` may list several, so the secret can be rotated without dropping hints.
    Order of checks: shape, then signature, then time, so an unsigned caller learns nothing of the clock.
    An empty secret is a configuration error: plain ValueError, not WebhookError, so it is not a 4xx.
    """
    keys = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not keys or any(not key for key in keys):
        raise ValueError("webhook secret must not be empty")
    if timestamp is None or not _TIMESTAMP.fullmatch(timestamp.strip()):
        raise WebhookMalformed(f"missing or malformed {TIMESTAMP_HEADER}")
    match = _SIGNATURE.fullmatch(signature.strip()) if signature is not None else None
    if match is None:
        raise WebhookMalformed(f"missing or malformed {SIGNATURE_HEADER}")
    if len(body) > MAX_BODY_BYTES:
        raise WebhookMalformed("body too large")
    ts = timestamp.strip()
    given = match.group(1).lower()
    # Compare against every secret so the time taken does not tell which one matched.
    matched = [hmac.compare_digest(_digest(key, body, ts), given) for key in keys]
    if not any(matched):
        raise WebhookSignatureMismatch("signature does not match")
    current = time.time() if now is None else now
    if abs(current - int(ts)) > tolerance:
        raise WebhookStale("timestamp outside the accepted window")
    return TaskHint(task_id=_task_id(body))


def _digest(secret: str | bytes, body: bytes, timestamp: str) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _task_id(body: bytes) -> int:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookMalformed("body is not JSON") from exc
    task_id = payload.get("task_id") if isinstance(payload, dict) else None
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id <= 0:
        raise WebhookMalformed("body needs a positive integer task_id")
    return task_id
