"""Labels reach the Terraform object through the Kubernetes API, prefixed, and follow setInstanceLabels."""

from __future__ import annotations

from typing import Any

from services.kubernetes.terraform_object import INSTANCE_ID_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from tests.lifecycle.conftest import NAMESPACE, Gateway, Peers
from tests.peers.kube_api import TERRAFORMS

SET = """
mutation($id: ID!, $labels: [LabelInput!]!) {
  setInstanceLabels(id: $id, labels: $labels) {
    instance { labels { key value } }
    userErrors { field code }
  }
}
"""


def object_labels(peers: Peers, instance_id: str) -> dict[str, Any]:
    obj = peers.terraform(instance_id)
    assert obj is not None
    labels: dict[str, Any] = obj["metadata"]["labels"]
    return labels


async def test_labels_are_copied_onto_the_terraform_object_and_patched(
    gateway: Gateway, peers: Peers
) -> None:
    created = await gateway.create_ok(
        "labelled", labels=[{"key": "env", "value": "prod"}, {"key": "tier", "value": "web"}]
    )
    instance_id = created["id"]
    assert object_labels(peers, instance_id) == {
        "label.opencsp.io/env": "prod",
        "label.opencsp.io/tier": "web",
        MANAGED_BY_LABEL: MANAGED_BY,
        INSTANCE_ID_LABEL: instance_id,
    }
    await gateway.wait_for_status(instance_id, "ACTIVE")

    data = await gateway.gql(
        SET, {"id": instance_id, "labels": [{"key": "env", "value": "dev"}, {"key": "team", "value": ""}]}
    )

    assert data["setInstanceLabels"] == {
        "instance": {"labels": [{"key": "env", "value": "dev"}, {"key": "team", "value": ""}]},
        "userErrors": [],
    }
    # tier removed, env changed, team added; the gateway's own labels untouched.
    assert object_labels(peers, instance_id) == {
        "label.opencsp.io/env": "dev",
        "label.opencsp.io/team": "",
        MANAGED_BY_LABEL: MANAGED_BY,
        INSTANCE_ID_LABEL: instance_id,
    }
    obj = peers.terraform(instance_id)
    assert obj is not None
    assert obj["metadata"]["generation"] == 1  # labels are metadata, not spec


SYNC = "mutation { syncInstances { labelsRepaired transitions } }"


async def test_sync_gives_an_object_edited_behind_the_gateways_back_its_labels_again(
    gateway: Gateway, peers: Peers
) -> None:
    """The database is the truth filters read: a `label.opencsp.io/*` label changed, removed or added in
    the cluster is put back by syncInstances, and a second sync finds nothing to repair."""
    created = await gateway.create_ok(
        "drifted", labels=[{"key": "env", "value": "prod"}, {"key": "tier", "value": "web"}]
    )
    kept = await gateway.create_ok("untouched", labels=[{"key": "env", "value": "dev"}])
    instance_id = created["id"]
    await gateway.wait_for_status(instance_id, "ACTIVE")
    obj = peers.terraform(instance_id)
    assert obj is not None

    def edit(o: dict[str, Any]) -> None:
        labels = o["metadata"]["labels"]
        labels["label.opencsp.io/env"] = "staging"  # changed
        del labels["label.opencsp.io/tier"]  # removed
        labels["label.opencsp.io/owner"] = "someone-else"  # added
        labels["team.example.com/cost-centre"] = "42"  # not ours: left alone

    peers.kube.modify(TERRAFORMS, NAMESPACE, obj["metadata"]["name"], edit)

    report = (await gateway.gql(SYNC, role="admin"))["syncInstances"]

    assert report["labelsRepaired"] == 1
    assert object_labels(peers, instance_id) == {
        "label.opencsp.io/env": "prod",
        "label.opencsp.io/tier": "web",
        "team.example.com/cost-centre": "42",
        MANAGED_BY_LABEL: MANAGED_BY,
        INSTANCE_ID_LABEL: instance_id,
    }
    assert object_labels(peers, kept["id"])["label.opencsp.io/env"] == "dev"
    assert (await gateway.gql(SYNC, role="admin"))["syncInstances"]["labelsRepaired"] == 0
