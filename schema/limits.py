"""Limits that keep one document from costing the whole process, on HTTP and websockets alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from graphql import ASTValidationRule, DocumentNode, GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.extensions.query_depth_limiter import IgnoreContext

from schema.document_cache import ByteBoundedCache
from schema.document_cost import measure
from schema.errors import document_too_large, is_public
from schema.validation import VALIDATED_MAX_BYTES, CachedParse, CheckedValidation


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_query_bytes: int = 65_536
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 4_000
    max_selections: int = 500
    max_directives: int = 50


class MaxDocumentSize(SchemaExtension):
    """Refuse a document longer than the limit before the parser reads it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def on_parse(self) -> Iterator[None]:
        query = self.execution_context.query or ""
        # Each character is at most 4 bytes: only measure when the cheap bound is inconclusive.
        if len(query) * 4 > self.max_bytes and len(query.encode()) > self.max_bytes:
            raise document_too_large(self.max_bytes)
        yield


def _is_introspection(context: IgnoreContext) -> bool:
    # Introspection nests `ofType` deeply by design; the token limit bounds it instead.
    return context.field_name.startswith("__")


def _mask(error: GraphQLError) -> bool:
    return not is_public(error)


def limit_rules(limits: DocumentLimits) -> list[type[ASTValidationRule]]:
    """The depth and alias limits as validation rules, beside graphql-core's own."""
    return [
        *QueryDepthLimiter(max_depth=limits.max_depth, should_ignore=_is_introspection).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]


def within_limits(document: DocumentNode, limits: DocumentLimits) -> bool:
    """The selection, field-pair and directive limits `CheckedValidation` applies, as a yes or no."""
    cost = measure(document, limits.max_selections)
    return (
        cost.selections <= limits.max_selections
        and cost.pairs <= limits.max_selections
        and cost.directives <= limits.max_directives
    )


def extensions(limits: DocumentLimits) -> list[Callable[[], SchemaExtension]]:
    """Factories: Strawberry builds fresh extensions per operation; the parse/validation caches are shared
    (`schema.document_cache`: bounded by bytes; validation passes are kept per schema built).

    The depth and alias limiters make a new validation rule class each time one is built; built per
    operation, they would change the validation cache's key every time. So their rules are made once.
    """
    passed: ByteBoundedCache[bool] = ByteBoundedCache(VALIDATED_MAX_BYTES, VALIDATED_MAX_BYTES)
    rules = limit_rules(limits)
    return [
        lambda: MaxDocumentSize(limits.max_query_bytes),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        CachedParse,
        lambda: AddValidationRules(rules),
        lambda: CheckedValidation(limits.max_selections, limits.max_directives, passed),
        lambda: MaskErrors(should_mask_error=_mask, error_message="Internal server error."),
    ]
