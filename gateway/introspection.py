"""Recognising a document that only introspects, for deployments that make introspection public."""

from __future__ import annotations

from graphql import GraphQLError, OperationDefinitionNode, OperationType

from schema.document_cache import parse_cached
from schema.permissions import root_fields


def is_introspection_only(query: str, max_tokens: int) -> bool:
    """True when every operation is a query whose top-level fields are all `__schema`, `__type` or
    `__typename` (directly or through fragments); anything else needs a token."""
    try:
        document = parse_cached(query, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return bool(operations) and all(
        operation.operation is OperationType.QUERY
        and all(field.name.value.startswith("__") for field in root_fields(operation, document))
        for operation in operations
    )
