"""Post the signed Semaphore task hint to the OpenCSP gateway: POST {url}/webhooks/semaphore.

Body ``{"task_id": N}``, plus ``"security": {"hardening_index": 0-100, "warnings": n, "scanned_at":
unix seconds}`` when the Lynis audit ran (``OPENCSP_SECURITY``, JSON); headers ``X-OpenCSP-Timestamp``
(unix seconds) and ``X-OpenCSP-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``. Settings
come from the environment so that the secret never shows in a process list. Standard library only: it
runs with the Python that runs Ansible on the Semaphore runner.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request

SECURITY_FIELDS = ("hardening_index", "warnings", "scanned_at")


class InvalidSecurity(ValueError):
    pass


def security_summary(raw: str) -> dict[str, int] | None:
    """The hint's ``security`` object from ``OPENCSP_SECURITY``; None when it is empty.

    Exactly the three fields, as plain integers in range: the gateway stores what it is sent, so a
    malformed summary is left out (the hint still goes) rather than passed on."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidSecurity(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or set(value) != set(SECURITY_FIELDS):
        raise InvalidSecurity(f"needs exactly the fields {', '.join(SECURITY_FIELDS)}")
    for field in SECURITY_FIELDS:
        if not isinstance(value[field], int) or isinstance(value[field], bool) or value[field] < 0:
            raise InvalidSecurity(f"{field} must be a non-negative integer")
    if value["hardening_index"] > 100:
        raise InvalidSecurity("hardening_index must be at most 100")
    return {field: value[field] for field in SECURITY_FIELDS}


def signed_request(
    url: str, secret: str, task_id: int, now: int, security: dict[str, int] | None = None
) -> urllib.request.Request:
    payload: dict[str, object] = {"task_id": task_id}
    if security is not None:
        payload["security"] = security
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(now)
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return urllib.request.Request(  # noqa: S310 (main() admits http(s) URLs only)
        url.rstrip("/") + "/webhooks/semaphore",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-OpenCSP-Timestamp": timestamp,
            "X-OpenCSP-Signature": f"sha256={digest}",
        },
    )


def main() -> int:
    url = os.environ.get("OPENCSP_GATEWAY_URL", "").strip()
    secret = os.environ.get("OPENCSP_WEBHOOK_SECRET", "")
    raw_task_id = os.environ.get("OPENCSP_TASK_ID", "").strip()
    timeout = float(os.environ.get("OPENCSP_NOTIFY_TIMEOUT", "10"))
    if not url.startswith(("https://", "http://")):
        print("gateway_url is not set to an http(s) URL: no hint sent", file=sys.stderr)
        return 2
    if not secret:
        print("webhook_secret is not set: no hint sent", file=sys.stderr)
        return 2
    if not raw_task_id.isdigit() or int(raw_task_id) <= 0:
        print(f"no Semaphore task id ({raw_task_id!r}): no hint sent", file=sys.stderr)
        return 2
    try:
        security = security_summary(os.environ.get("OPENCSP_SECURITY", ""))
    except InvalidSecurity as exc:
        print(f"security summary left out of the hint: {exc}", file=sys.stderr)
        security = None
    request = signed_request(url, secret, int(raw_task_id), int(time.time()), security)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked above)
            print(f"gateway answered {response.status} for task {raw_task_id}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"gateway answered {exc.code} for task {raw_task_id}", file=sys.stderr)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        print(f"gateway unreachable: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
