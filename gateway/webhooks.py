"""`POST /webhooks/semaphore`: a signed hint that a task moved. It makes the gateway read the task, and
stores the hint's security summary for the instance whose current task it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.bodies import BodyTooLarge, read_body
from gateway.bootstrap import Runtime
from services.semaphore.webhook import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HintInvalid,
    WebhookError,
    verify_hint,
)


def semaphore_webhook(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    secret = runtime.settings.webhook_secret

    async def endpoint(request: Request) -> Response:
        if secret is None:
            return JSONResponse({"error": "webhooks are not configured (OPENCSP_WEBHOOK_SECRET)"}, 404)
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return JSONResponse({"error": "body too large"}, 413)
        try:
            hint = verify_hint(
                secret.get_secret_value(),
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
            )
        except HintInvalid as error:  # signed, so the sender is ours: say what is wrong; nothing is stored
            return JSONResponse({"error": str(error)}, 400)
        except WebhookError as error:
            return JSONResponse({"error": str(error)}, 401)
        # The same answer whether or not a task is known: a caller learns nothing about our tasks.
        await runtime.hint_task(hint.task_id, hint.security)
        return JSONResponse({"accepted": True}, 202)

    return endpoint
