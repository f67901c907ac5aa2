"""What the simulated tofu-controller writes: Ready conditions, status fields and the outputs Secret.

Pure functions over plain dicts, kept apart from the cluster's storage and timing. The values follow
tofu-controller v1alpha2: its finalizer and the `reconcile.fluxcd.io/requestedAt` annotation (named in
`services.kubernetes.terraform_object`), its `Ready` reasons (the constants of `services.instances.reasons`),
and writeOutput's Secret layout (a string output stored raw, base64 in `data`, an owner reference to the
Terraform object, the labels of `spec.writeOutputsToSecret`). The VM's address is derived from the
instance id so it is stable.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from services.instances import reasons
from services.kubernetes.terraform_object import (
    API_VERSION,
    FINALIZER,
    INSTANCE_ID_LABEL,
    KIND,
    RECONCILE_ANNOTATION,
)

HOSTNAME_DOMAIN: Final = "opencsp.internal"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def requested_at() -> str:
    """The annotation's value as `flux reconcile` writes it (RFC 3339 with sub-second precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def vm_name_of(obj: dict[str, Any]) -> str:
    """The module's `name` variable (the instance's name); the object's name when it has none."""
    for variable in (obj.get("spec") or {}).get("vars") or []:
        if (
            isinstance(variable, dict)
            and variable.get("name") == "name"
            and isinstance(variable.get("value"), str)
        ):
            return str(variable["value"])
    return str(obj["metadata"]["name"])


def instance_key_of(obj: dict[str, Any]) -> str:
    """The instance id label, else namespace/name: what failures and addresses are keyed by."""
    labels = obj["metadata"].get("labels") or {}
    value = labels.get(INSTANCE_ID_LABEL)
    return value if isinstance(value, str) else f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def ip_address_for(key: str) -> str:
    """`10.42.x.y`, the same for the same instance every time."""
    digest = hashlib.sha256(key.encode()).digest()
    return f"10.42.{digest[0]}.{1 + digest[1] % 254}"


def hostname_for(vm_name: str) -> str:
    return f"{vm_name}.{HOSTNAME_DOMAIN}"


def revision_of(obj: dict[str, Any]) -> str:
    """A Git source revision (`<branch>@sha1:<sha>`) that changes with the spec's generation."""
    meta = obj["metadata"]
    seed = f"{meta['namespace']}/{meta['name']}/{meta.get('generation', 1)}"
    return f"main@sha1:{hashlib.sha1(seed.encode()).hexdigest()}"  # noqa: S324 - not security


def plan_id_of(revision: str) -> str:
    return f"plan-main-{revision.rpartition(':')[2][:10]}"


def set_ready(obj: dict[str, Any], status: str, reason: str, message: str, *, observed: bool = False) -> None:
    """Write the Ready condition as SetTerraformReadiness does; `observed` also records the generation."""
    st = obj.setdefault("status", {})
    conditions = [c for c in st.get("conditions") or [] if c.get("type") != "Ready"]
    old = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    changed = old is None or old.get("status") != status
    ready = {"type": "Ready", "status": status, "reason": reason, "message": message}
    ready["lastTransitionTime"] = now() if changed or old is None else old["lastTransitionTime"]
    st["conditions"] = [*conditions, ready]
    if observed:
        st["observedGeneration"] = obj["metadata"]["generation"]


Mutation = Callable[[dict[str, Any]], None]


def reconcile_steps(obj: dict[str, Any], *, fails: bool) -> tuple[Mutation, list[Mutation | None]]:
    """The writes of one reconcile of `obj`: the first at once, then each after a delay; None is the
    point where the outputs Secret is written (between applied and outputs-written)."""
    revision = revision_of(obj)
    plan = plan_id_of(revision)

    def start(o: dict[str, Any]) -> None:
        finalizers = o["metadata"].setdefault("finalizers", [])
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        requested = (o["metadata"].get("annotations") or {}).get(RECONCILE_ANNOTATION)
        if requested:
            o["status"]["lastHandledReconcileAt"] = requested
        set_ready(o, "Unknown", reasons.PROGRESSING, "Reconciliation in progress")

    def planned(o: dict[str, Any]) -> None:
        o["status"] |= {
            "lastAttemptedRevision": revision,
            "lastPlannedRevision": revision,
            "lastPlanAt": now(),
        }
        o["status"] |= {"plan": {"pending": plan}, "lastPlannedGeneration": o["metadata"]["generation"]}
        set_ready(o, "Unknown", reasons.PLANNED_WITH_CHANGES, "Plan generated")

    def failed(o: dict[str, Any]) -> None:
        o["status"] |= {
            "plan": {},
            "reconciliationFailures": o["status"].get("reconciliationFailures", 0) + 1,
        }
        set_ready(o, "False", reasons.APPLY_FAILED, apply_failure_message(o), observed=True)

    def applied(o: dict[str, Any]) -> None:
        o["status"] |= {"lastAppliedRevision": revision, "plan": {"lastApplied": plan}}
        set_ready(o, "Unknown", reasons.APPLIED_SUCCEED, "Applied successfully")

    def outputs_written(o: dict[str, Any]) -> None:
        o["status"] |= {"availableOutputs": ["hostname", "ip_address"], "reconciliationFailures": 0}
        o["status"]["lastSuccessfulReconcileAt"] = now()
        set_ready(o, "True", reasons.OUTPUTS_WRITTEN, f"Outputs written: {revision}", observed=True)

    return start, ([planned, failed] if fails else [planned, applied, None, outputs_written])


def destroying(obj: dict[str, Any]) -> None:
    set_ready(obj, "Unknown", reasons.PROGRESSING, "Destroying")


def apply_failure_message(obj: dict[str, Any]) -> str:
    """What `tofu apply` prints when Proxmox cannot clone the template (the message tofu-controller keeps)."""
    upid = hashlib.sha256(instance_key_of(obj).encode()).hexdigest()[:8].upper()
    return (
        "error running Apply: exit status 1\n\n"
        "Error: error waiting for VM clone: All attempts fail:\n"
        f'#1: task "UPID:pve1:{upid}:qmclone:9000:root@pam:" failed to complete with exit code: '
        "clone failed: storage 'local-lvm' does not have enough free space\n\n"
        "  with proxmox_virtual_environment_vm.this,\n"
        '  on main.tf line 22, in resource "proxmox_virtual_environment_vm" "this":\n'
        '  22: resource "proxmox_virtual_environment_vm" "this" {'
    )


def outputs_secret(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The Secret writeOutput makes for this object, or None when it asks for no Secret."""
    spec = (obj.get("spec") or {}).get("writeOutputsToSecret")
    if not isinstance(spec, dict) or not spec.get("name"):
        return None
    values = {"ip_address": ip_address_for(instance_key_of(obj)), "hostname": hostname_for(vm_name_of(obj))}
    wanted = spec.get("outputs") or list(values)
    data = {key: base64.b64encode(values[key].encode()).decode() for key in wanted if key in values}
    meta = obj["metadata"]
    owner = {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"]}
    owner["controller"] = True
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": spec["name"],
            "namespace": meta["namespace"],
            "labels": dict(spec.get("labels") or {}),
            "ownerReferences": [owner],
        },
        "data": data,
    }
