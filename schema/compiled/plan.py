"""A query's selection compiled once into plan nodes, and the runner that walks them.

Field collection (fragments, `@include`/`@skip`, merging by response key) is graphql-core's own
`collect_fields`, run once at compile time for one set of directive-variable values; resolvers get the
very `info` and arguments graphql-core's executor would build (the executor is built per request, as
`schema.execute` builds it); what the plan saves is the per-field machinery for plain attribute fields
(Strawberry's basic fields: `getattr`, plus the `@requires` check) and repeated collection.

The runner mirrors graphql-core's execution order (sync fields depth first, awaitables gathered per
object and per list in the same places), so errors land in the same order. It handles success and
`FORBIDDEN` (a public error raised synchronously by the field guard on a nullable field); any other
error raises `Fallback`, and the caller answers the request through graphql-core instead, so masked
errors and non-null propagation are exactly graphql-core's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from inspect import isawaitable
from typing import Any
from uuid import UUID

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLString,
    located_error,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import FieldDetails, collect_fields, collect_subfields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, gather_with_cancel
from graphql.type import is_leaf_type, is_non_null_type, is_object_type
from graphql.type.scalars import serialize_id
from strawberry.schema.types.base_scalars import isoformat

from schema.errors import Forbidden
from schema.permissions import DEFINITION, permission_of

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_OTHER, _STRING, _INT, _ENUM, _ID, _DATETIME = 0, 1, 2, 3, 4, 5
# Completed values that are never awaitable: skips `inspect.isawaitable` for most fields.
_PLAIN = frozenset({dict, list, str, int, bool, float})


class Fallback(Exception):
    """The plan met something it does not answer itself; run the request through graphql-core."""


class Uncompilable(Exception):
    """The document uses what the compiler does not cover (abstract types, introspection, …)."""


# --- Plan nodes ------------------------------------------------------------------------------------------

# How a field's value is completed: ("nonnull", inner) | ("list", inner) | ("leaf", type) | ("object", plan)
Completion = tuple[str, Any]


@dataclass(slots=True)
class FieldPlan:
    key: str
    name: str
    details: list[FieldDetails]
    field: GraphQLField | None  # None: __typename
    attribute: str | None  # a basic field: read this attribute
    permission: str | None  # the field's @requires, checked before the attribute is read
    completion: Completion | None
    nullable: bool
    # A basic field of a leaf type: (attribute, scalar kind, non-null, leaf type, enum outputs), read in
    # the object's loop. Enum outputs: the type's output per member seen (Strawberry's coerce_output_value
    # scans the enum's values every time); only Python enum members are kept, so a few per field.
    leaf: tuple[str, int, bool, GraphQLLeafType, dict[Enum, Any]] | None = None
    # A resolver field of an object type: what the plan reads below it (`Reads`), handed to the resolver
    # on its info (`PlannedInfo`).
    reads: Reads | None = None


# A field of a flat object (`ObjectPlan.flat`): (response key, attribute or None for __typename, scalar
# kind, non-null, leaf type, enum outputs, permission, the field's plan).
FlatField = tuple[str, str | None, int, bool, GraphQLLeafType | None, dict[Enum, Any], str | None, FieldPlan]


@dataclass(slots=True)
class ObjectPlan:
    type: GraphQLObjectType
    fields: list[FieldPlan]
    # When every field is a basic leaf field or __typename: nothing to resolve or await, so an object
    # (say each of a page's 100 rows) is read in one tight loop (`Run.flat`).
    flat: tuple[FlatField, ...] | None = None


# Below a resolver field: for each object type the plan completes there, the Python names of the fields
# it selects on that type (basic and resolver fields alike; `__typename` reads nothing).
Reads = Mapping[str, frozenset[str]]


class PlannedInfo:
    """Mixed into the executor's resolve info (a named tuple: Strawberry's adds a field to
    graphql-core's), adding `reads`: what the plan reads from what this resolver returns.

    A resolver may use it to fetch less (a page of only the columns read: `resolvers.instances`), as long
    as the objects it returns answer every name in `reads` of their type as the full objects would. Only
    the plan passes it, and a plan never reads more than it says; graphql-core's runs (fallbacks
    included) pass a plain info, so the resolver returns full objects there."""

    __slots__ = ()
    reads: Reads


_PLANNED: dict[type[Any], type[Any]] = {}


def _planned(info: GraphQLResolveInfo[Any], reads: Reads) -> GraphQLResolveInfo[Any]:
    kind = type(info)
    planned = _PLANNED.get(kind)
    if planned is None:
        planned = _PLANNED[kind] = type(f"Planned{kind.__name__}", (kind, PlannedInfo), {})
    copy: Any = planned(*info)
    copy.reads = reads
    return copy  # type: ignore[no-any-return]


def planned_reads(info: Any) -> Reads | None:
    """What the compiled plan reads below the field being resolved; None when graphql-core resolves it.
    `info`: graphql-core's or Strawberry's."""
    raw = getattr(info, "_raw_info", info)  # Strawberry's Info keeps graphql-core's as `_raw_info`
    return raw.reads if isinstance(raw, PlannedInfo) else None


def compile_query(executor: Executor[Any]) -> ObjectPlan:
    """The operation's plan for the variable values `executor` holds; raises Uncompilable."""
    schema = executor.schema
    root = schema.query_type
    if root is None or executor.operation.operation.value != "query":
        raise Uncompilable("only queries are compiled")
    grouped, defers, _ = collect_fields(
        schema,
        executor.fragments,
        executor.variable_values,
        root,
        executor.operation,
        executor.hide_suggestions,
    )
    if defers:
        raise Uncompilable("@defer")
    return _object(executor, root, grouped)


def _object(executor: Executor[Any], type_: GraphQLObjectType, grouped: Mapping[str, Any]) -> ObjectPlan:
    if type_.is_type_of is not None:
        raise Uncompilable("is_type_of needs a resolve info")
    fields: list[FieldPlan] = []
    for key, details in grouped.items():
        details = list(details)
        if any(d.fragment_variable_values is not None or d.defer_usage is not None for d in details):
            raise Uncompilable("fragment variables or @defer")
        name = details[0].node.name.value
        if name == "__typename":
            fields.append(FieldPlan(key, name, details, None, None, None, None, False))
            continue
        if name.startswith("__"):
            raise Uncompilable("introspection")
        field = type_.fields.get(name)
        if field is None:
            raise Uncompilable(f"unknown field {name}")
        definition = (field.extensions or {}).get(DEFINITION)
        basic = (
            definition is not None
            and definition.is_basic_field
            and not field.args
            and not details[0].node.arguments
            and (getattr(field.resolve, "_is_default", False) or permission_of(field) is not None)
        )
        completion = _completion(executor, field.type, details)
        leaf: tuple[str, int, bool, GraphQLLeafType, dict[Enum, Any]] | None = None
        if basic and definition is not None:
            nonnull = completion[0] == "nonnull"
            kind, leaf_type = completion[1] if nonnull else completion
            if kind == "leaf":
                leaf = (definition.python_name, _scalar_kind(leaf_type), nonnull, leaf_type, {})
        fields.append(
            FieldPlan(
                key,
                name,
                details,
                field,
                definition.python_name if basic and definition is not None else None,
                permission_of(field),
                completion,
                not is_non_null_type(field.type),
                leaf,
                None if basic else _reads(completion),
            )
        )
    flat: list[FlatField] = []
    for plan in fields:
        if plan.field is None:
            flat.append((plan.key, None, _OTHER, True, None, {}, None, plan))
        elif plan.leaf is not None:
            attribute, kind, nonnull, leaf_type, names = plan.leaf
            flat.append((plan.key, attribute, kind, nonnull, leaf_type, names, plan.permission, plan))
    return ObjectPlan(type_, fields, tuple(flat) if len(flat) == len(fields) else None)


def _reads(completion: Completion) -> Reads | None:
    """What a plan reads below a field completed by `completion`; None below a leaf type."""
    found: dict[str, set[str]] = {}

    def walk(completion: Completion) -> None:
        kind, inner = completion
        if kind in ("nonnull", "list"):
            walk(inner)
        elif kind == "object":
            names = found.setdefault(inner.type.name, set())
            for field in inner.fields:
                if field.field is None:
                    continue  # __typename
                definition = (field.field.extensions or {}).get(DEFINITION)
                names.add(definition.python_name if definition is not None else field.name)
                assert field.completion is not None
                walk(field.completion)

    walk(completion)
    return {name: frozenset(names) for name, names in found.items()} if found else None


def _completion(executor: Executor[Any], type_: GraphQLOutputType, details: list[FieldDetails]) -> Completion:
    if isinstance(type_, GraphQLNonNull):
        return ("nonnull", _completion(executor, type_.of_type, details))
    if isinstance(type_, GraphQLList):
        return ("list", _completion(executor, type_.of_type, details))
    if is_leaf_type(type_):
        return ("leaf", type_)
    if is_object_type(type_):
        assert isinstance(type_, GraphQLObjectType)
        grouped, defers, _ = collect_subfields(
            executor.schema,
            executor.fragments,
            executor.variable_values,
            executor.operation,
            type_,
            details,
            executor.hide_suggestions,
        )
        if defers:
            raise Uncompilable("@defer")
        return ("object", _object(executor, type_, grouped))
    raise Uncompilable(f"abstract type {type_}")


# --- Running a plan --------------------------------------------------------------------------------------


class Run:
    """One execution of a plan; `errors` as graphql-core would collect them (only FORBIDDEN here)."""

    def __init__(self, executor: Executor[Any], context: Any) -> None:
        self.executor = executor
        self.context = context
        self.principal = getattr(context, "principal", None)
        self.errors: list[GraphQLError] = []
        self.decided: dict[tuple[str, str | None], bool] = {}

    def fields(self, plan: ObjectPlan, source: Any, path: Path | None) -> Any:
        if plan.flat is not None:
            return self.flat(plan, plan.flat, source, path, None)
        results: dict[str, Any] = {}
        awaitable: list[str] = []
        type_name = plan.type.name
        try:
            for field in plan.fields:
                leaf = field.leaf
                if leaf is not None and (field.permission is None or self.allowed(field.permission, source)):
                    # Strawberry's basic field (getattr), then graphql-core's leaf completion.
                    value = getattr(source, leaf[0])
                    kind = leaf[1]
                    if value is None:
                        if leaf[2]:
                            raise Fallback  # null in a non-null position
                        results[field.key] = None
                    elif (kind in (_STRING, _ID) and type(value) is str) or (
                        kind == _INT and type(value) is int and _INT_MIN <= value <= _INT_MAX
                    ):
                        results[field.key] = value
                    elif kind == _DATETIME and type(value) is datetime:
                        results[field.key] = value.isoformat()
                    elif kind == _ENUM and isinstance(value, Enum):
                        names = leaf[4]
                        name = names.get(value)
                        if name is None:
                            name = names[value] = _leaf(leaf[3], value)
                        results[field.key] = name
                    else:
                        results[field.key] = _leaf(leaf[3], value)
                    continue
                result = self.field(field, type_name, source, path)
                results[field.key] = result
                if result is not None and type(result) not in _PLAIN and isawaitable(result):
                    awaitable.append(field.key)
        except BaseException:
            for key in awaitable:
                getattr(results[key], "close", _nothing)()
            raise
        if not awaitable:
            return results

        async def gathered() -> dict[str, Any]:
            if len(awaitable) == 1:
                results[awaitable[0]] = await results[awaitable[0]]
            else:
                done = await gather_with_cancel(*(results[key] for key in awaitable))
                results.update(zip(awaitable, done, strict=True))
            return results

        return gathered()

    def flat(
        self,
        plan: ObjectPlan,
        fields: tuple[FlatField, ...],
        source: Any,
        parent: Path | None,
        index: int | None,
    ) -> dict[str, Any]:
        """An object of a flat plan: the loop of `fields` above, every field a leaf. Its path is `parent`,
        or `parent` and `index` for an item of a list (made only for an error)."""
        results: dict[str, Any] = {}
        for key, attribute, kind, nonnull, leaf_type, names, permission, field in fields:
            if permission is not None and not self.allowed(permission, source):
                path = parent if index is None else Path(parent, index, None)
                self.forbidden(Forbidden(permission), field, Path(path, key, plan.type.name))
                results[key] = None
                continue
            if attribute is None:
                results[key] = plan.type.name
                continue
            value = getattr(source, attribute)
            if value is None:
                if nonnull:
                    raise Fallback  # null in a non-null position
                results[key] = None
            elif kind == _STRING:
                results[key] = value if type(value) is str else _leaf(leaf_type, value)  # type: ignore[arg-type]
            elif kind == _INT:
                results[key] = (
                    value if type(value) is int and _INT_MIN <= value <= _INT_MAX else _leaf(leaf_type, value)  # type: ignore[arg-type]
                )
            elif kind == _ID:
                # graphql-core's serialize_id: a str as is; a UUID (not a builtin type) as str() writes it.
                results[key] = (
                    value
                    if type(value) is str
                    else str(value)
                    if isinstance(value, UUID)
                    else _leaf(leaf_type, value)  # type: ignore[arg-type]
                )
            elif kind == _DATETIME:
                # Strawberry's DateTime serializes with isoformat().
                results[key] = value.isoformat() if type(value) is datetime else _leaf(leaf_type, value)  # type: ignore[arg-type]
            elif kind == _ENUM and isinstance(value, Enum):
                name = names.get(value)
                if name is None:
                    name = names[value] = _leaf(leaf_type, value)  # type: ignore[arg-type]
                results[key] = name
            else:
                results[key] = _leaf(leaf_type, value)  # type: ignore[arg-type]
        return results

    def allowed(self, permission: str, source: Any) -> bool:
        """The guard's check (`schema.permissions`), remembered per permission and org for this request:
        a page of 100 instances asks the same two questions 200 times."""
        key = (permission, getattr(source, "org_id", None))
        decided = self.decided.get(key)
        if decided is None:
            principal = self.principal
            decided = self.decided[key] = principal is not None and bool(principal.has(*key))
        return decided

    def field(self, field: FieldPlan, type_name: str, source: Any, parent: Path | None) -> Any:
        if field.field is None:
            return type_name
        attribute = field.attribute
        if attribute is not None:
            permission = field.permission
            if permission is not None and not self.allowed(permission, source):
                return self.forbidden(Forbidden(permission), field, Path(parent, field.key, type_name))
            try:
                value = getattr(source, attribute)
            except Exception as error:
                raise Fallback from error
            completion = field.completion
            assert completion is not None
            if completion[0] == "leaf":
                return None if value is None else _leaf(completion[1], value)
            return self.complete(completion, field, Path(parent, field.key, type_name), value)
        return self.resolve(field, type_name, source, Path(parent, field.key, type_name))

    def resolve(self, field: FieldPlan, type_name: str, source: Any, path: Path) -> Any:
        executor = self.executor
        definition = field.field
        assert definition is not None
        nodes = [d.node for d in field.details]
        info = executor.build_resolve_info(definition, nodes, field_parent(executor, type_name), path)
        if field.reads is not None:
            info = _planned(info, field.reads)
        try:
            node = field.details[0].node
            args = (
                get_argument_values(
                    definition,
                    node,
                    executor.variable_values,
                    field.details[0].fragment_variable_values,
                    executor.hide_suggestions,
                )
                if definition.args or node.arguments
                else {}
            )
            resolve = definition.resolve
            assert resolve is not None
            result = resolve(source, info, **args)
        except Forbidden as error:
            return self.forbidden(error, field, path)
        except Exception as error:
            raise Fallback from error
        if isawaitable(result):
            return self.complete_awaitable(field, path, result)
        return self.complete(field.completion, field, path, result)

    async def complete_awaitable(self, field: FieldPlan, path: Path, result: Awaitable[Any]) -> Any:
        try:
            resolved = await result
        except Exception as error:
            raise Fallback from error
        completed = self.complete(field.completion, field, path, resolved)
        if isawaitable(completed):
            completed = await completed
        return completed

    def forbidden(self, error: Forbidden, field: FieldPlan, path: Path) -> None:
        if not field.nullable:
            raise Fallback  # the null would propagate: graphql-core's business
        self.errors.append(located_error(error, [d.node for d in field.details], path.as_list()))

    def complete(self, completion: Completion | None, field: FieldPlan, path: Path, value: Any) -> Any:
        assert completion is not None
        kind, inner = completion
        if kind == "nonnull":
            completed = self.complete(inner, field, path, value)
            if completed is None:
                raise Fallback  # a null in a non-null position: graphql-core propagates and masks it
            return completed
        if value is None:
            return None
        if kind == "leaf":
            return _leaf(inner, value)
        if kind == "object":
            return self.fields(inner, value, path)
        return self.complete_list(inner, field, path, value)

    def complete_list(self, inner: Completion, field: FieldPlan, path: Path, values: Any) -> Any:
        if not isinstance(values, list | tuple):
            raise Fallback
        items_nonnull = inner[0] == "nonnull"
        item = inner[1] if items_nonnull else inner
        if item[0] == "object" and item[1].flat is not None:
            return self.flat_list(item[1], items_nonnull, path, values)
        completed: list[Any] = []
        awaitable: list[int] = []
        try:
            for index, item in enumerate(values):
                if isawaitable(item):
                    raise Fallback
                result = self.complete(inner, field, path.add_key(index, None), item)
                completed.append(result)
                if result is not None and type(result) not in _PLAIN and isawaitable(result):
                    awaitable.append(index)
        except BaseException:
            for index in awaitable:
                getattr(completed[index], "close", _nothing)()
            raise
        if not awaitable:
            return completed

        async def gathered() -> list[Any]:
            if len(awaitable) == 1:
                completed[awaitable[0]] = await completed[awaitable[0]]
            else:
                done = await gather_with_cancel(*(completed[index] for index in awaitable))
                for index, value in zip(awaitable, done, strict=True):
                    completed[index] = value
            return completed

        return gathered()

    def flat_list(
        self, plan: ObjectPlan, items_nonnull: bool, path: Path, values: list[Any] | tuple[Any, ...]
    ) -> list[Any]:
        """A list of objects of a flat plan: `complete_list` without awaitables to gather."""
        fields = plan.flat
        assert fields is not None
        completed: list[Any] = []
        plain: type[Any] | None = None  # the item type known not to be awaitable
        for index, item in enumerate(values):
            if item is None:
                if items_nonnull:
                    raise Fallback  # null in a non-null position
                completed.append(None)
                continue
            if type(item) is not plain:
                if isawaitable(item):
                    raise Fallback
                plain = type(item)
            completed.append(self.flat(plan, fields, item, path, index))
        return completed


def field_parent(executor: Executor[Any], type_name: str) -> GraphQLObjectType:
    parent = executor.schema.get_type(type_name)
    assert isinstance(parent, GraphQLObjectType)
    return parent


def _scalar_kind(type_: GraphQLLeafType) -> int:
    if type_ is GraphQLString:
        return _STRING
    if type_ is GraphQLID and type_.coerce_output_value is serialize_id:
        return _ID
    if isinstance(type_, GraphQLEnumType):
        return _ENUM
    if isinstance(type_, GraphQLScalarType) and type_.coerce_output_value is isoformat:
        # Strawberry's DateTime (and Date, Time) serializes with isoformat(): the plan calls it itself on
        # a `datetime` value, anything else goes through the type.
        return _DATETIME
    return _INT if type_ is GraphQLInt else _OTHER


def _leaf(type_: GraphQLLeafType, value: Any) -> Any:
    """graphql-core's `complete_leaf_value`, with the built-in scalars' identity cases inlined."""
    kind = type(value)
    if kind is str and (type_ is GraphQLString or type_ is GraphQLID):
        return value
    if kind is int and type_ is GraphQLInt and _INT_MIN <= value <= _INT_MAX:
        return value
    if kind is bool and type_ is GraphQLBoolean:
        return value
    try:
        coerced = type_.coerce_output_value(value)
    except Exception as error:
        raise Fallback from error
    if coerced is None:
        raise Fallback
    return coerced


async def run(
    plan: ObjectPlan, executor: Executor[Any], context: Any
) -> tuple[dict[str, Any], list[GraphQLError]]:
    """The operation's data and errors; raises Fallback."""
    runner = Run(executor, context)
    try:
        data = runner.fields(plan, executor.root_value, None)
        if isawaitable(data):
            data = await data
    except Fallback:
        raise
    except Exception as error:  # any other field error: graphql-core locates, propagates and masks it
        raise Fallback from error
    return data, runner.errors


def _nothing() -> None:
    """What an awaitable that is not a coroutine is closed with (nothing to close)."""
