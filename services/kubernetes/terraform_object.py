"""The `Terraform` object the gateway asks tofu-controller to reconcile for one instance.

One pure function builds it from plain values, so the shape agreed in DESIGN.md ("tofu-controller")
lives in exactly one place and a test can check it against the CRD's OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal
from uuid import UUID

GROUP: Final = "infra.contrib.fluxcd.io"
VERSION: Final = "v1alpha2"
PLURAL: Final = "terraforms"
KIND: Final = "Terraform"
API_VERSION: Final = f"{GROUP}/{VERSION}"

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "opencsp-gateway"
INSTANCE_ID_LABEL: Final = "opencsp.io/instance-id"
MANAGED_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"

# tofu-controller adds this finalizer to each object it reconciles and removes it once it has destroyed
# the object's resources; Flux's annotation asks a controller to reconcile now.
FINALIZER: Final = "finalizers.tf.contrib.fluxcd.io"
RECONCILE_ANNOTATION: Final = "reconcile.fluxcd.io/requestedAt"

# The module's outputs the gateway reads back; tofu-controller writes only these to the Secret.
OUTPUT_NAMES: Final = ("ip_address", "hostname")

SourceKind = Literal["GitRepository", "OCIRepository"]


def terraform_object_name(instance_id: UUID) -> str:
    """`inst-<32 hex>`: deterministic, collision-free and a valid DNS-1123 label (37 chars)."""
    return f"inst-{instance_id.hex}"


def outputs_secret_name(instance_id: UUID) -> str:
    return f"{terraform_object_name(instance_id)}-outputs"


@dataclass(frozen=True, slots=True)
class TerraformSpec:
    """Everything one instance's Terraform object depends on, as plain values."""

    instance_id: UUID
    vm_name: str  # the instance's name, passed to the module as `name`
    namespace: str
    module_path: str
    template: str
    cpu: int
    memory_mib: int
    disk_gib: int
    source_name: str
    source_namespace: str
    vars_from_secret: str  # the Proxmox credentials
    source_kind: SourceKind = "GitRepository"
    ssh_public_key: str | None = None
    interval: str = "10m"
    # The user's labels as they go onto the object, already prefixed (`services.instances.labels`).
    extra_labels: tuple[tuple[str, str], ...] = ()

    started: bool = True  # the module's `started`: the VM's desired power state (start/stop)

    @property
    def object_name(self) -> str:
        return terraform_object_name(self.instance_id)

    @property
    def outputs_secret(self) -> str:
        return outputs_secret_name(self.instance_id)

    @property
    def labels(self) -> dict[str, str]:
        return {MANAGED_BY_LABEL: MANAGED_BY, INSTANCE_ID_LABEL: str(self.instance_id)}


def build_terraform_object(spec: TerraformSpec) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": "name", "value": spec.vm_name},
        {"name": "cores", "value": spec.cpu},
        {"name": "memory", "value": spec.memory_mib},
        {"name": "disk", "value": spec.disk_gib},
        {"name": "template", "value": spec.template},
        {"name": "started", "value": spec.started},
    ]
    if spec.ssh_public_key:
        variables.append({"name": "ssh_public_key", "value": spec.ssh_public_key})
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.object_name,
            "namespace": spec.namespace,
            "labels": dict(spec.extra_labels) | spec.labels,
        },
        "spec": {
            "interval": spec.interval,
            "approvePlan": "auto",
            "destroyResourcesOnDeletion": True,
            "path": spec.module_path,
            "sourceRef": {
                "kind": spec.source_kind,
                "name": spec.source_name,
                "namespace": spec.source_namespace,
            },
            "vars": variables,
            "varsFrom": [{"kind": "Secret", "name": spec.vars_from_secret}],
            "writeOutputsToSecret": {
                "name": spec.outputs_secret,
                "outputs": list(OUTPUT_NAMES),
                # The Secret carries the instance's labels too, so it can be traced back.
                "labels": spec.labels,
            },
        },
    }


def instance_id_of(obj: dict[str, Any]) -> str | None:
    """The instance a Terraform object belongs to, from its label."""
    labels = obj.get("metadata", {}).get("labels") or {}
    value = labels.get(INSTANCE_ID_LABEL)
    return value if isinstance(value, str) else None


def with_vars(obj: dict[str, Any], changes: dict[str, Any]) -> list[dict[str, Any]]:
    """The object's `spec.vars` with `changes` (module variable → value) applied, in their order; a
    variable the object lacks (made before it existed) is appended. What a day-2 action writes back."""
    variables = [dict(v) for v in (obj.get("spec") or {}).get("vars") or [] if isinstance(v, dict)]
    left = dict(changes)
    for variable in variables:
        if variable.get("name") in left:
            variable["value"] = left.pop(str(variable["name"]))
    variables.extend({"name": name, "value": value} for name, value in left.items())
    return variables


def generation_of(obj: dict[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) else None


def observed_generation_of(obj: dict[str, Any]) -> int | None:
    value = (obj.get("status") or {}).get("observedGeneration")
    return value if isinstance(value, int) else None
