"""What a Terraform object's status means for the instance lifecycle (DESIGN.md, "Instance lifecycle" 2).

tofu-controller reports progress in the `Ready` condition (api/v1alpha2, `SetTerraformReadiness`).
The reasons it really writes, read from flux-iac/tofu-controller's source:

- `Unknown`: `Progressing` (start of a reconcile), `TerraformPlannedWithChanges` (plan made, apply next),
  `TerraformAppliedSucceed` (applied, outputs not written yet);
- `True`: `TerraformOutputsWritten` (applied and outputs in the Secret), `TerraformPlannedNoChanges`
  (a later reconcile found nothing to do), `NoDrift` (drift detection found none);
- `False`: the failure's reason, e.g. `TFExecPlanFailed`, `TFExecApplyFailed`, `ArtifactFailed`,
  `VarsGenerationFailed`, `OutputsWritingFailed`, `DependencyNotReady`, `DriftDetected`, `LockHeld`.

DESIGN.md also lists `TerraformAppliedSucceed` under `True`; v1alpha2 only ever writes it with `Unknown`,
so `True` counts as ready whatever its reason and `Unknown` as provisioning whatever its reason.
A condition written for an older generation (`status.observedGeneration`, or the condition's own
`observedGeneration`, below `metadata.generation`) says nothing about the current spec: provisioning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class TerraformPhase(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TerraformSignal:
    phase: TerraformPhase
    reason: str | None = None
    message: str | None = None
    deleting: bool = False  # metadata.deletionTimestamp is set: tofu-controller is destroying


def ready_condition(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Ready"), None)


def signal_of(obj: Mapping[str, Any]) -> TerraformSignal:
    """Map a Terraform object (as the API returns it) to provisioning, ready or failed."""
    metadata = obj.get("metadata") or {}
    deleting = metadata.get("deletionTimestamp") is not None
    ready = ready_condition(obj)
    if ready is None:
        return TerraformSignal(TerraformPhase.PROVISIONING, deleting=deleting)
    reason, message = ready.get("reason"), ready.get("message")
    if _is_stale(obj, ready):
        return TerraformSignal(TerraformPhase.PROVISIONING, reason, message, deleting)
    match ready.get("status"):
        case "True":
            phase = TerraformPhase.READY
        case "False":
            phase = TerraformPhase.FAILED
        case _:
            phase = TerraformPhase.PROVISIONING
    return TerraformSignal(phase, reason, message, deleting)


def _is_stale(obj: Mapping[str, Any], ready: Mapping[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    if not isinstance(generation, int):
        return False
    observed = [(obj.get("status") or {}).get("observedGeneration"), ready.get("observedGeneration")]
    return any(isinstance(seen, int) and seen < generation for seen in observed)
