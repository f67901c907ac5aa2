"""Operation-level metrics: which operation ran, how it ended and how long it took.

Only an extension sees the operation's name once the document is parsed (a client may leave
`operationName` out) and its errors before they are formatted; the recorder behind it is the gateway's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

OperationOutcome = Literal["ok", "errors", "request_error", "unauthenticated"]

# Raised by Strawberry before execution; the HTTP layer answers them as request errors.
_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


class OperationRecorder(Protocol):
    def operation(self, name: str | None, outcome: OperationOutcome, seconds: float | None) -> None:
        """`seconds` is None for subscriptions: their lifetime is not a latency."""

    def subscriptions(self, delta: int) -> None: ...


# (document text, operation name) → the operation label: the trusted document's name, or `adhoc`.
OperationNamer = Callable[[str | None, str | None], str]


class OperationMetrics(SchemaExtension):
    def __init__(self, recorder: OperationRecorder, namer: OperationNamer | None = None) -> None:
        self.recorder = recorder
        self.namer = namer
        self._subscribed = False

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        outcome: OperationOutcome = "errors"
        try:
            yield
            outcome = self._outcome()
        except _REQUEST_ERRORS:
            outcome = "request_error"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # The transport stopped listening: after the result was sent, or when the client went
            # away, which is how a subscription normally ends and a failure for anything else.
            if self.execution_context.result is not None:
                outcome = self._outcome()
            else:
                outcome = "ok" if self._subscribed else "errors"
            raise
        finally:
            if self._subscribed:
                self.recorder.subscriptions(-1)
            seconds = None if self._subscribed else time.perf_counter() - started
            self.recorder.operation(self._name(), outcome, seconds)

    def on_execute(self) -> Iterator[None]:
        if self.execution_context.operation_type is OperationType.SUBSCRIPTION:
            self._subscribed = True
            self.recorder.subscriptions(1)
        yield

    def _name(self) -> str | None:
        try:
            name = self.execution_context.operation_name
        except Exception:  # a document the name cannot be read from: the operation is anonymous
            name = None
        if self.namer is not None:  # clients' own names never become labels (gateway.documents)
            return self.namer(self.execution_context.query, name)
        return name

    def _outcome(self) -> OperationOutcome:
        """As the HTTP layer answers it: nothing executed (no `data`, no error with a path) is a
        request error; Strawberry copies every error to `pre_execution_errors`, so that cannot tell."""
        result = self.execution_context.result
        if result is None:
            return "request_error" if self.execution_context.pre_execution_errors else "ok"
        if isinstance(result, PreExecutionError):
            return "request_error"
        if not result.errors:
            return "ok"
        if result.data is None and all(error.path is None for error in result.errors):
            return "request_error"
        return "errors"
