"""The day-2 rules of services/instances/states.py: when an action may start, and what a task's end leaves."""

from __future__ import annotations

import pytest

from services.auth.permissions import DEFAULT_POLICY, INSTANCE_POWER, INSTANCE_RESIZE
from services.instances.states import (
    ALL_STATUSES,
    INSTANCE_BUSY,
    INVALID_STATE,
    TASK_OF,
    TERRAFORM_TASKS,
    Action,
    InstanceStatus,
    InstanceTask,
    PowerState,
    action_refusal,
    power_after,
    reported_power,
    started_for,
)


@pytest.mark.parametrize("status", sorted(ALL_STATUSES))
def test_only_an_idle_active_instance_may_start_an_action(status: InstanceStatus) -> None:
    expected = None if status is InstanceStatus.ACTIVE else INVALID_STATE
    assert action_refusal(status, None) == expected


@pytest.mark.parametrize("task", list(InstanceTask))
@pytest.mark.parametrize("status", [InstanceStatus.ACTIVE, InstanceStatus.DELETING])
def test_any_running_task_makes_the_instance_busy(status: InstanceStatus, task: InstanceTask) -> None:
    assert action_refusal(status, task) == INSTANCE_BUSY


@pytest.mark.parametrize("before", list(PowerState))
def test_a_task_that_ends_well_leaves_the_power_it_asked_for(before: PowerState) -> None:
    assert power_after(InstanceTask.STOPPING, before, succeeded=True) is PowerState.STOPPED
    assert power_after(InstanceTask.STARTING, before, succeeded=True) is PowerState.RUNNING
    assert power_after(InstanceTask.REBOOTING, before, succeeded=True) is PowerState.RUNNING
    assert power_after(InstanceTask.RESIZING, before, succeeded=True) is before


@pytest.mark.parametrize("before", list(PowerState))
def test_a_failed_power_task_leaves_the_power_unknown_and_a_failed_resize_leaves_it_alone(
    before: PowerState,
) -> None:
    for task in (InstanceTask.STOPPING, InstanceTask.STARTING, InstanceTask.REBOOTING):
        assert power_after(task, before, succeeded=False) is PowerState.UNKNOWN
    assert power_after(InstanceTask.RESIZING, before, succeeded=False) is before


def test_each_action_has_its_task_and_only_reboot_ends_outside_terraform() -> None:
    assert set(TASK_OF) == set(Action)
    assert {task for action, task in TASK_OF.items() if action is not Action.REBOOT} == TERRAFORM_TASKS
    assert (started_for(Action.START), started_for(Action.STOP)) == (True, False)
    assert started_for(Action.RESIZE) is None
    assert started_for(Action.REBOOT) is None


@pytest.mark.parametrize("status", sorted(ALL_STATUSES - {InstanceStatus.ACTIVE}))
def test_only_an_active_instance_reports_a_power_state(status: InstanceStatus) -> None:
    assert reported_power(status, PowerState.STOPPED) is PowerState.UNKNOWN
    assert reported_power(InstanceStatus.ACTIVE, PowerState.STOPPED) is PowerState.STOPPED


def test_users_and_operators_may_power_and_resize_but_viewers_may_not() -> None:
    for role in ("user", "operator", "admin"):
        assert {INSTANCE_POWER, INSTANCE_RESIZE} <= DEFAULT_POLICY[role]
    assert not {INSTANCE_POWER, INSTANCE_RESIZE} & DEFAULT_POLICY["viewer"]
