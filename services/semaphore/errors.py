"""How a call to Semaphore failed, one class per failure a caller treats differently.

Standard library only: the domain and dev mode's simulated Semaphore raise and catch these without
loading the HTTP client.
"""

from __future__ import annotations


class SemaphoreError(Exception):
    """Any failure talking to Semaphore."""


class SemaphoreUnavailable(SemaphoreError):
    """Semaphore did not answer usefully (5xx, timeouts, connection errors) after every retry."""


class SemaphoreRejected(SemaphoreError):
    """Semaphore answered 4xx: retrying the same request will not help."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"Semaphore answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class SemaphoreNotFound(SemaphoreRejected):
    """404: the project or task does not exist (or the token may not see it)."""


class SemaphoreProtocolError(SemaphoreError):
    """Semaphore answered 2xx with a body that does not follow its API."""
