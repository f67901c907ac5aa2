"""Every error the API shows to clients, each with a stable `extensions.code`; everything else is masked.

The one home of the codes and of the constructors: resolvers, field rules, document limits, schema
discovery, subscription sharing and the HTTP transport all build their client-facing errors here, so a
code is spelled once and a client can branch on it.
"""

from __future__ import annotations

from graphql import GraphQLError, Node
from strawberry.schema.exceptions import InvalidOperationTypeError

# Execution errors (with a path) and request errors (without one) of GraphQL.
BAD_USER_INPUT = "BAD_USER_INPUT"
FORBIDDEN = "FORBIDDEN"
SUBSCRIPTION_CLOSED = "SUBSCRIPTION_CLOSED"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL_SERVER_ERROR"
DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"
TOO_MANY_SELECTIONS = "TOO_MANY_SELECTIONS"
TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES"
# Trusted documents (gateway/documents.py) and demand control (schema/cost.py, schema/budget.py).
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
DOCUMENT_NOT_TRUSTED = "DOCUMENT_NOT_TRUSTED"
COST_LIMIT_EXCEEDED = "COST_LIMIT_EXCEEDED"
RATE_LIMITED = "RATE_LIMITED"

# Transport errors: the HTTP status of a request refused before GraphQL ran, and the code its body carries.
TRANSPORT_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: INTERNAL,
    503: "SERVICE_UNAVAILABLE",
}
BAD_REQUEST = TRANSPORT_CODES[400]


class PublicError(GraphQLError):
    """An error whose message is safe to show; its code tells clients what kind it is."""

    code = INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": self.code})


class BadUserInput(PublicError):
    code = BAD_USER_INPUT


class Unavailable(PublicError):
    """A peer (the cluster, Semaphore) did not answer an operator's view of it."""

    code = UNAVAILABLE


class SubscriptionEnded(PublicError):
    """The gateway ended a subscription (the subscriber fell behind, or its listener lost events)."""

    code = SUBSCRIPTION_CLOSED


class Forbidden(PublicError):
    """A field or operation that needs a permission the caller lacks; null at its path."""

    code = FORBIDDEN

    def __init__(self, permission: str) -> None:
        super().__init__(f"requires the permission {permission}")
        self.extensions = {"code": FORBIDDEN, "permission": permission}


def forbidden_at(permission: str, response_key: str) -> GraphQLError:
    """`Forbidden` for a root field refused before execution (no resolver ran to raise it)."""
    return GraphQLError(
        f"requires the permission {permission}",
        path=[response_key],
        extensions={"code": FORBIDDEN, "permission": permission},
    )


def subscription_closed(reason: str) -> GraphQLError:
    """What a member of a shared subscription gets when it is dropped: the hub's code and words."""
    return GraphQLError(reason, extensions={"code": SUBSCRIPTION_CLOSED})


def document_too_large(max_bytes: int) -> GraphQLError:
    return GraphQLError(
        f"The document is larger than {max_bytes} bytes.", extensions={"code": DOCUMENT_TOO_LARGE}
    )


def too_many_selections(max_selections: int) -> GraphQLError:
    return GraphQLError(
        f"The document has more than {max_selections} field selections"
        " (a fragment's fields count wherever it is spread).",
        extensions={"code": TOO_MANY_SELECTIONS},
    )


def too_many_field_pairs(max_selections: int) -> GraphQLError:
    return GraphQLError(
        f"The document repeats fields too often: more than {max_selections} pairs of"
        " same-named fields to compare.",
        extensions={"code": TOO_MANY_SELECTIONS},
    )


def too_many_directives(max_directives: int) -> GraphQLError:
    return GraphQLError(
        f"The document has more than {max_directives} directives.", extensions={"code": TOO_MANY_DIRECTIVES}
    )


def persisted_query_not_found() -> GraphQLError:
    """Apollo's code and message, so Apollo Client's persisted-query link retries with the text."""
    return GraphQLError("PersistedQueryNotFound", extensions={"code": PERSISTED_QUERY_NOT_FOUND})


def document_not_trusted(named: bool) -> GraphQLError:
    what = "No trusted document has this id." if named else "Only trusted documents are accepted."
    return GraphQLError(
        f"{what} Send the id of a document of the front end's manifest.",
        extensions={"code": DOCUMENT_NOT_TRUSTED},
    )


def cost_limit_exceeded(estimate: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"The operation's estimated cost {estimate} is over the limit of {limit}.",
        extensions={"code": COST_LIMIT_EXCEEDED, "cost": {"estimated": estimate, "limit": limit}},
    )


def rate_limited(retry_after: int, estimate: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"Your budget of operation cost per minute is spent; try again in {retry_after} s.",
        extensions={
            "code": RATE_LIMITED,
            "retryAfter": retry_after,
            "cost": {"estimated": estimate, "limit": limit},
        },
    )


def unknown_field(name: str, type_name: str, node: Node) -> GraphQLError:
    """The very message graphql-core's FieldsOnCorrectTypeRule gives an unknown field without suggestions
    (schema discovery answers hidden introspection fields with it)."""
    return GraphQLError(f"Cannot query field '{name}' on type '{type_name}'.", node)


def is_public(error: GraphQLError) -> bool:
    """Unmask parse/validation errors (no original error) and our own; mask every other exception."""
    original = error.original_error
    # An operation type the transport does not carry (a query over legacy graphql-ws) is the client's mistake.
    return original is None or isinstance(original, GraphQLError | InvalidOperationTypeError)


def is_forbidden(error: GraphQLError) -> bool:
    return (error.extensions or {}).get("code") == FORBIDDEN
