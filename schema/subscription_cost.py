"""Demand control for every subscriber of a shared subscription, and the subscribe payload's extensions.

Subscribers with the same document, variables and rights share one run (`schema.multiplex`), so the run's
own `DemandControl` sees only the member that started it. `SubscriptionCost.join` is called for each member
as it is admitted (`GatewaySchema.stream`, on graphql-transport-ws, graphql-ws and graphql-sse alike): it
estimates the document (once per share key: validated with graphql-core's rules and the gateway's own limits
of `schema.limits`; a document the run will refuse is not charged and the run answers its errors), refuses
it over `OPENCSP_MAX_OPERATION_COST` (COST_LIMIT_EXCEEDED) and charges the member's own budget (RATE_LIMITED
with `retryAfter` when it is spent). A refused member runs alone through the schema's pipeline, whose demand
control answers the same refusal uncharged, so its error is the first and only result (and counted like any
refusal), which the websocket protocols send as an `error` message and graphql-sse as a `next` with
`errors`; it never joins the group. The group's own run is marked `Charged(report=False)`, so its
`DemandControl` neither charges the first member twice nor puts one member's report into the payload every
member shares; a member that asked for the estimate gets `extensions.cost` on its own first result instead.

Strawberry's websocket handlers do not pass a subscribe payload's `extensions` to the schema:
`requested(payload)` (gateway/websocket.py, on subscribe and start) keeps them in a context variable the
operation's task inherits, and `GatewaySchema.stream` reads them with `requested_extensions()`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any

from graphql import GraphQLError, GraphQLSchema, specified_rules, validate
from strawberry.types import ExecutionResult

from schema.cost import Charged, Charger, charge, judge, report, wants_report
from schema.document_cache import parse_cached
from schema.errors import rate_limited
from schema.limits import DocumentLimits, limit_rules, within_limits

MAX_ESTIMATES = 1024  # share keys whose estimate is kept (least recently used go first)

_requested: ContextVar[dict[str, Any] | None] = ContextVar("opencsp_subscribe_extensions", default=None)

Results = AsyncGenerator[Any, None]


def requested(payload: object) -> None:
    """A subscribe (or start) payload's `extensions`, for the operation task the handler creates next."""
    extensions = payload.get("extensions") if isinstance(payload, dict) else None
    _requested.set(extensions if isinstance(extensions, dict) else None)


def requested_extensions() -> dict[str, Any] | None:
    return _requested.get()


class SubscriptionCost:
    def __init__(
        self, schema: GraphQLSchema, max_cost: int, budget: Charger | None, *, limits: DocumentLimits
    ) -> None:
        self.schema = schema
        self.max_cost = max_cost
        self.budget = budget
        self.limits = limits
        self._rules = (*specified_rules, *limit_rules(limits))
        # share key -> (estimate, refusal); None: the document does not validate (the run says why).
        self._estimates: OrderedDict[Hashable, tuple[int | None, GraphQLError | None] | None] = OrderedDict()

    async def join(
        self,
        key: Hashable,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None,
        context: Any,
        shared: Any,
        join: Callable[[], Awaitable[Results]],
        alone: Callable[[], Awaitable[Results]],
    ) -> Results:
        """`join()` the group for a member that is admitted. A refused member runs `alone()`, its own
        unshared run, whose demand control answers the same refusal without charging (its charge was
        refused, marked on its context): so it is answered, counted in the operation metrics and logged
        as any refused operation is."""
        refusal = await self.admit(key, query, variables, operation_name, context, shared)
        if refusal is not None:
            retry_after = (refusal.extensions or {}).get("retryAfter")
            if isinstance(retry_after, int):
                context.cost_charged = Charged(retry_after=retry_after)
            return await alone()  # over the cost limit: its demand control refuses it by itself
        results = await join()
        judged = self._judge(key, query, variables, operation_name)
        if judged is not None and judged[0] is not None and wants_report(extensions):
            return _first_reports(results, report(judged[0], self.max_cost))
        return results

    async def admit(
        self,
        key: Hashable,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        shared: Any,
    ) -> GraphQLError | None:
        """Charge a member about to join; its refusal (nothing charged), or None when it may join. Marks
        the group's context `shared` so the run itself charges nobody."""
        judged = self._judge(key, query, variables, operation_name)
        if judged is not None:
            estimate, refusal = judged
            principal = getattr(context, "principal", None)
            if refusal is None and estimate is not None and self.budget is not None and principal is not None:
                wait = await charge(self.budget, principal.sub, estimate)
                if wait is not None:
                    refusal = rate_limited(wait, estimate, self.max_cost)
            if refusal is not None:
                return refusal
        shared.cost_charged = Charged(report=False)  # its members pay here, each one, and report on their own
        return None

    def _judge(
        self, key: Hashable, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> tuple[int | None, GraphQLError | None] | None:
        if key in self._estimates:
            self._estimates.move_to_end(key)
            return self._estimates[key]
        judged: tuple[int | None, GraphQLError | None] | None = None
        try:
            document = parse_cached(query, max_tokens=self.limits.max_tokens)
        except GraphQLError:
            document = None
        if (
            document is not None
            and within_limits(document, self.limits)
            and not validate(self.schema, document, self._rules)
        ):
            judged = judge(self.schema, document, operation_name, variables, self.max_cost)
        self._estimates[key] = judged
        while len(self._estimates) > MAX_ESTIMATES:
            self._estimates.popitem(last=False)
        return judged


async def _first_reports(results: Results, cost: dict[str, int]) -> Results:
    """The member's results, its first one with `extensions.cost` (taken out of the shared payload)."""
    try:
        first = True
        async for result in results:
            if first and isinstance(result, ExecutionResult):
                first = False
                data = dict(result.data) if result.data is not None else None
                result = dataclasses.replace(
                    result, data=data, extensions={**(result.extensions or {}), "cost": cost}
                )
            yield result
    finally:
        await results.aclose()
