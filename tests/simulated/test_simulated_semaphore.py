"""SimulatedSemaphore driven as the lifecycle drives Semaphore: start by key, find, poll, read the log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from services.instances.ports import TaskRunner
from services.semaphore.errors import SemaphoreNotFound, SemaphoreUnavailable
from services.semaphore.model import START_KEY_VAR, SemaphoreTask
from services.semaphore.poller import PollTimedOut, poll_task
from services.simulated import SimulatedSemaphore
from tests.simulated.support import STEP


@pytest.fixture
async def semaphore() -> AsyncIterator[SimulatedSemaphore]:
    async with SimulatedSemaphore(step_delay=STEP, template_id=7) as simulated:
        yield simulated


def environment(name: str = "web-1", instance_id: str | None = None) -> dict[str, str]:
    return {
        "instance_id": instance_id or str(uuid.uuid4()),
        "name": name,
        "hostname": f"{name}.opencsp.internal",
        "ip_address": "10.42.1.2",
    }


async def finished(semaphore: SimulatedSemaphore, task_id: int) -> SemaphoreTask:
    result = await poll_task(semaphore, task_id, within=5, min_interval=STEP, max_interval=STEP * 4)
    assert not isinstance(result, PollTimedOut)
    return result


async def test_a_task_runs_to_success_with_the_playbook_log(semaphore: SimulatedSemaphore) -> None:
    env = environment()
    started = await semaphore.start_task(env, start_key="inst-1:v3")
    assert started.status == "waiting"
    assert started.template_id == 7
    assert started.environment_vars() == {**env, START_KEY_VAR: "inst-1:v3"}

    task = await finished(semaphore, started.id)
    assert task.status == "success"
    assert task.outcome == "success"
    assert semaphore.status_history(task.id) == ["waiting", "starting", "running", "success"]
    assert task.created is not None
    assert task.start is not None
    assert task.end is not None
    assert task.created <= task.start <= task.end
    log = await semaphore.get_output(task.id)
    assert "TASK [otel_collector : Install the collector (Debian family)]" in log
    assert "TASK [hardening : Harden sshd (keys only, no root, few tries)]" in log
    assert "changed: [web-1.opencsp.internal] => (item=otelcol-contrib.service)" in log
    assert "failed=0" in log.splitlines()[-2]


async def test_a_start_key_finds_and_deduplicates_the_task(semaphore: SimulatedSemaphore) -> None:
    env = environment()
    first = await semaphore.start_task(env, start_key="inst-2:v1")
    again = await semaphore.start_task(env, start_key="inst-2:v1")
    assert again.id == first.id
    found = await semaphore.find_task("inst-2:v1")
    assert found is not None
    assert found.id == first.id
    assert await semaphore.find_task("inst-2:v2") is None
    other = await semaphore.start_task(env)  # no key: a fresh one, a new task
    assert other.id != first.id
    assert other.environment_vars()[START_KEY_VAR]
    same = await semaphore.start_task({**env, START_KEY_VAR: "inst-2:v1"}, start_key="inst-2:v1")
    assert same.id == first.id
    with pytest.raises(ValueError, match=START_KEY_VAR):
        await semaphore.start_task({**env, START_KEY_VAR: "one"}, start_key="another")


async def test_fail_prefix_errors_the_first_attempt_only(semaphore: SimulatedSemaphore) -> None:
    env = environment("fail-conf-db")
    first = await finished(semaphore, (await semaphore.start_task(env, start_key="k:1")).id)
    assert first.status == "error"
    assert first.outcome == "failure"
    assert semaphore.status_history(first.id) == ["waiting", "starting", "running", "error"]
    log = await semaphore.get_output(first.id)
    assert "fatal: [fail-conf-db.opencsp.internal]: FAILED!" in log
    assert "TASK [gateway_notify : Post the signed task hint to the gateway]" in log
    assert "failed=1" in log.splitlines()[-2]

    retry = await finished(semaphore, (await semaphore.start_task(env, start_key="k:2")).id)
    assert retry.status == "success"
    other_instance = environment("fail-conf-cache")
    assert (await finished(semaphore, (await semaphore.start_task(other_instance)).id)).status == "error"


async def test_without_a_limit_runs_fail_until_healed() -> None:
    async with SimulatedSemaphore(step_delay=STEP, fail_attempts=None) as semaphore:
        env = environment("fail-conf-db")
        for _ in range(2):
            assert (await finished(semaphore, (await semaphore.start_task(env)).id)).status == "error"
        semaphore.heal(env["instance_id"])
        assert (await finished(semaphore, (await semaphore.start_task(env)).id)).status == "success"


async def test_an_unknown_task_is_not_found(semaphore: SimulatedSemaphore) -> None:
    with pytest.raises(SemaphoreNotFound) as missing:
        await semaphore.get_task(404)
    assert missing.value.status_code == 404
    with pytest.raises(SemaphoreNotFound):
        await semaphore.get_output(404)


async def test_on_finished_hints_each_task_once() -> None:
    hints: list[int] = []
    arrived = asyncio.Event()

    async def hint(task_id: int) -> None:
        hints.append(task_id)
        arrived.set()

    async with SimulatedSemaphore(step_delay=STEP, on_finished=hint) as semaphore:
        task = await semaphore.start_task(environment())
        async with asyncio.timeout(5):
            await arrived.wait()
        assert (await semaphore.get_task(task.id)).is_final
        await asyncio.sleep(STEP * 3)
    assert hints == [task.id]


async def test_aclose_leaves_no_task_running() -> None:
    before = len(asyncio.all_tasks())
    semaphore = SimulatedSemaphore(step_delay=10.0)  # every run is mid-way when closed
    for index in range(4):
        await semaphore.start_task(environment(f"vm-{index}"))
    assert semaphore.running_tasks == 4
    assert len(asyncio.all_tasks()) == before + 4
    await semaphore.aclose()
    assert semaphore.running_tasks == 0
    assert len(asyncio.all_tasks()) == before
    with pytest.raises(SemaphoreUnavailable):
        await semaphore.get_task(1)


def test_it_is_a_task_runner() -> None:
    runner: TaskRunner = SimulatedSemaphore()
    assert isinstance(runner, SimulatedSemaphore)


async def test_the_actions_template_runs_and_fail_act_fails_its_first_action(
    semaphore: SimulatedSemaphore,
) -> None:
    for name, outcomes in (("web-9", ["success", "success"]), ("fail-act-9", ["error", "success"])):
        instance_id = str(uuid.uuid4())
        for attempt, outcome in enumerate(outcomes):
            env = environment(name, instance_id) | {"action": "reboot"}
            started = await semaphore.start_task(
                env, start_key=f"{instance_id}:{attempt}:reboot", template_id=semaphore.actions_template_id
            )
            assert started.template_id == semaphore.actions_template_id
            assert (await finished(semaphore, started.id)).status == outcome
    # The post-provisioning template of a fail-act instance is not affected.
    plain = await semaphore.start_task(environment("fail-act-10"), start_key="k-10")
    assert (await finished(semaphore, plain.id)).status == "success"
    with pytest.raises(SemaphoreNotFound):
        await semaphore.start_task(environment(), start_key="k-11", template_id=99)
