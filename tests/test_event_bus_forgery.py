"""The bus does not trust its payload: a NOTIFY anyone with a database login can send reaches only those
who may see the instance it names, as the database has it, and a garbled one breaks nothing.

Real PostgreSQL, real uvicorn, real websockets; the forger is a plain asyncpg connection.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.bootstrap import Runtime
from services.db.models import InstanceEventRow
from services.events.postgres_bus import CHANNEL, PostgresBus
from services.instances.states import InstanceStatus
from services.instances.store import InstanceStore
from tests.conftest import Issuer
from tests.support.databases import postgres_database
from tests.support.documents import CHANGES, CREATE
from tests.support.servers import serve
from tests.test_event_bus import listening, next_event, pending_instance, step
from tests.test_subscriptions import eventually, open_transport_ws, receive

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """PostgreSQL only: NOTIFY is what is forged."""
    async with postgres_database() as url:
        yield url


async def order(base: str, issuer: Issuer, name: str, org: str) -> str:
    headers = issuer.headers("user", sub=f"user-{org}", org=org)
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        body = (await http.post("/graphql", json={"query": CREATE, "variables": {"name": name}})).json()
    assert body["data"]["createInstance"]["userErrors"] == [], body
    return str(body["data"]["createInstance"]["instance"]["id"])


async def next_change(socket: Any) -> dict[str, Any]:
    message = await receive(socket)
    assert message["type"] == "next", message
    change: dict[str, Any] = message["payload"]["data"]["instanceStatusChanges"]
    return change


async def test_a_forged_notify_reaches_nobody_who_may_not_see_the_instance(
    runtime: Runtime, issuer: Issuer
) -> None:
    assert isinstance(runtime.bus, PostgresBus)
    async with serve(create_app(runtime, own_runtime=True)) as base:
        org_b = await open_transport_ws(base, issuer.token("viewer", sub="viewer-b", org="org-b"))
        org_a = await open_transport_ws(base, issuer.token("viewer", sub="viewer-a", org="org-a"))
        try:
            for socket in (org_b, org_a):
                await socket.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": CHANGES}}))
            assert await eventually(lambda: runtime.services.hub.subscribers == 2)

            # An org-A instance runs its lifecycle; only org A's viewer hears of it.
            victim = await order(base, issuer, "a-vm", "org-a")
            while (change := await next_change(org_a))["to"] != "ACTIVE":
                assert change["instance"]["id"] == victim
            async with runtime.engine.connect() as connection:
                first_event = (
                    await connection.execute(
                        select(InstanceEventRow.id)
                        .where(InstanceEventRow.instance_id == uuid.UUID(victim))
                        .order_by(InstanceEventRow.id)
                        .limit(1)
                    )
                ).scalar_one()

            # Anyone who can connect may NOTIFY on the channel: no table rights are needed.
            dsn = runtime.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            forger = await asyncpg.connect(dsn)
            try:
                forged = {
                    "e": first_event,
                    "i": victim,  # an org-A instance, its payload claiming org B and a DELETED
                    "o": "org-b",
                    "s": "viewer-b",
                    "f": "ACTIVE",
                    "t": "DELETED",
                    "r": "forged",
                    "a": datetime.now(UTC).isoformat(),
                    "v": 99,
                }
                payloads = [
                    json.dumps({**forged, "e": first_event + 10_000}),  # a change never recorded
                    json.dumps(forged),  # a real change of the instance, replayed with forged claims
                    json.dumps({**forged, "i": str(uuid.uuid4())}),  # an instance that does not exist
                    "{not json",
                    "[1, 2]",
                    json.dumps({**forged, "e": 2**70}),
                ]
                for payload in payloads:
                    await forger.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            finally:
                await forger.close()

            # Markers, committed after the forgeries: NOTIFYs arrive in order, so whatever a forgery
            # delivered would come before them.
            own = await order(base, issuer, "b-vm", "org-b")
            first_b = await next_change(org_b)
            assert (first_b["instance"]["id"], first_b["to"]) == (own, "PENDING")

            # Org A may see its instance, so it gets the recorded change named, as stored: not as forged.
            replayed = await next_change(org_a)
            assert replayed == {
                "instance": {"id": victim, "name": "a-vm"},
                "from": None,
                "to": "PENDING",
            }
            marker = await order(base, issuer, "a-marker", "org-a")
            assert (await next_change(org_a))["instance"]["id"] == marker  # nothing else came between

            # The garbled payloads were dropped without costing the LISTEN connection.
            assert runtime.bus.reconnects == 0
            assert runtime.bus.connected
        finally:
            await org_b.close()
            await org_a.close()


async def test_a_forged_guess_of_the_next_event_id_does_not_shadow_the_real_change(
    engine: AsyncEngine,
) -> None:
    bus = PostgresBus(engine)
    store = InstanceStore(engine, bus)
    instance_id = await pending_instance(engine)
    async with listening(bus) as received:
        async with engine.connect() as connection:
            taken = (
                await connection.execute(
                    text("SELECT nextval(pg_get_serial_sequence('instance_events', 'id'))")
                )
            ).scalar_one()
        guess = taken + 1  # the id the next recorded change gets
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        forger = await asyncpg.connect(dsn)
        try:
            payload = {
                "e": guess,
                "i": str(instance_id),
                "o": "org-a",
                "s": "user-1",
                "f": "PENDING",
                "t": "PROVISIONING",
                "r": "forged",
                "a": datetime.now(UTC).isoformat(),
                "v": 2,
            }
            await forger.execute("SELECT pg_notify($1, $2)", CHANNEL, json.dumps(payload))
        finally:
            await forger.close()
        hint = await next_event(received)  # the bus passes hints on; the hub checks them
        assert (hint.event_id, hint.reason) == (guess, "forged")
        await step(store, instance_id, InstanceStatus.PROVISIONING)
        real = await next_event(received)
        assert (real.event_id, real.reason, real.to_status) == (guess, "ok", InstanceStatus.PROVISIONING)
