"""Parsing and validation as the gateway runs them: cached by bytes, bounded before validation, and
answering a flood of one mistake with one error."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from graphql import DocumentNode, GraphQLError
from graphql.validation import ASTValidationRule, UniqueDirectivesPerLocationRule, ValidationContext
from strawberry.extensions import SchemaExtension

from schema.document_cache import ByteBoundedCache, digest, parse_cached, parse_options_key
from schema.document_cost import measure
from schema.errors import too_many_directives, too_many_field_pairs, too_many_selections

# A validation pass is remembered as a key and a flag; a refused document is not remembered (its errors
# would hold the whole document). 1 MiB is some 5,000 documents.
VALIDATED_MAX_BYTES = 1024 * 1024
# The key's own objects: the digest and the tuple (the schema and the interned rules are shared).
_KEY_BYTES = 140


class UniqueDirectivesOnce(UniqueDirectivesPerLocationRule):
    """Repeating a directive at one location is one mistake however often it is made: one error."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.reported = False

    def report_error(self, error: GraphQLError) -> None:
        if not self.reported:
            self.reported = True
            super().report_error(error)


@functools.lru_cache(maxsize=64)
def _rules(
    rules: tuple[type[ASTValidationRule], ...],
) -> tuple[type[ASTValidationRule], ...]:
    """Interned: every key of the validation cache shares one tuple per set of rules."""
    return tuple(UniqueDirectivesOnce if r is UniqueDirectivesPerLocationRule else r for r in rules)


class CachedParse(SchemaExtension):
    """Strawberry's ParserCache, but through the shared byte-bounded cache (`schema.document_cache`)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query:
            context.graphql_document = parse_cached(context.query, **context.parse_options)
        yield


class CheckedValidation(SchemaExtension):
    """Before validation: refuse a document over the selection or directive limits with one error;
    skip validation when this schema has passed the same document with the same rules before."""

    def __init__(self, max_selections: int, max_directives: int, passed: ByteBoundedCache[bool]) -> None:
        self.max_selections = max_selections
        self.max_directives = max_directives
        self.passed = passed

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is None or context.pre_execution_errors is not None or not context.query:
            yield
            return
        context.validation_rules = _rules(context.validation_rules)
        # The result depends on the text (and how it was parsed), the schema and the rules; nothing else.
        key = (
            digest(context.query, parse_options_key(context.parse_options)),
            context.schema._schema,
            context.validation_rules,
        )
        if self.passed.get(key):
            context.pre_execution_errors = []
            yield
            return
        error = self._over_limits(document)
        if error is not None:
            context.pre_execution_errors = [error]
            yield
            return
        yield
        if context.pre_execution_errors == []:
            self.passed.put(key, True, _KEY_BYTES)

    def _over_limits(self, document: DocumentNode) -> GraphQLError | None:
        cost = measure(document, self.max_selections)
        if cost.selections > self.max_selections:
            return too_many_selections(self.max_selections)
        if cost.pairs > self.max_selections:
            return too_many_field_pairs(self.max_selections)
        if cost.directives > self.max_directives:
            return too_many_directives(self.max_directives)
        return None
