"""Fixtures: the API emulator on a free port, and the real kubernetes_asyncio client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.kubernetes.cluster import TerraformCluster
from tests.peers.kube_api import KubeApiEmulator


@pytest.fixture
async def kube_api() -> AsyncIterator[KubeApiEmulator]:
    async with KubeApiEmulator() as api:
        yield api


@pytest.fixture
async def cluster(kube_api: KubeApiEmulator) -> AsyncIterator[TerraformCluster]:
    async with TerraformCluster.for_host(kube_api.url) as terraform_cluster:
        yield terraform_cluster
