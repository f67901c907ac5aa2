"""The gateway's client of Ansible Semaphore's task API (Swagger 2.0, basePath ``/api``).

Reads are idempotent and retried with jittered exponential backoff on 5xx, 429, timeouts and
connection errors. Starting a task is not idempotent in Semaphore, so ``start_task`` guards against a
retry starting a second one:

* every start carries a *start key*, put into the task's environment as ``opencsp_start_key``
  (Semaphore returns the environment with each task, in every version);
* a POST that certainly never reached Semaphore (connect error or connect timeout, pool timeout, 429)
  is simply retried;
* after an ambiguous failure (a read/write timeout, a dropped connection, a 5xx: Semaphore may have
  queued the task before failing) the client first lists ``GET /project/{id}/tasks/last`` and returns a
  task of our template whose start key matches, and POSTs again only when there is none;
* callers pass a stable key (e.g. instance id and version) so that even a gateway restart finds the
  task it had started: ``find_task(start_key)``.

A window remains: a POST still being processed when the lookup runs. The lifecycle's compare-and-set
transitions make a second task harmless to the instance's state; it only costs a duplicate playbook run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from services.semaphore.errors import (
    SemaphoreError,
    SemaphoreNotFound,
    SemaphoreProtocolError,
    SemaphoreRejected,
    SemaphoreUnavailable,
)
from services.semaphore.model import START_KEY_VAR, SemaphoreTask

logger = logging.getLogger(__name__)


# Failures after which the request certainly never reached Semaphore's handler.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

T = TypeVar("T")


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix; ``sent`` says if Semaphore may have acted."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class SemaphoreClient:
    """Talks to one Semaphore project and starts one template's tasks.

    ``base_url`` is Semaphore's root URL; ``/api`` is appended unless it is already there.
    ``attempts`` counts every try of one call, the first included.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        project_id: int,
        template_id: int,
        timeout: httpx.Timeout | float = 10.0,
        attempts: int = 4,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        root = base_url.rstrip("/")
        api = root if root.endswith("/api") else f"{root}/api"
        self.project_id = project_id
        self.template_id = template_id
        self._attempts = attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._http = httpx.AsyncClient(
            base_url=api,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The client Semaphore is called with, for the gateway's metrics and tracing hooks."""
        return self._http

    @property
    def _tasks_path(self) -> str:
        return f"/project/{self.project_id}/tasks"

    # -- reads -----------------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> SemaphoreTask:
        data = await self._read_json(f"{self._tasks_path}/{task_id}")
        return SemaphoreTask.from_api(data)

    async def get_output(self, task_id: int) -> str:
        """The task's log, its output lines joined by newlines."""
        data = await self._read_json(f"{self._tasks_path}/{task_id}/output")
        if not isinstance(data, list):
            raise SemaphoreProtocolError("task output is not an array")
        lines = [item.get("output", "") for item in data if isinstance(item, dict)]
        return "\n".join(line for line in lines if isinstance(line, str))

    async def last_tasks(self, *, attempts: int | None = None) -> list[SemaphoreTask]:
        """The project's newest tasks (Semaphore returns up to 200), every template's."""
        data = await self._read_json(f"{self._tasks_path}/last", attempts=attempts)
        if not isinstance(data, list):
            raise SemaphoreProtocolError("task list is not an array")
        return [SemaphoreTask.from_api(item) for item in data]

    async def find_task(
        self, start_key: str, *, attempts: int | None = None, template_id: int | None = None
    ) -> SemaphoreTask | None:
        """The newest task of our template (or `template_id`) started with ``start_key``, if Semaphore
        still lists it."""
        template = template_id or self.template_id
        found = [
            task
            for task in await self.last_tasks(attempts=attempts)
            if task.template_id == template and task.environment_vars().get(START_KEY_VAR) == start_key
        ]
        return max(found, key=lambda task: task.id) if found else None

    async def _read_json(self, path: str, *, attempts: int | None = None) -> Any:
        async def attempt() -> Any:
            try:
                response = await self._http.get(path)
            except httpx.TransportError as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}", sent=True) from exc
            return _json_or_raise(response)

        return await self._with_retries(f"GET {path}", attempt, attempts=attempts)

    # -- start -----------------------------------------------------------------------------------

    async def start_task(
        self, environment: Mapping[str, str], *, start_key: str | None = None, template_id: int | None = None
    ) -> SemaphoreTask:
        """Queue a run of the template (ours, or `template_id`: the day-2 actions template) with
        ``environment`` as its extra vars; at most one per key.

        Without ``start_key`` a fresh one is drawn, which protects this call's own retries only.
        """
        template = template_id or self.template_id
        key = start_key or uuid.uuid4().hex
        existing = environment.get(START_KEY_VAR)
        if existing is not None and existing != key:
            raise ValueError(f"environment already holds {START_KEY_VAR} with another value")
        body = {
            "template_id": template,
            "environment": json.dumps({**environment, START_KEY_VAR: key}, sort_keys=True),
        }
        path = self._tasks_path
        ambiguous = False

        async def attempt() -> SemaphoreTask:
            nonlocal ambiguous
            if ambiguous:
                # The last POST may have queued the task: look before starting another.
                try:
                    # One try only: the outer loop already retries, so time stays bounded.
                    found = await self.find_task(key, attempts=1, template_id=template)
                except SemaphoreRejected:
                    raise
                except SemaphoreError as exc:
                    raise _Retryable(f"looking for an earlier start failed: {exc}", sent=True) from exc
                if found is not None:
                    logger.info("semaphore task %s was already started for key %s", found.id, key)
                    return found
            try:
                response = await self._http.post(path, json=body)
            except _NOT_SENT as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}", sent=False) from exc
            except httpx.TransportError as exc:
                ambiguous = True
                raise _Retryable(f"{type(exc).__name__}: {exc}", sent=True) from exc
            try:
                data = _json_or_raise(response)
            except _Retryable as exc:
                ambiguous = ambiguous or exc.sent
                raise
            return SemaphoreTask.from_api(data)

        try:
            return await self._with_retries(f"POST {path}", attempt)
        except SemaphoreUnavailable:
            if not ambiguous:
                raise
            # One last look, so a task queued by a late answer is not left unknown to the caller.
            try:
                found = await self.find_task(key, attempts=1, template_id=template)
            except SemaphoreError:
                found = None
            if found is None:
                raise
            return found

    # -- retry loop ------------------------------------------------------------------------------

    async def _with_retries(
        self, what: str, attempt: Callable[[], Awaitable[T]], *, attempts: int | None = None
    ) -> T:
        total = attempts or self._attempts
        last = ""
        for number in range(total):
            if number:
                await asyncio.sleep(self._backoff(number))
            try:
                return await attempt()
            except _Retryable as exc:
                last = exc.reason
                logger.warning("semaphore %s failed (attempt %d/%d): %s", what, number + 1, total, last)
        raise SemaphoreUnavailable(f"{what} failed after {total} attempt(s): {last}")

    def _backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(retry-1))], so replicas do not retry in step."""
        return random.uniform(0, min(self._backoff_max, self._backoff_base * 2 ** (retry - 1)))


def _json_or_raise(response: httpx.Response) -> Any:
    status = response.status_code
    if status >= 500 or status == 429:
        # 429 means Semaphore refused before doing anything; a 5xx may come after the work.
        raise _Retryable(f"HTTP {status}", sent=status != 429)
    if status == 404:
        raise SemaphoreNotFound(status, _detail(response))
    if status >= 400:
        raise SemaphoreRejected(status, _detail(response))
    if status < 200 or status >= 300:
        raise SemaphoreProtocolError(f"unexpected HTTP {status}")
    try:
        return response.json()
    except ValueError as exc:
        raise SemaphoreProtocolError(f"answer is not JSON: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase
