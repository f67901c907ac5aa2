"""graphql-sse (distinct-connections mode) at `/graphql`: the npm `graphql-sse` client receives a whole
lifecycle in order; a bad token is the HTTP endpoint's 401 before any stream; an expiring token and a
sign-out end the stream, as they close a websocket.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.settings import Settings
from services.auth.revocation import RevocationRequest
from tests.conftest import Issuer
from tests.support.documents import CHANGES, LIFECYCLE
from tests.test_subscriptions_clients import create, gateway, node_subscriber, until

EVENT_STREAM = {"Accept": "text/event-stream"}


async def test_the_graphql_sse_client_receives_the_whole_lifecycle_in_order(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with gateway(settings, engine) as (base, runtime):
        process = await node_subscriber("graphql-sse", base, issuer.token("viewer"), CHANGES)
        try:
            await until(lambda: runtime.services.hub.subscribers == 1, "the stream's subscription")
            instance_id = await create(base, issuer, "sse-vm")
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines[0] == {"connected": "graphql-sse"}
    changes = [line["result"]["data"]["instanceStatusChanges"] for line in lines[1:]]
    assert [change["instance"] for change in changes] == [{"id": instance_id, "name": "sse-vm"}] * 4
    assert [change["to"] for change in changes] == LIFECYCLE


async def test_a_bad_token_is_refused_before_any_stream(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with gateway(settings, engine) as (base, _), httpx.AsyncClient(base_url=base) as http:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = await http.post(
                "/graphql", json={"query": CHANGES}, headers={**EVENT_STREAM, **headers}
            )
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("application/json")
            assert "WWW-Authenticate" in response.headers


async def test_the_stream_ends_when_the_token_expires_and_errors_arrive_as_next(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with gateway(settings, engine) as (base, runtime), httpx.AsyncClient(base_url=base) as http:
        headers = {**EVENT_STREAM, "Authorization": f"Bearer {issuer.token('viewer', ttl=2)}"}
        async with http.stream("POST", "/graphql", json={"query": CHANGES}, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            body = b"".join([chunk async for chunk in response.aiter_bytes()])  # ends by itself
        assert b"event: next" not in body
        assert b"event: complete" not in body
        assert runtime.services.hub.subscribers == 0
        headers["Authorization"] = f"Bearer {issuer.token('viewer')}"
        refused = await http.post("/graphql", json={"query": "subscription { nope }"}, headers=headers)
        events = refused.text.split("\n\n")
        assert events[0].startswith("event: next\ndata: ")
        assert json.loads(events[0].removeprefix("event: next\ndata: "))["errors"]
        assert events[1] == "event: complete\ndata:"


async def test_a_sign_out_ends_the_streams_of_that_user_only(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with gateway(settings, engine) as (base, runtime), httpx.AsyncClient(base_url=base) as http:
        leaving = {**EVENT_STREAM, "Authorization": f"Bearer {issuer.token('viewer', sub='leaving')}"}
        staying = {**EVENT_STREAM, "Authorization": f"Bearer {issuer.token('viewer', sub='staying')}"}
        async with (
            http.stream("POST", "/graphql", json={"query": CHANGES}, headers=leaving) as ended,
            http.stream("POST", "/graphql", json={"query": CHANGES}, headers=staying) as kept,
        ):
            await until(lambda: runtime.services.hub.subscribers == 2, "both streams' subscriptions")
            now = datetime.now(UTC)
            revocations = runtime.revocations
            assert revocations is not None
            request = RevocationRequest(
                "leaving", None, None, now, revocations.expiry(now), "backchannel-logout"
            )
            await revocations.revoke(request)
            assert b"".join([chunk async for chunk in ended.aiter_bytes()]) == b""  # ends by itself
            assert runtime.services.hub.subscribers == 1
            assert not kept.is_closed
