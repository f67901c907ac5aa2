"""Recognising a document that only introspects, for deployments that make introspection public."""

from __future__ import annotations

from functools import lru_cache

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

from schema.permissions import root_fields


@lru_cache(maxsize=64)
def is_introspection_only(query: str, max_tokens: int) -> bool:
    """True when every operation is a query whose top-level fields are all `__schema`, `__type` or
    `__typename` (directly or through fragments); anything else needs a token."""
    try:
        document = parse(query, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return bool(operations) and all(
        operation.operation is OperationType.QUERY
        and all(field.name.value.startswith("__") for field in root_fields(operation, document))
        for operation in operations
    )
