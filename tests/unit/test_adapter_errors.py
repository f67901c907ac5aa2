"""Adapter errors are plain classes: the domain catches a class per failure and loads no client library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.kubernetes.errors import (
    ClusterConflict,
    ClusterError,
    ClusterForbidden,
    ClusterGone,
    ClusterInvalid,
    ClusterNotFound,
    ClusterRejected,
    ClusterUnauthorized,
    ClusterUnavailable,
    TerraformConflict,
    error_for,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (None, ClusterUnavailable),
        (400, ClusterInvalid),
        (401, ClusterUnauthorized),
        (403, ClusterForbidden),
        (404, ClusterNotFound),
        (405, ClusterRejected),
        (409, ClusterConflict),
        (410, ClusterGone),
        (422, ClusterInvalid),
        (429, ClusterUnavailable),
        (500, ClusterUnavailable),
        (503, ClusterUnavailable),
    ],
)
def test_an_api_status_becomes_its_class(status: int | None, kind: type[ClusterError]) -> None:
    error = error_for("get terraform ns/x: boom", status)
    assert type(error) is kind
    assert error.status == status
    assert str(error) == "get terraform ns/x: boom"


def test_a_conflict_with_another_instance_is_still_a_conflict() -> None:
    assert issubclass(TerraformConflict, ClusterConflict)
    assert not issubclass(ClusterGone, ClusterNotFound)  # 410 lists again; 404 means absent


def imported_after(*modules: str) -> set[str]:
    """The top-level packages loaded by importing `modules` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(result.stdout))


def test_the_domain_loads_no_adapter() -> None:
    """The lifecycle, its ports and the simulations name errors and models only, never a client."""
    loaded = imported_after(
        "services.instances.lifecycle",
        "services.instances.internals",
        "services.instances.ports",
        "services.simulated.cluster",
        "services.simulated.semaphore",
    )
    adapters = {"kubernetes_asyncio", "services.kubernetes.cluster", "services.semaphore.client"}
    assert loaded & adapters == set()
    assert {"services.kubernetes.errors", "services.semaphore.errors"} <= loaded
