"""TaskPoller against the emulated Semaphore: final statuses, deadlines, hints, transient failures."""

from __future__ import annotations

import asyncio

import pytest

from services.semaphore.errors import SemaphoreNotFound
from services.semaphore.model import SemaphoreTask
from services.semaphore.poller import PollTimedOut, TaskPoller, poll_task
from tests.peers.semaphore_api import SemaphoreEmulator
from tests.semaphore.conftest import make_client

FAST = {"min_interval": 0.01, "max_interval": 0.05}


@pytest.mark.parametrize("final", ["success", "error", "stopped"])
async def test_poll_reaches_final_status(semaphore: SemaphoreEmulator, final: str) -> None:
    semaphore.auto(("starting", "running", final), delay=0.02)
    async with make_client(semaphore) as client:
        task = await client.start_task({"instance_id": "i1"})
        result = await poll_task(client, task.id, within=5, **FAST)

    assert isinstance(result, SemaphoreTask)
    assert result.status == final
    assert result.outcome == ("success" if final == "success" else "failure")
    assert len(semaphore.requests_to("get")) >= 2


async def test_poll_times_out_with_last_status(semaphore: SemaphoreEmulator) -> None:
    semaphore.auto(("starting", "running"), delay=0.01)
    async with make_client(semaphore) as client:
        task = await client.start_task({"instance_id": "i1"})
        result = await poll_task(client, task.id, within=0.3, **FAST)

    assert isinstance(result, PollTimedOut)
    assert result.task_id == task.id
    assert result.last is not None
    assert not result.last.is_final
    assert semaphore.tasks[task.id].status != "success"


async def test_poll_times_out_when_semaphore_hangs(semaphore: SemaphoreEmulator) -> None:
    semaphore.hang_next(100, route="get")
    async with make_client(semaphore, timeout=5, attempts=1) as client:
        task = await client.start_task({"instance_id": "i1"})
        async with asyncio.timeout(5):  # the poll's own 0.3 s deadline cuts the hanging read short
            result = await poll_task(client, task.id, within=0.3, **FAST)

    assert result == PollTimedOut(task.id, None)


async def test_poll_reads_through_transient_failures(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore, attempts=1) as client:
        task = await client.start_task({"instance_id": "i1"})
        semaphore.advance(task.id, "success")
        semaphore.fail_next(3, status=503, route="get")
        result = await poll_task(client, task.id, within=5, **FAST)

    assert isinstance(result, SemaphoreTask)
    assert result.status == "success"
    assert [r.status for r in semaphore.requests_to("get")] == [503, 503, 503, 200]


async def test_poll_of_unknown_task_raises(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore) as client:
        with pytest.raises(SemaphoreNotFound):
            await poll_task(client, 999, within=5, **FAST)


async def test_wake_reads_at_once(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore) as client:
        task = await client.start_task({"instance_id": "i1"})
        # Intervals of a minute: only a hint can end this poll within the test's bound.
        poller = TaskPoller(client, task.id, within=120, min_interval=60, max_interval=60)
        waiting = asyncio.create_task(poller.wait())
        while not semaphore.requests_to("get"):
            await asyncio.sleep(0.01)
        semaphore.advance(task.id, "success")
        poller.wake()
        async with asyncio.timeout(5):
            result = await waiting

    assert isinstance(result, SemaphoreTask)
    assert result.status == "success"
    assert len(semaphore.requests_to("get")) == 2


async def test_cancel_stops_the_poll(semaphore: SemaphoreEmulator) -> None:
    async with make_client(semaphore) as client:
        task = await client.start_task({"instance_id": "i1"})
        poller = TaskPoller(client, task.id, within=120, min_interval=60, max_interval=60)
        waiting = asyncio.create_task(poller.wait())
        while not semaphore.requests_to("get"):
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        reads = len(semaphore.requests_to("get"))
        poller.wake()
        await asyncio.sleep(0.05)

    assert len(semaphore.requests_to("get")) == reads == 1


def test_intervals_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        TaskPoller(object(), 1, within=1, min_interval=2, max_interval=1)  # type: ignore[arg-type]
