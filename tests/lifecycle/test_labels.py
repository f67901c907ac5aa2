"""Labels reach the Terraform object through the Kubernetes API, prefixed, and follow setInstanceLabels."""

from __future__ import annotations

from typing import Any

from services.kubernetes.terraform_object import INSTANCE_ID_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from tests.lifecycle.conftest import Gateway, Peers

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
