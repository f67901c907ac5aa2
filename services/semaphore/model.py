"""What the gateway knows about a Semaphore task: its statuses and the task as read (standard library only).

Statuses are Semaphore's own strings (``pkg/task_logger`` in its source). Only ``success``, ``error``
and ``stopped`` end a task there (``TaskStatus.IsFinished``); everything else, including a status this
module has never heard of, means "still going" so the caller keeps reading until its own deadline.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.semaphore.errors import SemaphoreProtocolError


class TaskStatus(enum.StrEnum):
    WAITING = "waiting"
    STARTING = "starting"
    WAITING_CONFIRMATION = "waiting_confirmation"  # a template that asks a person to confirm a plan
    CONFIRMED = "confirmed"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SUCCESS = "success"
    ERROR = "error"
    # Not in Semaphore 2.10's source; newer releases' confirmation flow may report it. Counted as a
    # failure so an instance never waits on it until its timeout.
    REJECTED = "rejected"


SUCCESS_STATUSES = frozenset({TaskStatus.SUCCESS})
FAILURE_STATUSES = frozenset({TaskStatus.ERROR, TaskStatus.STOPPED, TaskStatus.REJECTED})
FINAL_STATUSES = SUCCESS_STATUSES | FAILURE_STATUSES
ACTIVE_STATUSES = frozenset(TaskStatus) - FINAL_STATUSES

TaskOutcome = Literal["success", "failure"]  # how a task that ended, ended

# The extra var holding a task's start key, by which a restarted gateway finds the task it started.
START_KEY_VAR = "opencsp_start_key"


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES


def outcome_of(status: str) -> TaskOutcome | None:
    """``success``, ``failure``, or None while the task may still change."""
    if status in SUCCESS_STATUSES:
        return "success"
    if status in FAILURE_STATUSES:
        return "failure"
    return None


@dataclass(frozen=True, slots=True)
class SemaphoreTask:
    id: int
    template_id: int
    status: str
    created: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    message: str = ""
    environment: str = ""  # the JSON string as Semaphore stores it

    @property
    def is_final(self) -> bool:
        return is_final(self.status)

    @property
    def outcome(self) -> TaskOutcome | None:
        return outcome_of(self.status)

    def environment_vars(self) -> dict[str, Any]:
        """The task's extra vars; empty when Semaphore omitted them or they are not a JSON object."""
        try:
            parsed = json.loads(self.environment) if self.environment else {}
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    @classmethod
    def from_api(cls, data: object) -> SemaphoreTask:
        """Build from a Task object of the API; raises SemaphoreProtocolError on a shape we cannot use."""
        if not isinstance(data, Mapping):
            raise SemaphoreProtocolError(f"task is not an object: {type(data).__name__}")
        task_id, template_id, status = data.get("id"), data.get("template_id"), data.get("status")
        if not isinstance(task_id, int) or not isinstance(template_id, int) or not isinstance(status, str):
            raise SemaphoreProtocolError("task lacks an integer id, template_id or a string status")
        if isinstance(task_id, bool) or isinstance(template_id, bool):
            raise SemaphoreProtocolError("task id and template_id must be integers")
        environment = data.get("environment")
        message = data.get("message")
        return cls(
            id=task_id,
            template_id=template_id,
            status=status,
            created=_parse_time(data.get("created")),
            start=_parse_time(data.get("start")),
            end=_parse_time(data.get("end")),
            message=message if isinstance(message, str) else "",
            environment=environment if isinstance(environment, str) else "",
        )


def _parse_time(value: object) -> datetime | None:
    """Go's RFC 3339 times; its zero time (year 1) and anything unparsable mean "not set"."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 takes "Z" and truncates nanoseconds
    except ValueError:
        return None
    return None if parsed.year <= 1 else parsed
