"""Waiting for one Semaphore task to end: a bounded poll with backoff that a webhook hint can wake.

The hint is only a nudge: ``wake()`` makes the next read happen at once, and the status read from
Semaphore decides. Lost hints cost latency only, since the poll keeps reading on its own schedule,
slower the longer nothing changes. Cancelling the awaiting task stops the poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Protocol

from services.semaphore.errors import SemaphoreRejected, SemaphoreUnavailable
from services.semaphore.model import SemaphoreTask

logger = logging.getLogger(__name__)


class TaskReader(Protocol):
    """What the poller needs; the real client and dev mode's simulated Semaphore both provide it."""

    async def get_task(self, task_id: int) -> SemaphoreTask: ...


@dataclass(frozen=True, slots=True)
class PollTimedOut:
    """No final status before the deadline; ``last`` is the newest task read, if any read worked."""

    task_id: int
    last: SemaphoreTask | None


class TaskPoller:
    """Polls ``task_id`` until a final status or ``within`` seconds have passed.

    Intervals start at ``min_interval``, double up to ``max_interval`` while the status stays the same,
    and fall back to ``min_interval`` when it changes or a hint arrives. Transient failures
    (SemaphoreUnavailable) are logged and polled through; a 4xx (e.g. the task was deleted) is raised.
    """

    def __init__(
        self,
        reader: TaskReader,
        task_id: int,
        *,
        within: float,
        min_interval: float = 1.0,
        max_interval: float = 30.0,
    ) -> None:
        if min_interval <= 0 or max_interval < min_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self.task_id = task_id
        self._reader = reader
        self._within = within
        self._min = min_interval
        self._max = max_interval
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Read again now (a verified webhook hint for this task arrived)."""
        self._woken.set()

    async def wait(self) -> SemaphoreTask | PollTimedOut:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._within
        interval = self._min
        last: SemaphoreTask | None = None
        while True:
            self._woken.clear()
            try:
                task = await asyncio.wait_for(self._reader.get_task(self.task_id), deadline - loop.time())
            except (TimeoutError, SemaphoreUnavailable) as exc:
                if isinstance(exc, SemaphoreUnavailable):
                    logger.warning("semaphore task %s: read failed, polling on: %s", self.task_id, exc)
                task = None
            except SemaphoreRejected:
                raise
            if task is not None:
                if task.is_final:
                    return task
                changed = last is None or task.status != last.status
                last = task
                interval = self._min if changed else min(self._max, interval * 2)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return PollTimedOut(self.task_id, last)
            pause = min(remaining, interval * random.uniform(0.8, 1.0))
            if await self._sleep_or_wake(pause):
                interval = self._min

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """True when woken by a hint before ``seconds`` passed."""
        try:
            await asyncio.wait_for(self._woken.wait(), seconds)
        except TimeoutError:
            return False
        return True


async def poll_task(
    reader: TaskReader,
    task_id: int,
    *,
    within: float,
    min_interval: float = 1.0,
    max_interval: float = 30.0,
) -> SemaphoreTask | PollTimedOut:
    """One-shot form of TaskPoller for callers that need no hints."""
    poller = TaskPoller(reader, task_id, within=within, min_interval=min_interval, max_interval=max_interval)
    return await poller.wait()
