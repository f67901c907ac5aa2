"""The one error a bad token produces, so callers map every rejection to a single 401."""

from __future__ import annotations


class InvalidToken(Exception):
    """The bearer token is not acceptable.

    `reason` is one short line safe to log and to show the client: it never echoes the token, key
    material or claim values, only which check failed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(InvalidToken):
    """The token could not be checked because the issuer's keys were never loaded.

    Still an `InvalidToken` (the request is not authenticated), but a caller may answer 503 instead
    of 401 since the fault is ours, not the client's.
    """
