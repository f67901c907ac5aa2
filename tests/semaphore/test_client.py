"""SemaphoreClient against the emulated Semaphore over real sockets: reads, starts, retries, faults."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from services.semaphore.client import SemaphoreClient
from services.semaphore.errors import SemaphoreNotFound, SemaphoreRejected, SemaphoreUnavailable
from services.semaphore.model import START_KEY_VAR, TaskStatus
from tests.peers.semaphore_api import SemaphoreEmulator
from tests.semaphore.conftest import TEMPLATE_ID, make_client

INSTANCE_VARS = {"instance_id": "3f1c", "ip_address": "10.20.0.5", "hostname": "vm-3f1c"}


async def test_start_read_and_output(semaphore: SemaphoreEmulator, client: SemaphoreClient) -> None:
    started = await client.start_task(INSTANCE_VARS, start_key="3f1c:4")

    assert started.status == TaskStatus.WAITING
    assert started.template_id == TEMPLATE_ID
    assert not started.is_final
    assert started.created is not None
    (post,) = semaphore.requests_to("start")
    body = post.json()
    assert body["template_id"] == TEMPLATE_ID
    assert isinstance(body["environment"], str)
    assert json.loads(body["environment"]) == {**INSTANCE_VARS, START_KEY_VAR: "3f1c:4"}
    assert post.headers["authorization"] == f"Bearer {semaphore.token}"

    semaphore.advance(started.id, "running", output="PLAY [configure]")
    running = await client.get_task(started.id)
    assert running.status == "running"
    assert running.start is not None
    assert running.end is None

    semaphore.advance(started.id, "success", output="PLAY RECAP ok=3")
    done = await client.get_task(started.id)
    assert done.is_final
    assert done.outcome == "success"
    assert done.end is not None
    assert done.environment_vars()["hostname"] == "vm-3f1c"
    assert await client.get_output(started.id) == "PLAY [configure]\nPLAY RECAP ok=3"


async def test_bad_token_is_rejected_without_retry(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore, token="wrong") as client:
        with pytest.raises(SemaphoreRejected) as raised:
            await client.get_task(1)
        with pytest.raises(SemaphoreRejected):
            await client.start_task(INSTANCE_VARS)
    assert raised.value.status_code == 401
    assert [r.status for r in semaphore.requests] == [401, 401]
    assert semaphore.tasks == {}


async def test_unknown_task_and_project_are_not_found(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore) as client:
        with pytest.raises(SemaphoreNotFound):
            await client.get_task(4242)
    async with make_client(semaphore, project_id=99) as client:
        with pytest.raises(SemaphoreNotFound) as raised:
            await client.get_output(1)
    assert raised.value.status_code == 404


async def test_unknown_template_is_rejected(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore, template_id=99) as client:
        with pytest.raises(SemaphoreRejected) as raised:
            await client.start_task(INSTANCE_VARS)
    assert raised.value.status_code == 400
    assert len(semaphore.requests_to("start")) == 1


async def test_reads_recover_from_5xx(semaphore: SemaphoreEmulator, client: SemaphoreClient) -> None:
    task = await client.start_task(INSTANCE_VARS)
    semaphore.fail_next(2, status=502, route="get")

    read = await client.get_task(task.id)

    assert read.id == task.id
    assert [r.status for r in semaphore.requests_to("get")] == [502, 502, 200]


async def test_start_retried_after_500_before_work_starts_one_task(
    semaphore: SemaphoreEmulator, client: SemaphoreClient
) -> None:
    semaphore.fail_next(2, status=500, route="start")

    task = await client.start_task(INSTANCE_VARS, start_key="k1")

    assert len(semaphore.starts(instance_id="3f1c")) == 1
    assert semaphore.tasks[task.id].environment_vars()[START_KEY_VAR] == "k1"
    assert [r.status for r in semaphore.requests_to("start")] == [500, 500, 201]


async def test_start_after_500_that_queued_the_task_returns_it(
    semaphore: SemaphoreEmulator, client: SemaphoreClient
) -> None:
    semaphore.fail_next(1, status=500, route="start", after_work=True)

    task = await client.start_task(INSTANCE_VARS, start_key="k2")

    (only,) = semaphore.starts(instance_id="3f1c")
    assert task.id == only.id
    assert [r.status for r in semaphore.requests_to("start")] == [500]
    assert len(semaphore.requests_to("last")) == 1


async def test_start_whose_answer_hangs_is_found_not_repeated(semaphore: SemaphoreEmulator) -> None:
    semaphore.hang_next(1, route="start", after_work=True)
    async with make_client(semaphore, timeout=0.3) as client:
        task = await client.start_task(INSTANCE_VARS, start_key="k3")

    (only,) = semaphore.starts(instance_id="3f1c")
    assert task.id == only.id
    assert len(semaphore.requests_to("start")) == 1


async def test_start_when_lookup_finds_nothing_posts_again(semaphore: SemaphoreEmulator) -> None:
    # The first POST hangs before any work; the lookup finds no task, so a second POST is right.
    semaphore.hang_next(1, route="start")
    async with make_client(semaphore, timeout=0.3) as client:
        task = await client.start_task(INSTANCE_VARS, start_key="k4")

    assert [t.id for t in semaphore.starts(instance_id="3f1c")] == [task.id]
    assert [r.status for r in semaphore.requests_to("start")] == [None, 201]
    assert len(semaphore.requests_to("last")) == 1


async def test_start_retried_after_429_without_lookup(
    semaphore: SemaphoreEmulator, client: SemaphoreClient
) -> None:
    semaphore.fail_next(1, status=429, route="start")

    await client.start_task(INSTANCE_VARS)

    assert len(semaphore.tasks) == 1
    assert semaphore.requests_to("last") == []


async def test_same_start_key_finds_earlier_task(
    semaphore: SemaphoreEmulator, client: SemaphoreClient
) -> None:
    first = await client.start_task(INSTANCE_VARS, start_key="3f1c:4")
    other = await client.start_task({"instance_id": "other"}, start_key="other:1")

    # A gateway restarted mid-start asks before starting again.
    async with make_client(semaphore) as restarted:
        assert (await restarted.find_task("3f1c:4")) == await restarted.get_task(first.id)
        assert (await restarted.find_task("other:1") or other).id == other.id
        assert await restarted.find_task("never-started") is None


async def test_find_task_ignores_other_templates(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore, project_id=2, template_id=8) as other_template:
        await other_template.start_task(INSTANCE_VARS, start_key="shared")
    async with make_client(semaphore, project_id=2, template_id=9) as ours:
        assert await ours.find_task("shared") is None


async def test_hanging_server_gives_unavailable_in_bounded_time(semaphore: SemaphoreEmulator) -> None:
    semaphore.hang_next(10, route="get")
    async with make_client(semaphore, timeout=0.2, attempts=3) as client:
        async with asyncio.timeout(5):  # 3 x 0.2 s plus backoff; far below this bound
            with pytest.raises(SemaphoreUnavailable):
                await client.get_task(1)
    assert len(semaphore.requests_to("get")) == 3


async def test_start_against_hanging_server_creates_nothing(semaphore: SemaphoreEmulator) -> None:
    semaphore.hang_next(10, route="start")
    async with make_client(semaphore, timeout=0.2, attempts=2) as client:
        async with asyncio.timeout(5):
            with pytest.raises(SemaphoreUnavailable):
                await client.start_task(INSTANCE_VARS)
    assert semaphore.tasks == {}


async def test_refused_connection_gives_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    client = SemaphoreClient(
        f"http://127.0.0.1:{port}",
        "t",
        project_id=1,
        template_id=7,
        timeout=0.5,
        attempts=2,
        backoff_base=0.01,
    )
    async with client:
        with pytest.raises(SemaphoreUnavailable, match="ConnectError"):
            await client.start_task(INSTANCE_VARS)


async def test_start_key_in_environment_must_agree(client: SemaphoreClient) -> None:
    with pytest.raises(ValueError, match=START_KEY_VAR):
        await client.start_task({START_KEY_VAR: "a"}, start_key="b")


@pytest.mark.parametrize("suffix", ["", "/", "/api", "/api/"])
async def test_base_url_with_or_without_api(semaphore: SemaphoreEmulator, suffix: str) -> None:
    async with make_client(semaphore, url=semaphore.url + suffix) as client:
        task = await client.start_task(INSTANCE_VARS)
    assert semaphore.requests_to("start")[0].path == "/api/project/1/tasks"
    assert task.id in semaphore.tasks
