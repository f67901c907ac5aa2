"""Log lines for machines (one JSON object per line) or for people (text), tagged with their request.

Every line passes `redact` last, whoever wrote it (our loggers, uvicorn's, a library's traceback): a
bearer token, a JWT or a `token=`/`secret=` parameter never reaches a log, even when a message or an
exception quotes one by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Literal

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["json", "text"]
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
_REDACTIONS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"), r"\1 [REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[REDACTED JWT]"),
    (
        re.compile(
            r"(?i)\b(access_token|id_token|refresh_token|token|secret|client_secret|password|authorization)"
            r"(\"?\s*[=:]\s*\"?)[^\s&\"',;]+"
        ),
        r"\1\2[REDACTED]",
    ),
)
_HANDLER_MARK = "_opencsp_handler"


@dataclass(slots=True)
class RequestLog:
    """What every line logged while serving one request carries; `sub` is learnt once authenticated."""

    request_id: str
    sub: str | None = None


_current: ContextVar[RequestLog | None] = ContextVar("opencsp_request_log", default=None)


def bind_sub(sub: str) -> None:
    """Tag the rest of this request's lines with the caller's id (never with its token)."""
    current = _current.get()
    if current is not None:
        current.sub = sub


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def request_id_of(value: str | None) -> str:
    """The client's id when it is a sane token (so it can be correlated), else a fresh one."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestId:
    """ASGI middleware: a request id per request and websocket, in the logs and the response's header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        log = RequestLog(request_id_of(given.decode("latin-1")))
        token = _current.set(log)
        try:
            # A websocket has no response headers to tag; leaving its `send` alone spares every frame,
            # and an idle socket holds no closure for it.
            await self.app(scope, receive, _with_id(send, log) if scope["type"] == "http" else send)
        finally:
            _current.reset(token)


def _with_id(send: Send, log: RequestLog) -> Send:
    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message)[REQUEST_ID_HEADER] = log.request_id
        await send(message)

    return send_with_id


class _RequestContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        record.request_id = current.request_id if current else None
        record.sub = current.sub if current else None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in ("request_id", "sub"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(context)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id, sub = getattr(record, "request_id", None), getattr(record, "sub", None)
        context = f" [{request_id}{' ' + sub if sub else ''}]" if request_id else ""
        record.context = context
        return redact(super().format(record))


def configure_logging(*, format: LogFormat, level: str, stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger, uvicorn's included, through one handler on the root; calling again replaces it."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if format == "json" else TextFormatter())
    handler.addFilter(_RequestContext())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return handler
