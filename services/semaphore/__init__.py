"""The gateway's boundary to Ansible Semaphore: start the post-provisioning task, read it, wait for it."""

from services.semaphore.client import START_KEY_VAR, SemaphoreClient
from services.semaphore.model import (
    ACTIVE_STATUSES,
    FAILURE_STATUSES,
    FINAL_STATUSES,
    SUCCESS_STATUSES,
    SemaphoreError,
    SemaphoreNotFound,
    SemaphoreProtocolError,
    SemaphoreRejected,
    SemaphoreTask,
    SemaphoreUnavailable,
    TaskStatus,
    is_final,
    outcome_of,
)
from services.semaphore.poller import PollTimedOut, TaskPoller, TaskReader, poll_task

__all__ = [
    "ACTIVE_STATUSES",
    "FAILURE_STATUSES",
    "FINAL_STATUSES",
    "START_KEY_VAR",
    "SUCCESS_STATUSES",
    "PollTimedOut",
    "SemaphoreClient",
    "SemaphoreError",
    "SemaphoreNotFound",
    "SemaphoreProtocolError",
    "SemaphoreRejected",
    "SemaphoreTask",
    "SemaphoreUnavailable",
    "TaskPoller",
    "TaskReader",
    "TaskStatus",
    "is_final",
    "outcome_of",
    "poll_task",
]
