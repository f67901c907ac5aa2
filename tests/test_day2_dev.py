"""Dev mode's day-2 actions (what `make dev` shows in GraphiQL): the simulated tofu-controller honours
`started` and the sizes, the simulated Semaphore runs the actions template, and a `fail-act…` instance
fails its first action with the instance left ACTIVE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.bootstrap import Runtime
from tests.conftest import Issuer
from tests.support.documents import create_instance
from tests.support.servers import serve

FIELDS = "status powerState task statusReason flavor"


@pytest.fixture
async def live(runtime: Runtime) -> AsyncIterator[str]:
    app: Starlette = create_app(runtime, own_runtime=True)
    async with serve(app) as base:
        yield base


async def until(http: httpx.AsyncClient, instance_id: str, done: Any) -> dict[str, Any]:
    """Poll the instance until `done(instance)`; the timeout guards against a hang only."""
    async with asyncio.timeout(20):
        while True:
            body = (
                await http.post(
                    "/graphql",
                    json={
                        "query": f"query($id: ID!) {{ instance(id: $id) {{ {FIELDS} }} }}",
                        "variables": {"id": instance_id},
                    },
                )
            ).json()
            instance: dict[str, Any] = body["data"]["instance"]
            if done(instance):
                return instance
            await asyncio.sleep(0.02)


async def act(
    http: httpx.AsyncClient, mutation: str, instance_id: str, flavor: str | None = None
) -> dict[str, Any]:
    argument, declared = (", flavor: $flavor", ", $flavor: String!") if flavor else ("", "")
    query = f"mutation($id: ID!{declared}) {{ {mutation}(id: $id{argument}) {{ userErrors {{ code }} }} }}"
    variables = {"id": instance_id, **({"flavor": flavor} if flavor else {})}
    body = (await http.post("/graphql", json={"query": query, "variables": variables})).json()
    payload: dict[str, Any] = body["data"][mutation]
    return payload


async def test_dev_mode_runs_every_action_and_shows_a_failure(live: str, issuer: Issuer) -> None:
    plain = await create_instance(live, issuer, "dev-day2", sub="alice")
    failing = await create_instance(live, issuer, "fail-act-dev", sub="alice")
    async with httpx.AsyncClient(base_url=live, headers=issuer.headers("user", sub="alice")) as http:
        for instance_id in (plain, failing):
            await until(http, instance_id, lambda i: i["status"] == "ACTIVE")
        idle = lambda i: i["task"] is None  # noqa: E731

        steps = [
            ("stopInstance", None, "STOPPED"),
            ("startInstance", None, "RUNNING"),
            ("rebootInstance", None, "RUNNING"),
        ]
        for mutation, flavor, power in [*steps, ("resizeInstance", "medium", "RUNNING")]:
            assert (await act(http, mutation, plain, flavor))["userErrors"] == []
            done = await until(http, plain, idle)
            assert (done["status"], done["powerState"], done["statusReason"]) == (
                "ACTIVE",
                power,
                "ActionSucceeded",
            )
        assert done["flavor"] == "medium"

        assert (await act(http, "stopInstance", failing))["userErrors"] == []
        failed = await until(http, failing, idle)
        assert (failed["status"], failed["powerState"], failed["statusReason"]) == (
            "ACTIVE",
            "UNKNOWN",
            "ActionFailed",
        )
        assert (await act(http, "rebootInstance", failing))["userErrors"] == []
        rebooted = await until(http, failing, idle)
        assert rebooted["statusReason"] == "ActionFailed"  # the actions template's first run fails too
