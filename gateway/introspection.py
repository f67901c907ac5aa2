"""Recognising a document that only introspects, for deployments that make introspection public."""

from __future__ import annotations

from functools import lru_cache

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    parse,
)


@lru_cache(maxsize=64)
def is_introspection_only(query: str) -> bool:
    """True when every operation is a query whose top-level fields are all `__schema`, `__type` or
    `__typename` (directly or through fragments); anything else needs a token."""
    try:
        document = parse(query)
    except GraphQLError:
        return False
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if not operations:
        return False
    for operation in operations:
        if operation.operation is not OperationType.QUERY:
            return False
        pending = list(operation.selection_set.selections)
        seen: set[str] = set()
        while pending:
            selection = pending.pop()
            if isinstance(selection, FieldNode):
                if not selection.name.value.startswith("__"):
                    return False
                continue
            name = getattr(getattr(selection, "name", None), "value", None)
            if name is not None:  # a fragment spread
                fragment = fragments.get(name)
                if fragment is None:
                    return False
                if name not in seen:
                    seen.add(name)
                    pending.extend(fragment.selection_set.selections)
            else:  # an inline fragment
                pending.extend(selection.selection_set.selections)  # type: ignore[attr-defined]
    return True
