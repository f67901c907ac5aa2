from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.semaphore.client import SemaphoreClient
from tests.peers.semaphore_api import SemaphoreEmulator, running_semaphore

PROJECT_ID = 1
TEMPLATE_ID = 7


@pytest.fixture
async def semaphore() -> AsyncIterator[SemaphoreEmulator]:
    async with running_semaphore(projects={PROJECT_ID: {TEMPLATE_ID}, 2: {8}}) as emulator:
        yield emulator


def make_client(emulator: SemaphoreEmulator, **overrides: object) -> SemaphoreClient:
    options: dict[str, object] = {
        "project_id": PROJECT_ID,
        "template_id": TEMPLATE_ID,
        "timeout": 0.5,
        "attempts": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    options.update(overrides)
    token = options.pop("token", emulator.token)
    url = options.pop("url", emulator.url)
    return SemaphoreClient(str(url), str(token), **options)  # type: ignore[arg-type]


@pytest.fixture
async def client(semaphore: SemaphoreEmulator) -> AsyncIterator[SemaphoreClient]:
    async with make_client(semaphore) as semaphore_client:
        yield semaphore_client
