"""How a call to the Kubernetes API failed, one class per failure a caller treats differently.

Standard library only (in the style of kopf's `_cogs/clients/errors.py`): the domain and dev mode's
simulated cluster raise and catch these without loading `kubernetes_asyncio`, and callers catch a class
instead of comparing status numbers. `status` stays on every error for messages and logs.
"""

from __future__ import annotations


class ClusterError(Exception):
    """A call to the Kubernetes API failed; `status` is the HTTP status, None when none arrived."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterUnavailable(ClusterError):
    """No answer, or 429/5xx: the same request may succeed later."""


class ClusterRejected(ClusterError):
    """A 4xx answer: the request as sent will not succeed by repeating it."""


class ClusterInvalid(ClusterRejected):
    """400 or 422: the request or the object is malformed or fails validation."""


class ClusterUnauthorized(ClusterRejected):
    """401: the API server did not accept the gateway's credentials."""


class ClusterForbidden(ClusterRejected):
    """403: the gateway's service account may not do this (RBAC, admission)."""


class ClusterNotFound(ClusterRejected):
    """404: the object (or its namespace) does not exist."""


class ClusterConflict(ClusterRejected):
    """409: the name is taken, or the object changed since it was read."""


class TerraformConflict(ClusterConflict):
    """The object name is taken by an object of another instance."""


class ClusterGone(ClusterRejected):
    """410: a watch's resourceVersion is older than the API server keeps; list again."""


_BY_STATUS: dict[int, type[ClusterRejected]] = {
    400: ClusterInvalid,
    401: ClusterUnauthorized,
    403: ClusterForbidden,
    404: ClusterNotFound,
    409: ClusterConflict,
    410: ClusterGone,
    422: ClusterInvalid,
}


def error_for(message: str, status: int | None) -> ClusterError:
    """The error of an API answer with HTTP `status` (None: no answer arrived)."""
    if status is None or status == 429 or status >= 500:
        return ClusterUnavailable(message, status=status)
    if 400 <= status < 500:
        return _BY_STATUS.get(status, ClusterRejected)(message, status=status)
    return ClusterError(message, status=status)
