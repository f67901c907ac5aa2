"""Observability: /metrics (on its own port) after real traffic, request ids, redacted JSON logs, traces."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.bootstrap import Runtime
from gateway.observability.logs import configure_logging, redact
from gateway.settings import Settings
from tests.conftest import AppFactory, Issuer
from tests.support.servers import serve, serve_gateway

CATALOG = "query Catalog { catalog { flavors { name } } }"
CREATE = """mutation Order {
  createInstance(input: {name: "vm-1", flavor: "small", image: "debian-12"}) { instance { id } }
}"""
DELETE = "mutation Delete($id: ID!) { deleteInstance(id: $id) { userErrors { code } } }"


@pytest.fixture
async def metrics(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the metrics listener (OPENCSP_METRICS_PORT), not of the public app."""
    transport = httpx.ASGITransport(app=app.state.metrics_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway-metrics") as client:
        yield client


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by name and labels (`client` talks to the metrics listener)."""
    response = await client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_and_operations_are_counted(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, metrics: httpx.AsyncClient
) -> None:
    assert (await client.post("/graphql", json={"query": CATALOG})).status_code == 200
    assert (
        await client.post("/graphql", json={"query": "{ catalog { flavors { name } } }"})
    ).status_code == 200
    assert (await client.post("/graphql", json={"query": "query Broken { nope }"})).status_code == 200
    assert (await anonymous.post("/graphql", json={"query": CATALOG})).status_code == 401

    samples = await scrape(metrics)
    http = "opencsp_http_requests_total"
    assert value(samples, http, route="/graphql", method="POST", status="200") == 3
    assert value(samples, http, route="/graphql", method="POST", status="401") == 1
    operations = "opencsp_graphql_operations_total"
    # Without a manifest every document is ad hoc: clients' names never become labels.
    assert value(samples, operations, operation="adhoc", outcome="ok") == 2
    assert value(samples, operations, operation="adhoc", outcome="request_error") == 1
    assert value(samples, operations, operation="anonymous", outcome="unauthenticated") == 1
    latency = "opencsp_graphql_operation_duration_seconds"
    assert value(samples, f"{latency}_count", operation="adhoc") == 3  # the unauthenticated ran nothing
    assert value(samples, f"{latency}_bucket", operation="adhoc", le="+Inf") == 3
    assert (
        value(
            samples,
            "opencsp_http_request_duration_seconds_bucket",
            route="/graphql",
            method="POST",
            le="+Inf",
        )
        == 4
    )


async def test_unknown_paths_share_one_label(
    anonymous: httpx.AsyncClient, metrics: httpx.AsyncClient
) -> None:
    for path in ("/a", "/b/c", "/d?x=1"):
        assert (await anonymous.get(path)).status_code == 404
    samples = await scrape(metrics)
    assert value(samples, "opencsp_http_requests_total", route="unmatched", method="GET", status="404") == 3
    assert not [key for key in samples if ("route", "/a") in key[1]]


async def test_transitions_are_counted_by_status_reached(
    client: httpx.AsyncClient, metrics: httpx.AsyncClient
) -> None:
    body = (await client.post("/graphql", json={"query": CREATE})).json()
    instance_id = body["data"]["createInstance"]["instance"]["id"]
    deleted = (await client.post("/graphql", json={"query": DELETE, "variables": {"id": instance_id}})).json()
    assert deleted["data"]["deleteInstance"]["userErrors"] == [], deleted

    samples = await scrape(metrics)
    assert value(samples, "opencsp_instance_transitions_total", to_status="PENDING") == 1
    assert value(samples, "opencsp_instance_transitions_total", to_status="DELETING") == 1
    assert value(samples, "opencsp_graphql_operations_total", operation="adhoc", outcome="ok") == 2


async def test_cluster_watch_is_read_at_scrape_time(metrics: httpx.AsyncClient, runtime: Runtime) -> None:
    health = runtime.watch_health
    health.relists, health.reconnects, health.connected = 3, 2, True
    samples = await scrape(metrics)
    assert value(samples, "opencsp_cluster_watch_relists_total") == 3
    assert value(samples, "opencsp_cluster_watch_reconnects_total") == 2
    assert value(samples, "opencsp_cluster_watch_connected") == 1


async def test_jwks_calls_are_timed_and_failures_counted(
    metrics: httpx.AsyncClient, runtime: Runtime, issuer: Issuer
) -> None:
    before = await scrape(metrics)
    assert await runtime.refresh_keys()
    issuer.server.status = 503
    await runtime.refresh_keys()

    samples = await scrape(metrics)
    started = "opencsp_upstream_requests_started_total"
    assert value(samples, started, peer="jwks") - value(before, started, peer="jwks") >= 2
    responses = "opencsp_upstream_responses_total"
    assert value(samples, responses, peer="jwks", status="2xx") > value(
        before, responses, peer="jwks", status="2xx"
    )
    assert value(samples, responses, peer="jwks", status="5xx") >= 1
    assert value(samples, "opencsp_upstream_request_duration_seconds_count", peer="jwks") >= 2


async def test_metrics_are_served_on_their_own_port_only(app: Starlette, settings: Settings) -> None:
    """As `serve` runs it: /metrics is unknown on the public port; the metrics port serves nothing else."""
    async with (
        serve_gateway(app, settings) as (public, metrics_url),
        httpx.AsyncClient(base_url=public) as http,
        httpx.AsyncClient(base_url=metrics_url) as scraper,
    ):
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 404
        samples = await scrape(scraper)
        assert (
            value(samples, "opencsp_http_requests_total", route="/healthz", method="GET", status="200") == 1
        )
        assert (
            value(samples, "opencsp_http_requests_total", route="unmatched", method="GET", status="404") == 1
        )
        for path in ("/graphql", "/healthz", "/readyz", "/webhooks/semaphore"):
            assert (await scraper.get(path)).status_code == 404, path
        # Scrapes measure the scraper only: they are not counted as requests.
        again = await scrape(scraper)
        assert not [key for key in again if ("route", "/metrics") in key[1]]


async def test_metrics_can_be_switched_off(make_app: AppFactory, settings: Settings) -> None:
    off = await make_app(metrics=False)
    assert off.state.metrics_app is None
    async with serve_gateway(off, settings) as urls, httpx.AsyncClient(base_url=urls[0]) as http:
        assert len(urls) == 1  # no metrics listener at all
        assert (await http.get("/metrics")).status_code == 404


def test_the_metrics_port_is_never_the_public_port(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="metrics_port must differ from port"):
        Settings(**{**settings.model_dump(), "port": 9000, "metrics_port": 9000, "_env_file": None})
    Settings(
        **{**settings.model_dump(), "port": 9000, "metrics_port": 9000, "metrics": False, "_env_file": None}
    )


async def test_websockets_and_subscriptions_are_gauged(
    app: Starlette, settings: Settings, issuer: Issuer
) -> None:
    import websockets

    async with (
        serve_gateway(app, settings) as (url, metrics_url),
        httpx.AsyncClient(base_url=metrics_url) as http,
    ):
        ws_url = url.replace("http", "ws") + "/graphql"
        async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
            await socket.send(json.dumps({"type": "connection_init", "payload": issuer.headers("admin")}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            subscribe = {"query": "subscription Watch { instanceStatusChanges { to } }"}
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            samples = await until(http, lambda s: value(s, "opencsp_graphql_subscriptions") == 1)
            assert value(samples, "opencsp_websocket_connections") == 1
        await until(http, lambda s: value(s, "opencsp_websocket_connections") == 0)
        samples = await until(http, lambda s: value(s, "opencsp_graphql_subscriptions") == 0)
        assert value(samples, "opencsp_graphql_operations_total", operation="adhoc", outcome="ok") == 1


async def until(
    http: httpx.AsyncClient, condition: Any
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape until `condition` holds: the server learns of a closed socket a moment after the client."""
    for _ in range(500):
        samples = await scrape(http)
        if condition(samples):
            return samples
        await asyncio.sleep(0.01)
    raise AssertionError("the metric never reached the expected value")


# Request ids.


async def test_a_sane_request_id_is_echoed(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/healthz", headers={"X-Request-ID": "checkout-42.a"})
    assert response.headers["x-request-id"] == "checkout-42.a"


async def test_other_request_ids_are_replaced(anonymous: httpx.AsyncClient) -> None:
    for given in (None, "", "has spaces", "x" * 200, "new\x7fline"):
        headers = {} if given is None else {"X-Request-ID": given}
        generated = (await anonymous.get("/healthz", headers=headers)).headers["x-request-id"]
        assert generated != given
        assert len(generated) == 32
        assert int(generated, 16) >= 0


# Logs.


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's logging as `serve` sets it up, into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    uvicorn_saved = {
        n: (lg.handlers[:], lg.propagate, lg.level)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access")
        for lg in [logging.getLogger(n)]
    }
    stream = io.StringIO()
    configure_logging(format="json", level="DEBUG", stream=stream)
    yield stream
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.level = saved[0]
    for handler in saved[1]:
        root.addHandler(handler)
    for name, (handlers, propagate, level) in uvicorn_saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate, logger.level = handlers, propagate, level


@pytest.fixture
async def logged_server(app: Starlette, json_logs: io.StringIO) -> AsyncIterator[str]:
    """The app under uvicorn exactly as `serve` runs it: uvicorn's loggers go through ours."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="info", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await asyncio.wait_for(task, timeout=10)


async def test_no_token_reaches_a_log_line(
    logged_server: str, json_logs: io.StringIO, issuer: Issuer
) -> None:
    token = issuer.token("admin")
    async with httpx.AsyncClient(base_url=logged_server) as http:
        ok = await http.post(
            "/graphql",
            json={"query": CATALOG},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "with-token"},
        )
        assert ok.status_code == 200
        # A client that puts its token in the URL, and one whose token is refused.
        await http.get("/graphql", params={"query": "{ __typename }", "access_token": token})
        await http.get(
            "/graphql", params={"query": "{ __typename }"}, headers={"Authorization": f"Bearer {token}x"}
        )
    logger = logging.getLogger("gateway.test")
    logger.warning("a careless line: Authorization: Bearer %s", token)
    try:
        raise ValueError(f"token {token} rejected")
    except ValueError:
        logger.exception("a careless traceback")

    output = json_logs.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert token not in output
    for part in token.split("."):
        assert part not in output
    access = [
        line
        for line in lines
        if line["logger"] == "uvicorn.access" and line.get("request_id") == "with-token"
    ]
    assert len(access) == 1
    assert access[0]["sub"] == "admin-1"
    assert access[0]["level"] == "INFO"
    assert {"time", "level", "logger", "message"} <= set(access[0])
    traceback = next(line for line in lines if line["message"] == "a careless traceback")
    assert "ValueError" in traceback["exception"]
    assert "[REDACTED JWT]" in traceback["exception"]


def test_redaction_keeps_the_rest_of_the_line() -> None:
    assert (
        redact("GET /x?token=abc&page=2 sent Bearer xyz.")
        == "GET /x?token=[REDACTED]&page=2 sent Bearer [REDACTED]"
    )
    assert (
        redact('{"client_secret": "s3cr3t", "name": "vm-1"}')
        == '{"client_secret": "[REDACTED]", "name": "vm-1"}'
    )


# Traces.


class Collector:
    """A real OTLP/HTTP endpoint on loopback: counts the batches the exporter posts."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            assert request.headers["content-type"] == "application/x-protobuf"
            self.batches.append(await request.body())
            return Response(b"", media_type="application/x-protobuf")

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])


async def test_a_request_is_traced_from_http_to_the_operation(make_app: AppFactory, issuer: Issuer) -> None:
    collector = Collector()
    async with serve(collector.app(), lifespan="off") as collector_url:
        app = await make_app(otlp_endpoint=collector_url)
        observability = app.state.observability
        memory = InMemorySpanExporter()
        observability.tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=issuer.headers()
        ) as c:
            assert (await c.post("/graphql", json={"query": CATALOG})).status_code == 200
        spans: tuple[ReadableSpan, ...] = memory.get_finished_spans()
        http = [s for s in spans if s.kind is SpanKind.SERVER and s.name.startswith("POST /graphql")]
        operation = [s for s in spans if s.name == "GraphQL Query: Catalog"]
        assert len(http) == 1
        assert len(operation) == 1
        assert operation[0].context.trace_id == http[0].context.trace_id
        assert operation[0].parent is not None
        # Spans carry neither the token nor resolver arguments.
        assert not any("authorization" in str(dict(s.attributes or {})).lower() for s in spans)
        await asyncio.to_thread(observability.shutdown)  # flushes the batch to the collector
    assert collector.batches


def test_tracing_is_not_loaded_without_an_endpoint() -> None:
    code = (
        "import sys, gateway.app, gateway.cli; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
