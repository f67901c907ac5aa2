"""Writes need a token the issuer still calls active, when introspection is configured (see
services/auth/introspection.py). Reads never wait for the issuer; a refused write is answered 401 (the
token is no longer active) or 503 (the issuer could not say) by gateway.graphql_http."""

from __future__ import annotations

from collections.abc import AsyncIterator

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from services.auth.introspection import IntrospectionUnavailable, TokenInactive

TOKEN_INACTIVE = "UNAUTHENTICATED"  # noqa: S105 (an error code)
ISSUER_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class ActiveTokenForWrites(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        confirm = getattr(context.context, "confirm_write", None)
        if (
            confirm is not None
            and context.operation_type is OperationType.MUTATION
            and context.result is None
        ):
            try:
                await confirm()
            except TokenInactive:
                context.result = _refused("the token is no longer active; sign in again", TOKEN_INACTIVE)
            except IntrospectionUnavailable:
                message = "the token issuer cannot confirm the token now; try again shortly"
                context.result = _refused(message, ISSUER_UNAVAILABLE)
        yield


def _refused(message: str, code: str) -> GraphQLExecutionResult:
    return GraphQLExecutionResult(data=None, errors=[GraphQLError(message, extensions={"code": code})])
