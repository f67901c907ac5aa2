"""Request bodies read with a cap: `/graphql` and the Semaphore webhook read theirs here."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is over the limit; the message names the limit, never the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes.")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as its declared length or what arrived passes `limit`
    (a client may send no Content-Length, or a false one: the stream is counted either way)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
