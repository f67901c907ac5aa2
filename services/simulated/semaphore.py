"""A simulated Ansible Semaphore in memory: dev mode's `TaskRunner`, no Semaphore server needed.

Tasks move waiting → starting → running → success (or error), `step_delay` seconds apart, writing the
log the instance playbook writes. Start keys work as with `SemaphoreClient`: the key is stored in the
task's environment as `START_KEY_VAR` and `find_task(key)` finds the task again after a restart. One
deliberate strengthening: starting again with a key that already has a task returns that task, the
outcome the real client's duplicate guard aims for, so callers should use a new key per attempt.

An environment whose `name` starts with `fail_configuring_prefix` ends in `error` on its first
`fail_attempts` attempts per instance id (None: every attempt until `heal`). `on_finished(task_id)`,
called when a task ends, stands in for the playbook's signed webhook hint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

from services.semaphore.errors import SemaphoreNotFound, SemaphoreUnavailable
from services.semaphore.model import START_KEY_VAR, SemaphoreTask, TaskStatus
from services.simulated.failures import FailurePlan
from services.simulated.playbook import run_log

if TYPE_CHECKING:
    from services.instances.ports import TaskRunner
    from services.semaphore.poller import TaskReader

logger = logging.getLogger(__name__)

OnFinished = Callable[[int], Awaitable[None]]

LAST_TASKS = 200  # what Semaphore's `GET /project/{id}/tasks/last` returns at most


@dataclass
class _Task:
    id: int
    template_id: int
    environment: str
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: str = TaskStatus.WAITING
    start: datetime | None = None
    end: datetime | None = None
    message: str = ""
    output: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=lambda: [TaskStatus.WAITING])

    def snapshot(self) -> SemaphoreTask:
        return SemaphoreTask(
            id=self.id,
            template_id=self.template_id,
            status=self.status,
            created=self.created,
            start=self.start,
            end=self.end,
            message=self.message,
            environment=self.environment,
        )

    def key(self) -> str | None:
        value = json.loads(self.environment).get(START_KEY_VAR)
        return value if isinstance(value, str) else None


class SimulatedSemaphore:
    """One project's template, run by asyncio tasks; `aclose()` cancels every run still going."""

    def __init__(
        self,
        *,
        step_delay: float = 1.0,
        fail_configuring_prefix: str | None = "fail-conf",
        fail_attempts: int | None = 1,
        project_id: int = 1,
        template_id: int = 1,
        actions_template_id: int = 2,
        fail_actions_prefix: str | None = "fail-act",
        on_finished: OnFinished | None = None,
    ) -> None:
        if step_delay < 0:
            raise ValueError("step_delay must be >= 0")
        self.step_delay = step_delay
        self.project_id = project_id
        self.template_id = template_id
        self.actions_template_id = actions_template_id
        self.failures = FailurePlan(fail_configuring_prefix, fail_attempts)
        # Day-2 actions (the actions template): a name with this prefix fails its first action.
        self.action_failures = FailurePlan(fail_actions_prefix, 1)
        self.on_finished = on_finished
        self._tasks: dict[int, _Task] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        runs = list(self._runs)
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    # -- the TaskRunner port ---------------------------------------------------------------------

    async def start_task(
        self, environment: Mapping[str, str], *, start_key: str | None = None, template_id: int | None = None
    ) -> SemaphoreTask:
        """Queue a run with `environment` as its extra vars; a key that already has a task returns it."""
        key = start_key or uuid.uuid4().hex
        existing = environment.get(START_KEY_VAR)
        if existing is not None and existing != key:
            raise ValueError(f"environment already holds {START_KEY_VAR} with another value")
        self._check_open(f"POST /project/{self.project_id}/tasks")
        template = template_id or self.template_id
        if template not in (self.template_id, self.actions_template_id):
            raise SemaphoreNotFound(404, f"template {template} not found")
        found = self._find(key, template)
        if found is not None:
            return found.snapshot()
        name = environment.get("name", "")
        instance = environment.get("instance_id") or name
        plan = self.failures if template == self.template_id else self.action_failures
        fails = plan.next_attempt_fails(name, key=instance)
        task = _Task(
            id=len(self._tasks) + 1,
            template_id=template,
            environment=json.dumps({**environment, START_KEY_VAR: key}, sort_keys=True),
        )
        self._tasks[task.id] = task
        run = asyncio.get_running_loop().create_task(
            self._run(task, run_log(task.id, environment, fails=fails), fails=fails),
            name=f"simulated-semaphore task {task.id}",
        )
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)
        return task.snapshot()

    async def find_task(
        self, start_key: str, *, attempts: int | None = None, template_id: int | None = None
    ) -> SemaphoreTask | None:
        """The newest task started with `start_key` among the last ones Semaphore lists."""
        self._check_open(f"GET /project/{self.project_id}/tasks/last")
        found = self._find(start_key, template_id or self.template_id)
        return found.snapshot() if found is not None else None

    async def get_task(self, task_id: int) -> SemaphoreTask:
        return self._require(task_id, f"GET /project/{self.project_id}/tasks/{task_id}").snapshot()

    async def get_output(self, task_id: int) -> str:
        return "\n".join(
            self._require(task_id, f"GET /project/{self.project_id}/tasks/{task_id}/output").output
        )

    # -- test and dev controls -------------------------------------------------------------------

    def heal(self, name: str) -> None:
        """Let the next runs for `name` (instance name or id) succeed."""
        self.failures.heal(name)

    def status_history(self, task_id: int) -> list[str]:
        """Every status the task has had, in order."""
        task = self._tasks.get(task_id)
        if task is None:
            raise SemaphoreNotFound(404, f"task {task_id} not found")
        return list(task.statuses)

    @property
    def running_tasks(self) -> int:
        return sum(not run.done() for run in self._runs)

    # -- the run ---------------------------------------------------------------------------------

    async def _run(self, task: _Task, chunks: list[list[str]], *, fails: bool) -> None:
        preparing, *running, closing = chunks
        await asyncio.sleep(self.step_delay)
        task.start = datetime.now(UTC)
        self._advance(task, TaskStatus.STARTING, preparing)
        await asyncio.sleep(self.step_delay)
        self._advance(task, TaskStatus.RUNNING, running[0])
        for chunk in running[1:]:
            await asyncio.sleep(self.step_delay)
            task.output.extend(chunk)
        await asyncio.sleep(self.step_delay)
        task.end = datetime.now(UTC)
        self._advance(task, TaskStatus.ERROR if fails else TaskStatus.SUCCESS, closing)
        if self.on_finished is not None:
            try:
                await self.on_finished(task.id)
            except Exception:
                logger.exception("simulated semaphore: the on_finished hint for task %s failed", task.id)

    @staticmethod
    def _advance(task: _Task, status: TaskStatus, lines: list[str]) -> None:
        task.output.extend(lines)
        task.status = status
        task.statuses.append(status)

    def _find(self, start_key: str, template_id: int) -> _Task | None:
        recent = sorted(self._tasks.values(), key=lambda t: t.id)[-LAST_TASKS:]
        found = [t for t in recent if t.template_id == template_id and t.key() == start_key]
        return found[-1] if found else None

    def _require(self, task_id: int, what: str) -> _Task:
        self._check_open(what)
        task = self._tasks.get(task_id)
        if task is None:
            raise SemaphoreNotFound(404, f"task {task_id} not found")
        return task

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise SemaphoreUnavailable(f"{what} failed: the simulated Semaphore is closed")


if TYPE_CHECKING:

    def _is_a_task_runner(semaphore: SimulatedSemaphore) -> tuple[TaskRunner, TaskReader]:
        return semaphore, semaphore
