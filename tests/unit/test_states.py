"""The instance state machine as a table: which move starts where and leads where, and the status sets."""

from __future__ import annotations

from collections import deque

import pytest

from services.instances import states
from services.instances.states import (
    ALL_STATUSES,
    FINAL_STATUSES,
    LIVE_STATUSES,
    PROVISIONING_PHASE,
    TRANSITIONS,
    UNDELETED_STATUSES,
    UNFINISHED_STATUSES,
    Transition,
    moves_from,
)
from services.instances.states import InstanceStatus as S

# The state machine as built (docs/ARCHITECTURE.md, "Instance lifecycle"), edge by edge.
DOCUMENTED = {
    (S.PENDING, S.PROVISIONING),
    (S.PENDING, S.CONFIGURING),  # Ready before any Unknown was seen
    (S.PROVISIONING, S.CONFIGURING),
    (S.CONFIGURING, S.ACTIVE),
    (S.PENDING, S.FAILED),
    (S.PROVISIONING, S.FAILED),
    (S.CONFIGURING, S.FAILED),
    (S.ACTIVE, S.FAILED),  # its Terraform object was deleted outside the gateway
    (S.FAILED, S.FAILED),  # likewise: the failure's reason becomes the lost object
    (S.FAILED, S.PENDING),
    (S.FAILED, S.CONFIGURING),
    *((status, S.DELETING) for status in (S.PENDING, S.PROVISIONING, S.CONFIGURING, S.ACTIVE, S.FAILED)),
    (S.DELETING, S.DELETED),
}


def edges() -> set[tuple[S, S]]:
    return {(start, move.to) for move in TRANSITIONS for start in move.starts_from}


def test_the_table_is_the_documented_state_machine() -> None:
    assert edges() == DOCUMENTED


def test_every_named_transition_is_in_the_table_once() -> None:
    named = [value for value in vars(states).values() if isinstance(value, Transition)]
    assert sorted(move.name for move in named) == sorted(move.name for move in TRANSITIONS)
    assert len({move.name for move in TRANSITIONS}) == len(TRANSITIONS)


def test_deleted_is_the_only_dead_end_and_every_status_can_get_there() -> None:
    assert moves_from(S.DELETED) == frozenset()
    for status in ALL_STATUSES - {S.DELETED}:
        assert S.DELETED in _reachable(status), status


def test_every_status_is_reachable_from_pending() -> None:
    assert _reachable(S.PENDING) | {S.PENDING} == ALL_STATUSES


@pytest.mark.parametrize("status", sorted(ALL_STATUSES))
def test_only_a_failed_instance_is_retried(status: S) -> None:
    allowed = status is S.FAILED
    assert states.RETRY_PROVISIONING.allows(status) is allowed
    assert states.RETRY_CONFIGURING.allows(status) is allowed


@pytest.mark.parametrize("status", sorted(ALL_STATUSES))
def test_delete_and_a_lost_object_move_every_status_not_already_leaving(status: S) -> None:
    leaving = status in (S.DELETING, S.DELETED)
    assert states.START_DELETING.allows(status) is not leaving
    assert states.FAIL_OBJECT_LOST.allows(status) is not leaving
    assert states.FINISH_DELETING.allows(status) is (status is S.DELETING)


def test_the_cluster_decides_only_during_provisioning() -> None:
    for move in (states.START_CONFIGURING, states.FAIL_PROVISIONING):
        assert move.starts_from == {S.PENDING, S.PROVISIONING}
    assert states.START_PROVISIONING.starts_from == {S.PENDING}
    for move in (states.FINISH_CONFIGURING, states.FAIL_CONFIGURING):
        assert move.starts_from == {S.CONFIGURING}


def test_status_sets() -> None:
    assert ALL_STATUSES - {S.DELETED} == LIVE_STATUSES
    assert ALL_STATUSES - {S.DELETING, S.DELETED} == UNDELETED_STATUSES
    assert {S.PENDING, S.PROVISIONING} == PROVISIONING_PHASE
    assert FINAL_STATUSES | UNFINISHED_STATUSES == ALL_STATUSES
    assert not FINAL_STATUSES & UNFINISHED_STATUSES
    # What the reconcile settles: everything the lifecycle itself still has to move on.
    assert {S.PENDING, S.PROVISIONING, S.CONFIGURING, S.DELETING} == UNFINISHED_STATUSES


def _reachable(start: S) -> set[S]:
    seen: set[S] = set()
    queue = deque([start])
    while queue:
        for target in moves_from(queue.popleft()):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen
