"""Demand control for subscriptions over the real transports: every subscriber of a shared subscription is
charged its cost once at subscribe and refused (an `error`, not a silent drop) once its budget is spent or
over the cost limit, on graphql-transport-ws, graphql-ws and graphql-sse; `extensions.cost` on the first
`next` of a subscriber that asked for it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from schema.budget import Budget
from schema.multiplex import Multiplexer
from tests.conftest import AppFactory, Issuer
from tests.support.documents import create_instance
from tests.support.servers import serve
from tests.test_subscriptions_clients import LEGACY, TRANSPORT, connect, receive, until

CHANGES = "subscription { instanceStatusChanges { instance { id name } from to } }"  # costs 2
# 52: events without a slicing argument are 50; two fit a budget of 120 a minute, a third does not
# (16 left, 36 short at 2 a second: Retry-After 18), and the mutation that makes the events (22) fits.
HEAVY = "subscription { instanceStatusChanges { instance { id name events { at } } from to } }"
COST = {"estimated": 52, "limit": 5000}
EVENT_STREAM = {"Accept": "text/event-stream"}


@asynccontextmanager
async def served(
    make_app: AppFactory, *, share_subscriptions: bool = True, **settings: Any
) -> AsyncIterator[tuple[str, Starlette]]:
    app = await make_app(share_subscriptions=share_subscriptions, **settings)
    await app.state.runtime.start(background=False)  # the event hub; make_app closes the runtime
    budget = app.state.budget
    if isinstance(budget, Budget):
        budget.local.clock = lambda: 0.0  # no refill: the bucket moves by the charges only
    async with serve(app, lifespan="off") as base:
        yield base, app


def left(app: Starlette, sub: str) -> float:
    budget = app.state.budget
    assert isinstance(budget, Budget)
    return budget.local._buckets[sub][0] if sub in budget.local._buckets else budget.local.capacity


def refusals_counted(app: Starlette) -> float:
    """Operations the metrics counted as refused before running (`outcome="request_error"`)."""
    counter = app.state.observability.metrics.operations
    return sum(
        float(sample.value)
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == "request_error"
    )


def groups(app: Starlette) -> int:
    multiplexer = app.state.schema.multiplexer
    assert isinstance(multiplexer, Multiplexer)
    return multiplexer.groups


def subscribe(protocol: str, operation_id: str, payload: dict[str, Any]) -> str:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    return json.dumps({"id": operation_id, "type": kind, "payload": payload})


def refusal(protocol: str, message: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """The one error of an `error` message, in either protocol's shape."""
    assert (message["type"], message["id"]) == ("error", operation_id), message
    payload = message["payload"]
    if protocol == TRANSPORT:
        assert isinstance(payload, list)
        assert len(payload) == 1, payload
        payload = payload[0]
    assert isinstance(payload, dict)
    return payload


async def data_of(protocol: str, socket: Any, operation_id: str) -> dict[str, Any]:
    message = await receive(socket)
    assert message["type"] == ("next" if protocol == TRANSPORT else "data"), message
    assert message["id"] == operation_id, message
    payload: dict[str, Any] = message["payload"]
    return payload


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_every_subscriber_of_a_shared_subscription_is_charged_and_refused_when_spent(
    make_app: AppFactory, issuer: Issuer, protocol: str
) -> None:
    async with served(make_app, cost_per_minute=120) as (base, app):
        alice, bob = issuer.token("viewer", sub="alice"), issuer.token("viewer", sub="bob")
        first, second, third, other = [
            await connect(base, token, protocol) for token in (alice, alice, alice, bob)
        ]
        try:
            await first.send(subscribe(protocol, "1", {"query": HEAVY}))
            await until(lambda: left(app, "alice") == 68, "the first subscriber's charge")
            assert groups(app) == 1
            await second.send(subscribe(protocol, "2", {"query": HEAVY}))
            await until(lambda: left(app, "alice") == 16, "the second subscriber's charge")
            await other.send(subscribe(protocol, "4", {"query": HEAVY}))  # same rights: same group
            await until(lambda: left(app, "bob") == 68, "another user's charge, on their own budget")
            assert groups(app) == 1  # all of them members of one run
            counted = refusals_counted(app)
            await third.send(subscribe(protocol, "3", {"query": HEAVY}))
            error = refusal(protocol, await receive(third), "3")
            assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 18, "cost": COST}
            assert left(app, "alice") == 16  # refused: nothing taken
            assert refusals_counted(app) == counted + 1  # in the operation metrics, as any refusal
            # The admitted members all receive the change; the refused one nothing more.
            instance_id = await create_instance(base, issuer, "shared-cost", role="admin", sub="admin-1")
            for socket, operation_id in ((first, "1"), (second, "2"), (other, "4")):
                payload = await data_of(protocol, socket, operation_id)
                assert payload["data"]["instanceStatusChanges"]["instance"]["id"] == instance_id
                assert "extensions" not in payload  # nobody asked for the estimate
            await third.send(subscribe(protocol, "5", {"query": HEAVY}))  # still spent
            assert refusal(protocol, await receive(third), "5")["extensions"]["code"] == "RATE_LIMITED"
            # A document that does not validate is answered with its errors and charged nothing (it would
            # cost 1: the unknown field counts 0).
            invalid = "subscription { instanceStatusChanges { nope } }"
            await third.send(subscribe(protocol, "6", {"query": invalid}))
            assert "nope" in refusal(protocol, await receive(third), "6")["message"]
            assert left(app, "alice") == 16
            # Nor one over the gateway's own limits (here: more aliases than allowed), which the run refuses.
            aliased = " ".join(f"a{i}: from" for i in range(40))
            await third.send(
                subscribe(
                    protocol, "7", {"query": f"subscription {{ instanceStatusChanges {{ {aliased} }} }}"}
                )
            )
            assert "aliases" in refusal(protocol, await receive(third), "7")["message"]
            assert left(app, "alice") == 16
        finally:
            for socket in (first, second, third, other):
                await socket.close()


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_every_subscriber_over_the_cost_limit_is_refused(
    make_app: AppFactory, issuer: Issuer, protocol: str
) -> None:
    async with served(make_app, max_operation_cost=1) as (base, app):
        sockets = [await connect(base, issuer.token("viewer", sub="alice"), protocol) for _ in range(3)]
        try:
            for n, socket in enumerate(sockets):
                await socket.send(subscribe(protocol, str(n), {"query": CHANGES}))
                error = refusal(protocol, await receive(socket), str(n))
                assert error["extensions"] == {
                    "code": "COST_LIMIT_EXCEEDED",
                    "cost": {"estimated": 2, "limit": 1},
                }
            assert groups(app) == 0
        finally:
            for socket in sockets:
                await socket.close()


async def test_every_graphql_sse_subscriber_is_charged_and_refused_when_spent(
    make_app: AppFactory, issuer: Issuer
) -> None:
    async with (
        served(make_app, cost_per_minute=120) as (base, app),
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        headers = {**EVENT_STREAM, **issuer.headers("viewer", sub="alice")}
        body = {"query": HEAVY}
        async with http.stream("POST", "/graphql", json=body, headers=headers) as first:
            assert first.status_code == 200
            await until(lambda: left(app, "alice") == 68, "the first stream's charge")
            async with http.stream("POST", "/graphql", json=body, headers=headers) as second:
                assert second.status_code == 200
                await until(lambda: left(app, "alice") == 16, "the second stream's charge")
                assert groups(app) == 1
                third = await http.post("/graphql", json=body, headers=headers)
                events = third.text.split("\n\n")
                assert events[0].startswith("event: next\ndata: "), third.text
                error = json.loads(events[0].removeprefix("event: next\ndata: "))["errors"][0]
                assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 18, "cost": COST}
                assert events[1] == "event: complete\ndata:"
                assert left(app, "alice") == 16


@pytest.mark.parametrize("share", [True, False])
async def test_the_first_next_reports_the_estimate_when_the_subscribe_asks(
    make_app: AppFactory, issuer: Issuer, share: bool
) -> None:
    limits = {"cost_per_minute": 1000, "max_operation_cost": 30}
    async with served(make_app, share_subscriptions=share, **limits) as (base, app):
        asking = await connect(base, issuer.token("viewer", sub="alice"))
        quiet = await connect(base, issuer.token("viewer", sub="bob"))
        try:
            report = {"query": CHANGES, "extensions": {"cost": {"report": True}}}
            await asking.send(subscribe(TRANSPORT, "1", report))
            await quiet.send(subscribe(TRANSPORT, "1", {"query": CHANGES}))
            await until(lambda: left(app, "alice") == left(app, "bob") == 998, "both subscribed")
            hub = app.state.runtime.services.hub
            await until(lambda: hub.subscribers == (1 if share else 2), "the runs at the hub")
            for name in ("first", "second"):
                await create_instance(base, issuer, name, role="admin", sub="admin-1")
            reported = await data_of(TRANSPORT, asking, "1")
            assert reported["extensions"] == {"cost": {"estimated": 2, "limit": 30}}
            assert reported["data"]["instanceStatusChanges"]["instance"]["name"] == "first"
            later = await data_of(TRANSPORT, asking, "1")
            assert "extensions" not in later, later  # once, on the first result
            for _ in range(2):
                assert "extensions" not in await data_of(TRANSPORT, quiet, "1")  # did not ask
            # Refused, the error itself carries the estimate.
            over = await connect(base, issuer.token("viewer", sub="carol"))
            costly = {"query": HEAVY, "extensions": {"cost": {"report": True}}}
            await over.send(subscribe(TRANSPORT, "9", costly))
            error = refusal(TRANSPORT, await receive(over), "9")
            assert error["extensions"] == {
                "code": "COST_LIMIT_EXCEEDED",
                "cost": {"estimated": 52, "limit": 30},
            }
            await over.close()
        finally:
            await asking.close()
            await quiet.close()
