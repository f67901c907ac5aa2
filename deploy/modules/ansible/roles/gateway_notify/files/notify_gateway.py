"""Post the signed Semaphore task hint to the OpenCSP gateway: POST {url}/webhooks/semaphore.

Body ``{"task_id": N}``; headers ``X-OpenCSP-Timestamp`` (unix seconds) and
``X-OpenCSP-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``. Settings come from the
environment so that the secret never shows in a process list. Standard library only: it runs with
the Python that runs Ansible on the Semaphore runner.
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


def signed_request(url: str, secret: str, task_id: int, now: int) -> urllib.request.Request:
    body = json.dumps({"task_id": task_id}, separators=(",", ":")).encode()
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
    request = signed_request(url, secret, int(raw_task_id), int(time.time()))
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
