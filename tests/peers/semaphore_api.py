"""A test-side Ansible Semaphore that speaks the task API of its spec over a real socket.

It implements what the gateway uses, as ``tests/contracts/semaphore/api-docs.yml`` (Swagger 2.0,
basePath ``/api``) describes it: bearer-token auth, ``POST /project/{project_id}/tasks`` (201 with the
Task), ``GET .../tasks``, ``GET .../tasks/last``, ``GET .../tasks/{task_id}`` and its ``/output``.
Request bodies are validated with JSON Schema built from the spec (400 on bad input); Task objects
carry the spec's fields plus those real Semaphore adds (project_id, created, start, end, message).

Test controls: ``advance`` moves a task through statuses, ``auto`` scripts every new task's statuses
with small delays, ``fail_next`` / ``hang_next`` inject faults (before or after the work is done),
and ``requests`` / ``tasks`` record everything for assertions.

Choices where the spec is silent: an unknown template and an ``environment`` that is not a JSON
object string answer 400 (Semaphore would fail the task later); lists are in chronological order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

SPEC_ENV = "OPENCSP_SEMAPHORE_SPEC"
_DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "contracts" / "semaphore" / "api-docs.yml"

DEFAULT_TOKEN = "test-token"
FINAL = frozenset({"success", "error", "stopped"})
RUNNING = frozenset({"starting", "running", "stopping", "waiting_confirmation", "confirmed"})


# -- the spec as JSON Schema ------------------------------------------------------------------------


@cache
def load_spec() -> dict[str, Any]:
    path = Path(os.environ.get(SPEC_ENV, _DEFAULT_SPEC))
    with path.open(encoding="utf-8") as fh:
        spec: dict[str, Any] = yaml.safe_load(fh)
    return spec


def _with_definitions(schema: Mapping[str, Any]) -> dict[str, Any]:
    # Swagger 2.0 schemas are JSON Schema draft 4 with refs to "#/definitions/...".
    return {**schema, "definitions": load_spec()["definitions"]}


def definition_schema(name: str) -> dict[str, Any]:
    return _with_definitions({"$ref": f"#/definitions/{name}"})


def request_body_schema(path: str, method: str) -> dict[str, Any]:
    operation = load_spec()["paths"][path][method.lower()]
    bodies = [p for p in operation.get("parameters", []) if p.get("in") == "body"]
    if len(bodies) != 1:
        raise KeyError(f"{method} {path} has no single body parameter")
    return _with_definitions(bodies[0]["schema"])


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    """The schema of one documented response, None when it has no body; KeyError if undocumented."""
    response = load_spec()["paths"][path][method.lower()]["responses"][status]
    schema = response.get("schema")
    return _with_definitions(schema) if schema is not None else None


def validate_against(schema: Mapping[str, Any], instance: object) -> None:
    """Raise jsonschema.ValidationError when ``instance`` does not follow ``schema``."""
    jsonschema.Draft4Validator(schema).validate(instance)


# -- state ------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _go_time(value: datetime) -> str:
    """Go's RFC 3339 with nanoseconds, as Semaphore marshals time.Time."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class EmulatedTask:
    id: int
    project_id: int
    template_id: int
    environment: str = ""
    message: str = ""
    playbook: str = ""
    limit: str = ""
    git_branch: str | None = None
    debug: bool = False
    dry_run: bool = False
    diff: bool = False
    status: str = "waiting"
    created: datetime = field(default_factory=_now)
    start: datetime | None = None
    end: datetime | None = None
    output: list[tuple[datetime, str]] = field(default_factory=list)

    def environment_vars(self) -> dict[str, Any]:
        parsed = json.loads(self.environment) if self.environment else {}
        return parsed if isinstance(parsed, dict) else {}

    def to_api(self) -> dict[str, Any]:
        # Field set and omitempty behaviour of Semaphore's db.Task JSON.
        data: dict[str, Any] = {
            "id": self.id,
            "template_id": self.template_id,
            "project_id": self.project_id,
            "status": self.status,
            "debug": self.debug,
            "dry_run": self.dry_run,
            "diff": self.diff,
            "playbook": self.playbook,
            "limit": self.limit,
            "created": _go_time(self.created),
        }
        optional = {
            "environment": self.environment or None,
            "git_branch": self.git_branch,
            "message": self.message or None,
            "start": _go_time(self.start) if self.start else None,
            "end": _go_time(self.end) if self.end else None,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        return data


@dataclass
class RecordedRequest:
    method: str
    path: str
    route: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None while unanswered (or hung)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Fault:
    remaining: int
    status: int | None  # None: hang
    route: str | None
    after_work: bool
    message: str = "injected fault"


class _Answered(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


# -- the server -------------------------------------------------------------------------------------


class SemaphoreEmulator:
    """One Semaphore with ``projects`` (project id → its template ids) and one valid API token."""

    def __init__(
        self, *, token: str = DEFAULT_TOKEN, projects: Mapping[int, Iterable[int]] | None = None
    ) -> None:
        self.token = token
        self.projects = {pid: set(tpls) for pid, tpls in (projects or {1: {7}}).items()}
        self.tasks: dict[int, EmulatedTask] = {}
        self.requests: list[RecordedRequest] = []
        self._next_id = 1
        self._faults: list[_Fault] = []
        self._auto: tuple[tuple[str, ...], float] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._release = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/api/project/{project_id:int}/tasks", self._start, methods=["POST"]),
                Route("/api/project/{project_id:int}/tasks", self._list, methods=["GET"]),
                Route("/api/project/{project_id:int}/tasks/last", self._last, methods=["GET"]),
                Route("/api/project/{project_id:int}/tasks/{task_id:int}", self._get, methods=["GET"]),
                Route(
                    "/api/project/{project_id:int}/tasks/{task_id:int}/output", self._output, methods=["GET"]
                ),
                # What `opencsp-gateway doctor` reads: the liveness probe, the project and its template.
                Route("/api/ping", self._ping, methods=["GET"]),
                Route("/api/project/{project_id:int}/", self._project, methods=["GET"]),
                Route(
                    "/api/project/{project_id:int}/templates/{template_id:int}",
                    self._template,
                    methods=["GET"],
                ),
            ]
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test controls --------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        route: str | None = None,
        after_work: bool = False,
        message: str = "injected fault",
    ) -> None:
        """The next ``count`` requests (of ``route``: start, list, last, get, output) answer ``status``
        with Semaphore's error body, ``{"error": message}``.

        ``after_work`` lets a start create its task first, as a server that fails while answering.
        """
        self._faults.append(_Fault(count, status, route, after_work, message))

    def hang_next(self, count: int = 1, *, route: str | None = None, after_work: bool = False) -> None:
        """The next ``count`` requests never get an answer (until the server stops)."""
        self._faults.append(_Fault(count, None, route, after_work))

    def auto(self, statuses: Sequence[str] = ("starting", "running", "success"), delay: float = 0.01) -> None:
        """Every task created from now on walks through ``statuses``, ``delay`` seconds apart."""
        self._auto = (tuple(statuses), delay)

    def advance(self, task_id: int, status: str, *, output: str | None = None) -> EmulatedTask:
        task = self.tasks[task_id]
        task.status = status
        now = _now()
        if status in RUNNING | FINAL and task.start is None:
            task.start = now
        if status in FINAL:
            task.end = now
        task.output.append((now, output if output is not None else f"status: {status}"))
        return task

    def starts(self, **environment: str) -> list[EmulatedTask]:
        """Tasks created whose environment holds every given key/value (e.g. one instance's starts)."""
        return [
            task
            for task in self.tasks.values()
            if all(task.environment_vars().get(key) == value for key, value in environment.items())
        ]

    def requests_to(self, route: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        self._serving = serving
        for _ in range(500):
            if self._server.started or serving.done():
                break
            await asyncio.sleep(0.01)
        if serving.done() or not self._server.started:
            await serving
            raise RuntimeError("emulated Semaphore did not start")

    async def stop(self) -> None:
        self._release.set()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._server is not None:
            self._server.should_exit = True
            await self._serving

    # -- request handling -----------------------------------------------------------------------

    async def _enter(self, request: Request, record: RecordedRequest) -> None:
        await self._maybe_fault(record, after_work=False)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise _Answered(Response(status_code=401))
        project_id = request.path_params["project_id"]
        if project_id not in self.projects:
            raise _Answered(_error(404, "project not found"))

    async def _maybe_fault(self, record: RecordedRequest, *, after_work: bool) -> None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.after_work == after_work and fault.route in (None, record.route):
                fault.remaining -= 1
                if fault.status is None:
                    await self._release.wait()
                    raise _Answered(Response(status_code=503))
                raise _Answered(_error(fault.status, fault.message))

    async def _handle(self, request: Request, route: str) -> Response:
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            route=route,
            headers=dict(request.headers),
            body=await request.body(),
        )
        self.requests.append(record)
        try:
            await self._enter(request, record)
            response: Response = await getattr(self, f"_do_{route}")(request, record)
        except _Answered as answered:
            response = answered.response
        record.status = response.status_code
        return response

    async def _start(self, request: Request) -> Response:
        return await self._handle(request, "start")

    async def _list(self, request: Request) -> Response:
        return await self._handle(request, "list")

    async def _last(self, request: Request) -> Response:
        return await self._handle(request, "last")

    async def _get(self, request: Request) -> Response:
        return await self._handle(request, "get")

    async def _output(self, request: Request) -> Response:
        return await self._handle(request, "output")

    async def _ping(self, request: Request) -> Response:
        self.requests.append(RecordedRequest("GET", request.url.path, "ping", {}, b"", status=200))
        return PlainTextResponse("pong")

    async def _project(self, request: Request) -> Response:
        return await self._handle(request, "project")

    async def _template(self, request: Request) -> Response:
        return await self._handle(request, "template")

    async def _do_project(self, request: Request, record: RecordedRequest) -> Response:
        project_id = request.path_params["project_id"]
        return JSONResponse({"id": project_id, "name": f"project {project_id}", "alert": False})

    async def _do_template(self, request: Request, record: RecordedRequest) -> Response:
        project_id, template_id = request.path_params["project_id"], request.path_params["template_id"]
        if template_id not in self.projects[project_id]:
            return _error(404, "template not found")
        template = {
            "id": template_id,
            "project_id": project_id,
            "name": "instance",
            "playbook": "instance.yml",
        }
        return JSONResponse(template)

    async def _do_start(self, request: Request, record: RecordedRequest) -> Response:
        project_id = request.path_params["project_id"]
        try:
            body = json.loads(record.body)
        except ValueError:
            return _error(400, "body is not JSON")
        try:
            validate_against(request_body_schema("/project/{project_id}/tasks", "post"), body)
        except jsonschema.ValidationError as exc:
            return _error(400, exc.message)
        template_id = body.get("template_id")
        if not template_id:  # Go's binding:"required" on Task.TemplateID
            return _error(400, "template_id is required")
        if template_id not in self.projects[project_id]:
            return _error(400, "template not found")
        environment = body.get("environment", "")
        if environment:
            try:
                parsed = json.loads(environment)
            except ValueError:
                return _error(400, "environment is not JSON")
            if not isinstance(parsed, dict):
                return _error(400, "environment is not a JSON object")
        message = body.get("message", "")
        task = EmulatedTask(
            id=self._next_id,
            project_id=project_id,
            template_id=template_id,
            environment=environment,
            message=message if isinstance(message, str) else "",
            playbook=body.get("playbook", ""),
            limit=body.get("limit", ""),
            git_branch=body.get("git_branch"),
            debug=body.get("debug", False),
            dry_run=body.get("dry_run", False),
            diff=body.get("diff", False),
        )
        self._next_id += 1
        self.tasks[task.id] = task
        if self._auto is not None:
            runner = asyncio.create_task(self._run_script(task.id, *self._auto))
            self._background.add(runner)
            runner.add_done_callback(self._background.discard)
        await self._maybe_fault(record, after_work=True)
        return JSONResponse(task.to_api(), status_code=201)

    async def _run_script(self, task_id: int, statuses: tuple[str, ...], delay: float) -> None:
        for status in statuses:
            await asyncio.sleep(delay)
            self.advance(task_id, status)

    def _project_tasks(self, request: Request) -> list[EmulatedTask]:
        project_id = request.path_params["project_id"]
        return sorted((t for t in self.tasks.values() if t.project_id == project_id), key=lambda t: t.id)

    async def _do_list(self, request: Request, record: RecordedRequest) -> Response:
        return JSONResponse([t.to_api() for t in self._project_tasks(request)])

    async def _do_last(self, request: Request, record: RecordedRequest) -> Response:
        return JSONResponse([t.to_api() for t in self._project_tasks(request)[-200:]])

    def _task(self, request: Request) -> EmulatedTask:
        task = self.tasks.get(request.path_params["task_id"])
        if task is None or task.project_id != request.path_params["project_id"]:
            raise _Answered(_error(404, "task not found"))
        return task

    async def _do_get(self, request: Request, record: RecordedRequest) -> Response:
        return JSONResponse(self._task(request).to_api())

    async def _do_output(self, request: Request, record: RecordedRequest) -> Response:
        task = self._task(request)
        lines = [{"task_id": task.id, "time": _go_time(at), "output": text} for at, text in task.output]
        return JSONResponse(lines)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


@contextlib.asynccontextmanager
async def running_semaphore(
    *, token: str = DEFAULT_TOKEN, projects: Mapping[int, Iterable[int]] | None = None
) -> AsyncIterator[SemaphoreEmulator]:
    """A started emulator on a free 127.0.0.1 port, stopped on exit."""
    emulator = SemaphoreEmulator(token=token, projects=projects)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
