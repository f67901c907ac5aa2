"""The instance state machine: its statuses, the status sets the lifecycle reasons about, and every move
it may make, each with a name. Standard library only, so the rules are read and tested without a database.

The store applies a move as one compare-and-set: the row must still be in one of the move's starting
statuses, else the move did not happen (another writer won). What may start where is therefore decided
here, once, instead of in the `allowed_from` sets of each caller.

    createInstance ─► PENDING ─► PROVISIONING ─► CONFIGURING ─► ACTIVE
                         │             │               │
                         └─────────────┴───────────────┴──► FAILED ─(retry)─► PENDING | CONFIGURING
    any status but DELETING/DELETED ─(delete, or its object vanished)─► DELETING | FAILED
    DELETING ─► DELETED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class InstanceStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    CONFIGURING = "CONFIGURING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"


ALL_STATUSES = frozenset(InstanceStatus)

# The lifecycle owes these no step of its own: only a user (delete, retry) moves them on. Everything
# else is what start-up and the periodic reconcile settle.
FINAL_STATUSES = frozenset({InstanceStatus.ACTIVE, InstanceStatus.FAILED, InstanceStatus.DELETED})
UNFINISHED_STATUSES = ALL_STATUSES - FINAL_STATUSES

# Not deleted: holds its name in its org and counts against quotas.
LIVE_STATUSES = ALL_STATUSES - {InstanceStatus.DELETED}

# Neither being deleted nor deleted: what a delete request, or a Terraform object that vanished, moves on.
UNDELETED_STATUSES = LIVE_STATUSES - {InstanceStatus.DELETING}

# Phase 1, before the infrastructure is ready: the Terraform object's Ready condition decides what is next.
PROVISIONING_PHASE = frozenset({InstanceStatus.PENDING, InstanceStatus.PROVISIONING})


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of the state machine: the status it leads to and the statuses it may start from."""

    name: str
    to: InstanceStatus
    starts_from: frozenset[InstanceStatus]

    def allows(self, status: InstanceStatus) -> bool:
        return status in self.starts_from


_FAILED = frozenset({InstanceStatus.FAILED})
_CONFIGURING = frozenset({InstanceStatus.CONFIGURING})

# Phase 1: the Terraform object.
START_PROVISIONING = Transition(
    "start provisioning", InstanceStatus.PROVISIONING, frozenset({InstanceStatus.PENDING})
)
START_CONFIGURING = Transition("start configuring", InstanceStatus.CONFIGURING, PROVISIONING_PHASE)
FAIL_PROVISIONING = Transition("fail provisioning", InstanceStatus.FAILED, PROVISIONING_PHASE)
FAIL_OBJECT_LOST = Transition("fail: Terraform object lost", InstanceStatus.FAILED, UNDELETED_STATUSES)

# Phase 2: the post-provisioning task.
FINISH_CONFIGURING = Transition("finish configuring", InstanceStatus.ACTIVE, _CONFIGURING)
FAIL_CONFIGURING = Transition("fail configuring", InstanceStatus.FAILED, _CONFIGURING)

# What users ask for; a retry starts again from the phase that failed.
RETRY_PROVISIONING = Transition("retry provisioning", InstanceStatus.PENDING, _FAILED)
RETRY_CONFIGURING = Transition("retry configuring", InstanceStatus.CONFIGURING, _FAILED)
START_DELETING = Transition("start deleting", InstanceStatus.DELETING, UNDELETED_STATUSES)
FINISH_DELETING = Transition("finish deleting", InstanceStatus.DELETED, frozenset({InstanceStatus.DELETING}))

TRANSITIONS: tuple[Transition, ...] = (
    START_PROVISIONING,
    START_CONFIGURING,
    FAIL_PROVISIONING,
    FAIL_OBJECT_LOST,
    FINISH_CONFIGURING,
    FAIL_CONFIGURING,
    RETRY_PROVISIONING,
    RETRY_CONFIGURING,
    START_DELETING,
    FINISH_DELETING,
)


def moves_from(status: InstanceStatus) -> frozenset[InstanceStatus]:
    """Every status the state machine may move an instance in `status` to."""
    return frozenset(move.to for move in TRANSITIONS if move.allows(status))


# -- day-2 operations: power state and task (beside the status, as OpenStack keeps vm_state/task_state) --
#
# `status` stays the lifecycle above. A running instance also has a power state (what the VM is doing)
# and at most one task (what the gateway is doing to it). A task starts only on an ACTIVE instance with
# no task, as one compare-and-set, so two replicas asking at once cannot both win; when it ends the task
# clears and the status is still ACTIVE, whether the action worked or not.
#
#   ACTIVE, task=None ─stop─► STOPPING ─Ready for the new generation─► task=None, STOPPED
#                     ─start─► STARTING ─────────── " ──────────────► task=None, RUNNING
#                     ─resize─► RESIZING ────────── " ──────────────► task=None, (power unchanged)
#                     ─reboot─► REBOOTING ─the Semaphore task ends──► task=None, RUNNING
#   any task ─fails─► task=None, power UNKNOWN (start/stop/reboot) or unchanged (resize)


class PowerState(enum.StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"


class InstanceTask(enum.StrEnum):
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    REBOOTING = "REBOOTING"
    RESIZING = "RESIZING"


class Action(enum.StrEnum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    RESIZE = "resize"


TASK_OF: dict[Action, InstanceTask] = {
    Action.START: InstanceTask.STARTING,
    Action.STOP: InstanceTask.STOPPING,
    Action.REBOOT: InstanceTask.REBOOTING,
    Action.RESIZE: InstanceTask.RESIZING,
}

# Tasks that end when the Terraform object is Ready for the generation they asked for.
TERRAFORM_TASKS = frozenset({InstanceTask.STARTING, InstanceTask.STOPPING, InstanceTask.RESIZING})

ACTIONABLE_STATUSES = frozenset({InstanceStatus.ACTIVE})

INSTANCE_BUSY = "INSTANCE_BUSY"
INVALID_STATE = "INVALID_STATE"


def action_refusal(status: InstanceStatus, task: InstanceTask | None) -> str | None:
    """Why an action may not start now (a userError code), or None when it may. Busy wins: an instance
    being resized is busy, whatever its status."""
    if task is not None:
        return INSTANCE_BUSY
    if status not in ACTIONABLE_STATUSES:
        return INVALID_STATE
    return None


def power_after(task: InstanceTask, before: PowerState, *, succeeded: bool) -> PowerState:
    """The power state once `task` ends. A failed start, stop or reboot leaves the VM in a state nobody
    confirmed; a failed resize did not touch its power."""
    if task is InstanceTask.RESIZING:
        return before
    if not succeeded:
        return PowerState.UNKNOWN
    return PowerState.STOPPED if task is InstanceTask.STOPPING else PowerState.RUNNING


def started_for(action: Action) -> bool | None:
    """The Terraform module's `started` variable an action sets; None: the action leaves it alone."""
    return {Action.START: True, Action.STOP: False}.get(action)


def reported_power(status: InstanceStatus, power: PowerState) -> PowerState:
    """What readers see: only an ACTIVE instance has a VM whose power state the gateway tracks."""
    return power if status is InstanceStatus.ACTIVE else PowerState.UNKNOWN
