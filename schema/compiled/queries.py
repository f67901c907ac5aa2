"""Which documents run compiled: query documents this schema has already validated, keyed like the
document caches (a SHA-256 of the text), bounded by bytes.

A document is learned after graphql-core ran it once for a caller on the same side of schema discovery
(validation rules differ there), so the plan never answers a document nobody validated. Per request the
executor is built exactly as `schema.execute` builds it (variables coerced by graphql-core; any coercion
error falls back, and graphql-core answers it). Plans are made per set of `@include`/`@skip` variable
values, at most `MAX_VARIANTS` per document.

The schema's extensions are checked once: the path is only on when every extension is one whose work is
done once a document validated (the limits, parse and validation caches, discovery rules, mutation-only
checks, error masking: the plan answers FORBIDDEN only, a public error masking leaves alone) or the
operation metrics, which the path records itself (under the same label), and demand control: the plan runs
only when the cost estimate is within the limit and no report is asked for, else graphql-core answers.
With a per-user budget the path charges the estimate itself, once, just before the plan runs, and leaves
`schema.cost.Charged` on the context: when the plan falls back, graphql-core's `DemandControl` takes that
instead of charging again (and a refused charge is answered there, RATE_LIMITED as ever). So every
execution is charged exactly once whichever path answers. Any other extension (tracing, which wants a span
per field; one added later) turns the path off, so nothing an extension must observe is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import (
    BooleanValueNode,
    DocumentNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    get_operation_ast,
    visit,
)
from graphql.language import DirectiveNode, Visitor
from strawberry.extensions import AddValidationRules, MaskErrors, MaxTokensLimiter, SchemaExtension
from strawberry.types import ExecutionResult

from schema.active_token import ActiveTokenForWrites
from schema.compiled.plan import Fallback, ObjectPlan, Uncompilable, compile_query, run
from schema.cost import Charged, Charger, DemandControl, charge, judge, wants_report
from schema.discovery import DiscoveryAwareExecution, SchemaDiscovery, may_discover_in
from schema.document_cache import ByteBoundedCache, digest, document_weight, parse_cached
from schema.limits import MaxDocumentSize
from schema.metrics import OperationMetrics, OperationNamer, OperationRecorder
from schema.permissions import DeniedMutations
from schema.validation import CachedParse, CheckedValidation

logger = logging.getLogger(__name__)

# Plans hold the parsed document's nodes and a small object per selected field: about the document's
# own weight again. 8 MiB is hundreds of front-end documents.
PLANS_MAX_BYTES = 8 * 1024 * 1024
PLANS_MAX_ENTRY_BYTES = 512 * 1024
MAX_VARIANTS = 16
_UNJUDGED = object()  # a document whose cost has not been judged yet

# Extensions whose effect on a query that validated before is nothing, or only on refused documents.
_DONE_AFTER_VALIDATION: tuple[type[SchemaExtension], ...] = (
    MaxDocumentSize,
    MaxTokensLimiter,
    CachedParse,
    AddValidationRules,
    CheckedValidation,
    SchemaDiscovery,
    DeniedMutations,
    ActiveTokenForWrites,
    MaskErrors,
)


@dataclass(slots=True)
class _Document:
    document: DocumentNode
    operation: OperationDefinitionNode
    switches: tuple[str, ...]  # variables that decide an @include/@skip
    plans: dict[tuple[Any, ...], ObjectPlan | None] = field(default_factory=dict)
    # Demand control's verdict, when the operation has no variables (then it never changes): the estimate
    # when admitted silently; None: refused or reported; _UNJUDGED: not yet known.
    within_cost: int | object | None = _UNJUDGED


class CompiledQueries:
    def __init__(
        self,
        schema: strawberry.Schema,
        recorders: Sequence[tuple[OperationRecorder, OperationNamer | None]],
        max_cost: int | None = None,
        budget: Charger | None = None,
    ) -> None:
        self.schema = schema
        self.recorders = tuple(recorders)
        self.max_cost = max_cost
        self.budget = budget  # charged here, once, before a plan runs (see the module docstring)
        self.documents: ByteBoundedCache[_Document | None] = ByteBoundedCache(
            PLANS_MAX_BYTES, PLANS_MAX_ENTRY_BYTES
        )
        self.compiled = 0  # requests answered by a plan (tests and the benchmark read it)
        self.fell_back = 0

    @classmethod
    def for_schema(cls, schema: strawberry.Schema) -> CompiledQueries | None:
        """None when an extension could need to see every execution (see the module docstring)."""
        recorders: list[tuple[OperationRecorder, OperationNamer | None]] = []
        max_cost: int | None = None
        budget: Charger | None = None
        for factory in schema.extensions:
            extension = factory() if callable(factory) else factory
            if isinstance(extension, OperationMetrics):
                recorders.append((extension.recorder, extension.namer))
            elif isinstance(extension, DemandControl):
                max_cost, budget = extension.max_cost, extension.budget
            elif type(extension) not in _DONE_AFTER_VALIDATION or extension._implements_resolve():
                logger.info("compiled execution off: %s observes executions", type(extension).__name__)
                return None
        return cls(schema, recorders, max_cost, budget)

    @staticmethod
    def _key(
        query: str, operation_name: str | None, context: Any, document_id: str | None
    ) -> bytes | tuple[str, str, bool]:
        """A SHA-256 of the text; for a trusted document, its id (the manifest's SHA-256 of the text),
        so a request by id hashes nothing."""
        discover = may_discover_in(context)
        if document_id is not None:
            return (document_id, operation_name or "", discover)
        return digest(query, operation_name or "", "discover" if discover else "")

    def learn(
        self,
        query: str,
        operation_name: str | None,
        context: Any,
        validated: bool,
        document_id: str | None = None,
    ) -> None:
        """After graphql-core ran `query`: remember it when it validated (and is a query).
        `document_id`: the trusted document's id (`gateway.documents`) when `query` is one."""
        if not validated:
            return
        key = self._key(query, operation_name, context, document_id)
        if self.documents.get(key) is not None:
            return
        try:
            document = parse_cached(query)
        except Exception:
            return
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            self.documents.put(key, None, 0)
            return
        self.documents.put(
            key, _Document(document, operation, _switches(document)), 2 * document_weight(query, document)
        )

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        extensions: dict[str, Any] | None,
        document_id: str | None = None,
    ) -> ExecutionResult | None:
        """The result, or None: the caller runs `schema.execute` (and then `learn`)."""
        entry = self.documents.get(self._key(query, operation_name, context, document_id))
        if entry is None:
            return None
        started = time.perf_counter()
        executor = DiscoveryAwareExecution.build(
            self.schema._schema,
            entry.document,
            None,
            context_value=context,
            raw_variable_values=variables,
            operation_name=operation_name,
            operation_extensions=extensions,
        )
        if isinstance(executor, list):
            return None  # variable errors: graphql-core words them
        estimate = 0
        if self.max_cost is not None:
            within = self._admitted(entry, operation_name, variables, extensions)
            if within is None:
                return None  # refused or reported by demand control, on graphql-core's path
            estimate = within
        coerced = executor.variable_values.coerced
        switch = tuple(coerced.get(name) for name in entry.switches)
        if switch in entry.plans:
            plan = entry.plans[switch]
        else:
            plan = None
            if len(entry.plans) < MAX_VARIANTS:
                try:
                    plan = compile_query(executor)
                except Uncompilable as reason:
                    logger.debug("not compiled: %s", reason)
                except Exception:  # a compiler fault must cost speed, never an answer
                    logger.exception("compiling a validated document failed; graphql-core runs it")
                entry.plans[switch] = plan
        if plan is None:
            return None
        principal = getattr(context, "principal", None)
        if self.budget is not None and principal is not None:
            wait = await charge(self.budget, principal.sub, estimate)
            context.cost_charged = Charged(retry_after=wait)
            if wait is not None:
                return None  # graphql-core's DemandControl answers RATE_LIMITED from the mark, uncharged
        try:
            data, errors = await run(plan, executor, context)
        except Fallback:
            self.fell_back += 1
            return None  # the mark stays: graphql-core runs it without charging again
        if self.budget is not None and principal is not None:
            context.cost_charged = None
        self.compiled += 1
        name = operation_name or (entry.operation.name.value if entry.operation.name else None)
        seconds = time.perf_counter() - started
        for recorder, namer in self.recorders:
            label = namer(query, operation_name) if namer is not None else name
            recorder.operation(label, "errors" if errors else "ok", seconds)
        return ExecutionResult(data=data, errors=errors or None)

    def _admitted(
        self,
        entry: _Document,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        extensions: dict[str, Any] | None,
    ) -> int | None:
        """`_within_cost`, remembered for an operation without variables (its cost never changes)."""
        if entry.operation.variable_definitions:
            return self._within_cost(entry.document, operation_name, variables, extensions)
        if wants_report(extensions):
            return None
        if entry.within_cost is _UNJUDGED:
            entry.within_cost = self._within_cost(entry.document, operation_name, variables, extensions)
        within = entry.within_cost
        assert within is None or isinstance(within, int)
        return within

    def _within_cost(
        self,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        extensions: dict[str, Any] | None,
    ) -> int | None:
        """The estimate when demand control would admit the request silently (no refusal, no report)."""
        if wants_report(extensions) or self.max_cost is None:
            return None
        estimate, refusal = judge(self.schema._schema, document, operation_name, variables, self.max_cost)
        return estimate if refusal is None else None


def _switches(document: DocumentNode) -> tuple[str, ...]:
    names: list[str] = []

    class Switches(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            if node.name.value in ("include", "skip"):
                for argument in node.arguments or ():
                    if isinstance(argument.value, VariableNode) and argument.value.name.value not in names:
                        names.append(argument.value.name.value)
                    elif not isinstance(argument.value, BooleanValueNode | VariableNode):
                        names.append("")  # never a variable name: keeps the plan keyed on what it saw

    visit(document, Switches())
    return tuple(names)
