"""Verification of the hint the Ansible playbook's last step posts to ``POST /webhooks/semaphore``.

Semaphore has no generic outbound webhook, so the playbook itself signs ``{"task_id": N}``, plus
``"security": {"hardening_index": 0-100, "warnings": n, "scanned_at": <unix seconds>}`` when its Lynis
audit ran:
``X-OpenCSP-Timestamp: <unix seconds>`` and ``X-OpenCSP-Signature: sha256=<hex>`` where the hex is
HMAC-SHA256 with the shared secret over ``f"{timestamp}.{body}"`` (the raw body bytes). The hint only
makes the gateway read the task at once; the task as Semaphore reports it stays the truth, so a
verified hint is never trusted for a status. The timestamp window limits replays. The security summary
has no other source, so it is checked strictly: one bad field and the whole hint is refused.

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
from datetime import UTC, datetime
from typing import TypeGuard

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


class HintInvalid(WebhookMalformed):
    """Signed and in time, but the body is not a hint: the sender is ours and has a bug (a 400, not a 401)."""

    reason = "invalid_body"


MAX_SCAN_AGE_SECONDS = 7 * 86_400  # a summary older than this is not about the task that sent it
MAX_WARNINGS = 100_000
_SECURITY_FIELDS = frozenset({"hardening_index", "warnings", "scanned_at"})


@dataclass(frozen=True, slots=True)
class SecuritySummary:
    """What the playbook's Lynis audit found; the raw report stays in the task's output."""

    hardening_index: int
    warnings: int
    scanned_at: datetime


@dataclass(frozen=True, slots=True)
class TaskHint:
    task_id: int
    security: SecuritySummary | None = None


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
    return _parse(body, now=current, tolerance=tolerance)


def _digest(secret: str | bytes, body: bytes, timestamp: str) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _parse(body: bytes, *, now: float, tolerance: float) -> TaskHint:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise HintInvalid("body is not JSON") from exc
    if not isinstance(payload, dict):
        raise HintInvalid("body needs a positive integer task_id")
    task_id = payload.get("task_id")
    if not _is_int(task_id) or task_id <= 0:
        raise HintInvalid("body needs a positive integer task_id")
    if "security" not in payload:
        return TaskHint(task_id=task_id)
    return TaskHint(task_id=task_id, security=_security(payload["security"], now=now, tolerance=tolerance))


def _security(value: object, *, now: float, tolerance: float) -> SecuritySummary:
    if not isinstance(value, dict) or set(value) != _SECURITY_FIELDS:
        raise HintInvalid(f"security must be an object with exactly {', '.join(sorted(_SECURITY_FIELDS))}")
    index, warnings, scanned_at = value["hardening_index"], value["warnings"], value["scanned_at"]
    if not _is_int(index) or not 0 <= index <= 100:
        raise HintInvalid("security.hardening_index must be an integer from 0 to 100")
    if not _is_int(warnings) or not 0 <= warnings <= MAX_WARNINGS:
        raise HintInvalid(f"security.warnings must be an integer from 0 to {MAX_WARNINGS}")
    if not _is_int(scanned_at):
        raise HintInvalid("security.scanned_at must be unix seconds (an integer)")
    if scanned_at > now + tolerance:
        raise HintInvalid("security.scanned_at lies in the future")
    if scanned_at < now - MAX_SCAN_AGE_SECONDS:
        raise HintInvalid("security.scanned_at is too old to belong to this task")
    return SecuritySummary(
        hardening_index=index, warnings=warnings, scanned_at=datetime.fromtimestamp(scanned_at, UTC)
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
