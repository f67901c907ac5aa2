"""Operator-only views of an instance's Terraform object and Semaphore task."""

from __future__ import annotations

import strawberry

from schema.context import Context
from schema.errors import PublicError
from schema.types import TerraformStatus
from services.instances.internals import PeerUnavailable
from services.instances.records import InstanceRecord


class Unavailable(PublicError):
    code = "UNAVAILABLE"


async def resolve_terraform(
    info: strawberry.Info[Context, None], record: InstanceRecord
) -> TerraformStatus | None:
    if record.terraform_name is None:
        return None
    try:
        view = await info.context.services.internals.terraform(record)
    except PeerUnavailable as error:
        raise Unavailable(str(error)) from None
    return TerraformStatus(
        name=view.name,
        namespace=view.namespace,
        exists=view.exists,
        ready=view.ready,
        reason=view.reason,
        message=view.message,
    )


async def resolve_task_status(info: strawberry.Info[Context, None], task_id: int) -> str:
    try:
        return (await info.context.services.internals.task(task_id)).status
    except PeerUnavailable as error:
        raise Unavailable(str(error)) from None


async def resolve_task_output(info: strawberry.Info[Context, None], task_id: int) -> str:
    try:
        return await info.context.services.internals.task_output(task_id)
    except PeerUnavailable as error:
        raise Unavailable(str(error)) from None
