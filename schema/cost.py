"""Demand control: the static cost of an operation, after the IBM GraphQL Cost Directive specification
(https://ibm.github.io/graphql-specs/cost-spec.html), as Apollo Router, Cosmo and Hive implement it.

The SDL says what a field costs: `@cost(weight:)` overrides the default weight (object fields 1,
scalars and enums 0), and `@listSize(assumedSize:, slicingArguments:, sizedFields:,
requireOneSlicingArgument:)` says how many items a list field returns. A list multiplies the cost of
its items; a slicing argument given (literally or through a variable) is the size, else `assumedSize`,
else `DEFAULT_LIST_SIZE`. `sizedFields` put the size on the named child lists of a connection type
(`instances { nodes edges }`). Root mutation fields weigh 10 (the spec's default for mutations).

Simplifications, all upward: fields under `@skip`/`@include` count unless the condition is a known
`true`/`false`; inline fragments and spreads add up (the schema has no abstract types to take a maximum
over). Introspection fields cost nothing: the token limit and `schema:introspect` bound them, and
GraphiQL's introspection query would otherwise need a list size for every meta-field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import strawberry
from graphql import (
    BooleanValueNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
    is_composite_type,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.schema_directive import Location

from schema.errors import BAD_USER_INPUT, cost_limit_exceeded, rate_limited

DEFINITION = "strawberry-definition"
DEFAULT_LIST_SIZE = 10
MUTATION_WEIGHT = 10
# The request asks for its estimate with `"extensions": {"cost": {"report": true}}`.
REPORT_FLAG = "cost"


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION, Location.OBJECT],
    name="cost",
    description="The weight of a field or of every field of a type (IBM GraphQL Cost Directive).",
)
class Cost:
    weight: int


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="listSize",
    description="How many items a list field returns, for cost estimates (IBM GraphQL Cost Directive).",
)
class ListSize:
    assumed_size: int | None = None
    slicing_arguments: list[str] | None = None
    sized_fields: list[str] | None = None
    require_one_slicing_argument: bool = True


def list_size(
    *,
    assumed_size: int | None = None,
    slicing_arguments: list[str] | None = None,
    sized_fields: list[str] | None = None,
    require_one_slicing_argument: bool = True,
) -> ListSize:
    return ListSize(
        assumed_size=assumed_size,
        slicing_arguments=slicing_arguments,
        sized_fields=sized_fields,
        require_one_slicing_argument=require_one_slicing_argument,
    )


PEER_CALL = Cost(weight=10)
"""A field whose resolver asks a peer (the cluster, Semaphore): ten times an object read."""


def _directives(field: GraphQLField) -> tuple[Cost | None, ListSize | None]:
    definition = (field.extensions or {}).get(DEFINITION)
    cost: Cost | None = None
    size: ListSize | None = None
    for directive in getattr(definition, "directives", ()) or ():
        if isinstance(directive, Cost):
            cost = directive
        elif isinstance(directive, ListSize):
            size = directive
    return cost, size


def _type_weight(named: Any) -> int | None:
    definition = (getattr(named, "extensions", None) or {}).get("strawberry-definition")
    for directive in getattr(definition, "directives", ()) or ():
        if isinstance(directive, Cost):
            return directive.weight
    return None


class CostError(Exception):
    """The document breaks a `@listSize` rule (e.g. two slicing arguments where one is required)."""


@dataclass(slots=True)
class _Walk:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    defaults: Mapping[str, Any]

    def value(self, node: Any) -> Any:
        if isinstance(node, VariableNode):
            name = node.name.value
            return self.variables[name] if name in self.variables else self.defaults.get(name)
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, BooleanValueNode):
            return node.value
        return None

    def included(self, node: SelectionNode) -> bool:
        for directive in node.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            condition = next(
                (self.value(a.value) for a in directive.arguments or () if a.name.value == "if"), None
            )
            if isinstance(condition, bool) and condition == (name == "skip"):
                return False
        return True

    def size(self, field: GraphQLField, node: FieldNode, rule: ListSize | None) -> int:
        if rule is None:
            return DEFAULT_LIST_SIZE
        given: list[int] = []
        for name in rule.slicing_arguments or ():
            argument = next((a for a in node.arguments or () if a.name.value == name), None)
            value = self.value(argument.value) if argument is not None else None
            if value is None and argument is None and name in field.args:
                value = field.args[name].default_value
            if isinstance(value, int) and not isinstance(value, bool):
                given.append(max(value, 0))
        if rule.slicing_arguments and rule.require_one_slicing_argument and len(given) != 1:
            raise CostError(f"{node.name.value} needs exactly one of {', '.join(rule.slicing_arguments)}")
        if given:
            return max(given)
        return rule.assumed_size if rule.assumed_size is not None else DEFAULT_LIST_SIZE

    def selections(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLObjectType,
        sized: Mapping[str, int],
        seen: frozenset[str],
    ) -> int:
        total = 0
        for selection in selection_set.selections:
            if not self.included(selection):
                continue
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, sized.get(selection.name.value))
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                if selection.type_condition is not None:
                    named = self.schema.get_type(selection.type_condition.name.value)
                    target = named if isinstance(named, GraphQLObjectType) else parent
                total += self.selections(selection.selection_set, target, sized, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                named = self.schema.get_type(fragment.type_condition.name.value)
                target = named if isinstance(named, GraphQLObjectType) else parent
                total += self.selections(fragment.selection_set, target, sized, seen | {name})
        return total

    def field(self, node: FieldNode, parent: GraphQLObjectType, imposed_size: int | None) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 0
        field = parent.fields.get(name)
        if field is None:  # validation refuses it first; count nothing rather than fail
            return 0
        cost_rule, size_rule = _directives(field)
        named = get_named_type(field.type)
        weight = cost_rule.weight if cost_rule is not None else _type_weight(named)
        if weight is None:
            weight = 1 if is_composite_type(named) else 0
        inner = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
        is_list = isinstance(inner, GraphQLList)
        size = self.size(field, node, size_rule) if (is_list or size_rule is not None) else 1
        children_sized: dict[str, int] = {}
        if size_rule is not None and size_rule.sized_fields:
            children_sized = {child: size for child in size_rule.sized_fields}
        children = 0
        if node.selection_set is not None and isinstance(named, GraphQLObjectType):
            children = self.selections(node.selection_set, named, children_sized, frozenset())
        if imposed_size is not None:
            return imposed_size * (weight + children)
        if is_list and not children_sized:
            return size * (weight + children)
        return weight + children


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> int:
    """The estimated cost of the operation `operation_name` selects in a validated `document`."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    if root is None:
        return 0
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    walk = _Walk(schema, fragments, variables or {}, _variable_defaults(operation))
    total = walk.selections(operation.selection_set, root, {}, frozenset())
    if operation.operation is OperationType.MUTATION:
        total += MUTATION_WEIGHT * sum(
            1 for s in operation.selection_set.selections if isinstance(s, FieldNode) and walk.included(s)
        )
    return total


def _variable_defaults(operation: OperationDefinitionNode) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None:
            value = definition.default_value
            if isinstance(value, IntValueNode):
                defaults[definition.variable.name.value] = int(value.value)
            elif isinstance(value, BooleanValueNode):
                defaults[definition.variable.name.value] = value.value
    return defaults


def wants_report(extensions: Mapping[str, Any] | None) -> bool:
    flag = (extensions or {}).get(REPORT_FLAG)
    return isinstance(flag, dict) and flag.get("report") is True


class Charger(Protocol):
    """What the budget looks like to the extension (schema.budget.Budget)."""

    async def charge(self, key: str, cost: int) -> int | None:
        """None when admitted; else the whole seconds until `cost` fits."""


async def charge(budget: Charger, sub: str, estimate: int) -> int | None:
    """Take `estimate` from `sub`'s budget (an operation takes at least 1): None, or the Retry-After."""
    return await budget.charge(sub, max(estimate, 1))


def judge(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    max_cost: int,
) -> tuple[int | None, GraphQLError | None]:
    """The estimate of a validated document and its refusal, if any: BAD_USER_INPUT when it breaks a
    `@listSize` rule (no estimate), COST_LIMIT_EXCEEDED over `max_cost`."""
    try:
        estimate = operation_cost(schema, document, operation_name, variables)
    except CostError as error:
        return None, GraphQLError(str(error), extensions={"code": BAD_USER_INPUT})
    if estimate > max_cost:
        return estimate, cost_limit_exceeded(estimate, max_cost)
    return estimate, None


@dataclass(frozen=True, slots=True)
class Charged:
    """The caller's budget was charged for the execution about to run before demand control ran: set on
    the request context (`Context.cost_charged`), taken by `DemandControl` instead of charging again.

    Set by the compiled path (`schema.compiled.queries`) before it runs a plan, so a plan that falls back
    to graphql-core is not charged twice; and on a shared subscription's own context, whose members are
    each charged when they join (`schema.subscription_cost`). `retry_after`: the charge was refused.
    `report`: False on a shared run, whose members each get their own `extensions.cost`."""

    retry_after: int | None = None
    report: bool = True


def take_charged(context: Any) -> Charged | None:
    """The charge already made for this execution, if any; it counts for one execution only."""
    charged = getattr(context, "cost_charged", None)
    if not isinstance(charged, Charged):
        return None
    context.cost_charged = None
    return charged


class DemandControl(SchemaExtension):
    """After validation, before execution: estimate the cost, refuse it over the limit, charge the
    caller's budget (subscriptions once, at subscribe), and report the estimate when asked (a
    subscription on its first result only)."""

    def __init__(self, max_cost: int, budget: Charger | None) -> None:
        self.max_cost = max_cost
        self.budget = budget
        self.estimate: int | None = None
        self.report = True
        self._streamed = False

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.pre_execution_errors is None and document is not None:
            context.pre_execution_errors = validate_document(
                context.schema._schema, document, context.validation_rules
            )
        if context.pre_execution_errors == [] and document is not None:
            context.pre_execution_errors = await self._admit(document)
        yield

    async def _admit(self, document: DocumentNode) -> list[GraphQLError]:
        context = self.execution_context
        self.estimate, refusal = judge(
            context.schema._schema, document, context.operation_name, context.variables, self.max_cost
        )
        if refusal is not None:
            return [refusal]
        assert self.estimate is not None
        charged = take_charged(context.context)
        if charged is not None:
            self.report = charged.report
            if charged.retry_after is not None:
                return [rate_limited(charged.retry_after, self.estimate, self.max_cost)]
            return []
        principal = getattr(context.context, "principal", None)
        if self.budget is not None and principal is not None:
            wait = await charge(self.budget, principal.sub, self.estimate)
            if wait is not None:
                return [rate_limited(wait, self.estimate, self.max_cost)]
        return []

    def get_results(self) -> dict[str, Any]:
        if (
            self.estimate is None
            or not self.report
            or not wants_report(self.execution_context.operation_extensions)
        ):
            return {}
        return {"cost": report(self.estimate, self.max_cost)}

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """A subscription reports its estimate on its first result, not on every one."""
        extensions = getattr(result, "extensions", None)
        if self._streamed and isinstance(extensions, dict):
            extensions.pop(REPORT_FLAG, None)
        self._streamed = True
        yield


def report(estimate: int, limit: int) -> dict[str, int]:
    """The `extensions.cost` of a request that asked for it."""
    return {"estimated": estimate, "limit": limit}
