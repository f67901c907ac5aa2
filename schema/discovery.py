"""Schema discovery is a permission: introspection and "Did you mean …" hints need `schema:introspect`.

A tenant without it learns the schema only from what it already knows: `__schema` and `__type` are
answered exactly as an unknown field is (`Cannot query field '__schema' on type 'Query'.`), and no
error carries a suggestion, so a typo cannot be used to enumerate fields, arguments, types or enum
values. `__typename` stays open: clients need it and it names only types the caller already selected.

How it holds on every transport (HTTP GET/POST, both websocket protocols):
- `SchemaDiscovery` (an extension) adds `WITHOUT_DISCOVERY` to the operation's validation rules for a
  caller without the permission. Validation caches (Strawberry's `ValidationCache`) key on the rules, so
  a cached result is only ever reused for callers on the same side of the permission.
- `HideSuggestions`, one of those rules, switches on graphql-core's own `hide_suggestions` for the whole
  validation run: the rules then neither compute nor print suggestions.
- `DiscoveryAwareExecution` does the same for execution (variable and argument coercion, enum values).
- `strip_suggestions` removes the one hint graphql-core prints regardless (`ScalarLeafsRule`'s
  "Did you mean 'field { ... }'?") and anything a future rule forgets, from copies of the errors, never
  from the (cached, shared) originals. The extension must run after the validation cache for this.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from graphql import ASTValidationRule, FieldNode, GraphQLError, ValidationContext, ValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document

from schema.context import Context
from schema.errors import unknown_field
from services.auth.permissions import SCHEMA_INTROSPECT
from services.auth.principal import Principal

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def may_discover(principal: Principal | None, *, schema_public: bool = False) -> bool:
    """Whether the caller may introspect and read suggestions: the deployment made the schema public
    (`OPENCSP_PUBLIC_INTROSPECTION`; hiding it from callers with a token would then protect nothing), or
    the caller holds `schema:introspect` in its own org."""
    if schema_public:
        return True
    return principal is not None and principal.has(SCHEMA_INTROSPECT)


def may_discover_in(context: object) -> bool:
    """`may_discover` for an operation's context; anything but our `Context` may not."""
    if not isinstance(context, Context):
        return False
    return may_discover(context.principal, schema_public=context.schema_public)


class HideSuggestions(ASTValidationRule):
    """Turns on graphql-core's native `hide_suggestions` for the validation run it is part of.

    `validate()` builds every rule before visiting the document, and rules read the flag while visiting,
    so setting it here covers all of them. graphql-core exposes the flag read-only; `tests/test_discovery.py`
    fails if the attribute behind it changes.
    """

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        context._hide_suggestions = True  # no public setter; see the docstring


class NoSchemaIntrospection(ValidationRule):
    """`__schema` and `__type` on the query root are answered as unknown fields."""

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        name = node.name.value
        if name not in INTROSPECTION_FIELDS:
            return
        query_type = self.context.schema.query_type
        if query_type is not None and self.context.get_parent_type() is query_type:
            self.report_error(unknown_field(name, str(query_type), node))


WITHOUT_DISCOVERY: tuple[type[ASTValidationRule], ...] = (HideSuggestions, NoSchemaIntrospection)


def strip_suggestion(message: str) -> str:
    """The message without its hints. A hint lists schema names (never a `?`) and ends with `?`."""
    return _SUGGESTION.sub("", message)


def strip_suggestions(errors: list[GraphQLError]) -> list[GraphQLError]:
    """Copies of `errors` without suggestions; the originals may be shared through a cache."""
    stripped: list[GraphQLError] = []
    for error in errors:
        message = strip_suggestion(error.message)
        if message == error.message:
            stripped.append(error)
            continue
        stripped.append(
            GraphQLError(
                message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                original_error=error.original_error,
                extensions=error.extensions,
            )
        )
    return stripped


class SchemaDiscovery(SchemaExtension):
    """Applies the rule per operation; list it after the validation cache (see the module docstring)."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        if not may_discover_in(context.context):
            context.validation_rules = (*context.validation_rules, *WITHOUT_DISCOVERY)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if not may_discover_in(context.context):
            if context.pre_execution_errors is None and context.graphql_document is not None:
                # No validation cache ran before us: validate here, so the errors can be stripped
                # before Strawberry answers with them.
                context.pre_execution_errors = validate_document(
                    context.schema._schema,  # as Strawberry's ValidationCache reads it
                    context.graphql_document,
                    context.validation_rules,
                )
            if context.pre_execution_errors:
                context.pre_execution_errors = strip_suggestions(context.pre_execution_errors)
        yield


class DiscoveryAwareExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, hiding suggestions from callers who may not discover the schema."""

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        context = kwargs["context_value"] if "context_value" in kwargs else args[3] if len(args) > 3 else None
        if not may_discover_in(context):
            kwargs["hide_suggestions"] = True
        return super().build(*args, **kwargs)
