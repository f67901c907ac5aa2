"""Ready condition → lifecycle signal, with tofu-controller's real reason strings."""

from __future__ import annotations

from typing import Any

import pytest

from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.conditions import TerraformPhase, TerraformSignal, signal_of
from services.kubernetes.terraform_object import build_terraform_object
from tests.kubernetes.support import NAMESPACE, make_spec
from tests.peers.kube_api import TERRAFORMS, KubeApiEmulator

P, R, F = TerraformPhase.PROVISIONING, TerraformPhase.READY, TerraformPhase.FAILED


def terraform(
    ready: tuple[str, str] | None, *, generation: int = 1, observed: int | None = 1
) -> dict[str, Any]:
    status: dict[str, Any] = {} if observed is None else {"observedGeneration": observed}
    if ready is not None:
        status["conditions"] = [
            {"type": "Apply", "status": "True", "reason": "TerraformAppliedSucceed", "message": ""},
            {"type": "Ready", "status": ready[0], "reason": ready[1], "message": f"msg {ready[1]}"},
        ]
    return {"metadata": {"name": "t", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("ready", "phase"),
    [
        (None, P),
        (("Unknown", "Progressing"), P),
        (("Unknown", "TerraformPlannedWithChanges"), P),
        (("Unknown", "TerraformAppliedSucceed"), P),
        (("Unknown", "SomethingNew"), P),
        (("True", "TerraformOutputsWritten"), R),
        (("True", "TerraformPlannedNoChanges"), R),
        (("True", "TerraformAppliedSucceed"), R),
        (("True", "NoDrift"), R),
        (("False", "TFExecApplyFailed"), F),
        (("False", "ArtifactFailed"), F),
        (("Bogus", "X"), P),
    ],
)
def test_ready_condition_table(ready: tuple[str, str] | None, phase: TerraformPhase) -> None:
    signal = signal_of(terraform(ready))
    assert signal.phase is phase
    if ready is not None:
        assert (signal.reason, signal.message) == (ready[1], f"msg {ready[1]}")


def test_condition_of_an_older_generation_does_not_count() -> None:
    assert signal_of(terraform(("True", "TerraformOutputsWritten"), generation=2, observed=1)).phase is P
    assert signal_of(terraform(("False", "TFExecApplyFailed"), generation=2, observed=1)).phase is P
    stale_condition = terraform(("True", "TerraformOutputsWritten"), generation=3, observed=None)
    stale_condition["status"]["conditions"][1]["observedGeneration"] = 2
    assert signal_of(stale_condition).phase is P
    assert signal_of(terraform(("True", "TerraformOutputsWritten"), generation=2, observed=2)).phase is R
    assert signal_of(terraform(("True", "TerraformOutputsWritten"), observed=None)).phase is R


def test_deleting_is_reported() -> None:
    obj = terraform(("Unknown", "Progressing"))
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert signal_of(obj) == TerraformSignal(P, "Progressing", "msg Progressing", deleting=True)


async def test_signals_along_a_real_reconcile(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    spec = make_spec()
    await cluster.create(build_terraform_object(spec))

    async def phase() -> TerraformSignal:
        obj = await cluster.get(NAMESPACE, spec.object_name)
        assert obj is not None
        return signal_of(obj)

    assert (await phase()).phase is P  # status.observedGeneration defaults to -1
    kube_api.set_ready(NAMESPACE, spec.object_name, "Unknown", "Progressing", "Reconciliation in progress")
    assert (await phase()).phase is P
    kube_api.set_ready(
        NAMESPACE, spec.object_name, "True", "TerraformOutputsWritten", "Outputs written: main@sha1:ab"
    )
    assert await phase() == TerraformSignal(R, "TerraformOutputsWritten", "Outputs written: main@sha1:ab")
    kube_api.modify(TERRAFORMS, NAMESPACE, spec.object_name, lambda o: o["spec"].update(interval="1m"))
    assert (await phase()).phase is P  # the spec moved on; Ready=True was for generation 1
    kube_api.set_ready(NAMESPACE, spec.object_name, "False", "TFExecPlanFailed", "error running Plan")
    assert await phase() == TerraformSignal(F, "TFExecPlanFailed", "error running Plan")
