"""Errors the API shows to clients, each with a stable `extensions.code`; everything else is masked."""

from __future__ import annotations

from graphql import GraphQLError
from strawberry.schema.exceptions import InvalidOperationTypeError

BAD_USER_INPUT = "BAD_USER_INPUT"
FORBIDDEN = "FORBIDDEN"
SUBSCRIPTION_CLOSED = "SUBSCRIPTION_CLOSED"
INTERNAL = "INTERNAL_SERVER_ERROR"


class PublicError(GraphQLError):
    """An error whose message is safe to show; its code tells clients what kind it is."""

    code = INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": self.code})


class BadUserInput(PublicError):
    code = BAD_USER_INPUT


def is_public(error: GraphQLError) -> bool:
    """Unmask parse/validation errors (no original error) and our own; mask every other exception."""
    original = error.original_error
    # An operation type the transport does not carry (a query over legacy graphql-ws) is the client's mistake.
    return original is None or isinstance(original, GraphQLError | InvalidOperationTypeError)
