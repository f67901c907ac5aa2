"""Create, delete, retry, label, sync and the day-2 actions (start, stop, reboot, resize): each one service
call; failures of policy come back as userErrors."""

from __future__ import annotations

import strawberry

from resolvers.instances import parse_id
from schema.context import Context
from schema.types import CreateInstanceInput, Instance, InstancePayload, LabelInput, SyncReport, UserError
from services.auth.principal import Principal
from services.instances.actions import Actions, Outcome
from services.instances.lifecycle import NOT_FOUND, ActionResult
from services.instances.policy import CreateRequest


def _principal(info: strawberry.Info[Context, None]) -> Principal:
    principal = info.context.principal
    assert principal is not None, "mutations are reached only with a verified token"
    return principal


def _payload(outcome: ActionResult) -> InstancePayload:
    return InstancePayload(
        instance=Instance.from_record(outcome.instance) if outcome.instance else None,
        user_errors=[UserError(field=e.field, message=e.message, code=e.code) for e in outcome.errors],
    )


def _not_found() -> InstancePayload:
    return _payload(ActionResult(errors=[NOT_FOUND]))


async def create_instance(
    info: strawberry.Info[Context, None], input: CreateInstanceInput
) -> InstancePayload:
    request = CreateRequest(
        name=input.name,
        flavor=input.flavor,
        image=input.image,
        ssh_public_key=input.ssh_public_key,
        description=input.description,
        idempotency_key=input.idempotency_key,
        labels=tuple((label.key, label.value) for label in input.labels or ()),
    )
    return _payload(await info.context.services.lifecycle.create(_principal(info), request))


async def delete_instance(info: strawberry.Info[Context, None], id: strawberry.ID) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    return _payload(await info.context.services.lifecycle.delete(_principal(info), instance_id))


async def retry_instance(info: strawberry.Info[Context, None], id: strawberry.ID) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    return _payload(await info.context.services.lifecycle.retry(_principal(info), instance_id))


def _outcome(outcome: Outcome) -> InstancePayload:
    return _payload(ActionResult(outcome.instance, list(outcome.errors)))


def _actions(info: strawberry.Info[Context, None]) -> Actions:
    actions = info.context.services.actions
    assert actions is not None, "the composition root wires the day-2 actions"
    return actions


async def start_instance(info: strawberry.Info[Context, None], id: strawberry.ID) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    return _outcome(await _actions(info).start(_principal(info), instance_id))


async def stop_instance(info: strawberry.Info[Context, None], id: strawberry.ID) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    return _outcome(await _actions(info).stop(_principal(info), instance_id))


async def reboot_instance(info: strawberry.Info[Context, None], id: strawberry.ID) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    return _outcome(await _actions(info).reboot(_principal(info), instance_id))


async def resize_instance(
    info: strawberry.Info[Context, None], id: strawberry.ID, flavor: str
) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    return _outcome(await _actions(info).resize(_principal(info), instance_id, flavor))


async def set_instance_labels(
    info: strawberry.Info[Context, None], id: strawberry.ID, labels: list[LabelInput]
) -> InstancePayload:
    instance_id = parse_id(id)
    if instance_id is None:
        return _not_found()
    pairs = tuple((label.key, label.value) for label in labels)
    return _payload(await info.context.services.lifecycle.set_labels(_principal(info), instance_id, pairs))


async def sync_instances(info: strawberry.Info[Context, None]) -> SyncReport:
    report = await info.context.services.lifecycle.sync()
    return SyncReport(
        objects_without_rows=report.objects_without_rows,
        rows_without_objects=[strawberry.ID(str(i)) for i in report.rows_without_objects],
        transitions=report.transitions,
        labels_repaired=report.labels_repaired,
    )
