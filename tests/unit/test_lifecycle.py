"""`Lifecycle` as users drive it, over SQLite with the simulated cluster and Semaphore at zero delay."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from services.instances.states import (
    FAIL_OBJECT_LOST,
    FAIL_PROVISIONING,
    FINISH_CONFIGURING,
    InstanceStatus,
)
from tests.unit.conftest import Domain, Domains, principal

S = InstanceStatus


async def test_create_goes_pending_to_active_and_records_each_step_in_order(domain: Domain) -> None:
    created = await domain.create_ok("web")
    assert created.status is S.PENDING
    assert (created.org_id, created.owner_sub, created.cpu, created.memory_mib) == (
        "org-a",
        "user-1",
        1,
        2048,
    )

    active = await domain.wait_for(created.id, S.ACTIVE)

    assert active.ip_address
    assert active.hostname
    assert active.active_at is not None
    events = await domain.events(created.id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, S.PENDING),
        (S.PENDING, S.PROVISIONING),
        (S.PROVISIONING, S.CONFIGURING),
        (S.CONFIGURING, S.ACTIVE),
    ]
    assert [e.version for e in events] == sorted({e.version for e in events})  # strictly increasing
    assert events[0].actor == "user-1"
    assert {e.actor for e in events[1:]} == {"system:opencsp-gateway"}
    assert events[-1].reason == "ConfigurationSucceeded"


async def test_quota_exceeded_is_a_user_error_and_stores_nothing(make_domain: Domains) -> None:
    domain = await make_domain(quota_user_instances=1, quota_org_cpu=3)
    await domain.create_ok("one")

    over_user = await domain.create("two")
    other_user = await domain.create_ok("three", principal("user", sub="user-2"), flavor="medium")
    over_org = await domain.create("four", principal("user", sub="user-3"))

    assert over_user.instance is None
    assert [(e.field, e.code) for e in over_user.errors] == [(None, "QUOTA_EXCEEDED")]
    assert "user quota of 1 instances" in over_user.errors[0].message
    assert other_user.cpu == 2
    assert [e.code for e in over_org.errors] == ["QUOTA_EXCEEDED"]
    assert "org quota of 3 vCPUs would be exceeded (3 in use)" in over_org.errors[0].message
    assert sorted(r.name for r in await domain.lifecycle.store.live()) == ["one", "three"]


async def test_a_deleted_instance_frees_its_quota_and_its_name(make_domain: Domains) -> None:
    domain = await make_domain(quota_user_instances=1)
    await domain.run_in_background()
    first = await domain.create_ok("web")
    await domain.wait_for(first.id, S.ACTIVE)
    over_quota = await domain.create("api")
    taken = await domain.create("web", principal("user", sub="user-2"))
    elsewhere = await domain.create("web", principal("user", sub="user-3", org="org-b"))

    assert [e.code for e in over_quota.errors] == ["QUOTA_EXCEEDED"]
    assert [(e.field, e.code) for e in taken.errors] == [("name", "NAME_TAKEN")]
    assert elsewhere.errors == []

    await domain.lifecycle.delete(principal("user"), first.id)
    await domain.wait_for(first.id, S.DELETED)
    in_quota = await domain.create_ok("api")
    again = await domain.create_ok("web", principal("user", sub="user-2"))

    assert in_quota.owner_sub == "user-1"
    assert again.id != first.id
    assert (await domain.get(first.id)).name == "web"  # the deleted row stays


async def test_the_same_idempotency_key_returns_the_same_instance(domain: Domain) -> None:
    first = await domain.create_ok("web", idempotency_key="order-17")
    second = await domain.create_ok("web", idempotency_key="order-17")
    racing = await asyncio.gather(*(domain.create("api", idempotency_key="order-18") for _ in range(5)))
    other_owner = await domain.create("db", principal("user", sub="user-2"), idempotency_key="order-17")

    assert second.id == first.id
    assert Counter(o.instance.id for o in racing if o.instance is not None).most_common()[0][1] == 5
    assert other_owner.instance is not None
    assert other_owner.instance.id != first.id
    assert sorted(r.name for r in await domain.lifecycle.store.live()) == ["api", "db", "web"]
    await domain.wait_for(first.id, S.ACTIVE)
    assert await domain.statuses(first.id) == ["PENDING", "PROVISIONING", "CONFIGURING", "ACTIVE"]


async def test_invalid_requests_store_nothing(domain: Domain) -> None:
    outcome = await domain.create("Web_1", flavor="huge")

    assert outcome.instance is None
    assert [e.code for e in outcome.errors] == ["INVALID_NAME", "UNKNOWN_FLAVOR"]
    assert await domain.lifecycle.store.live() == []
    assert await domain.cluster.list() == ([], domain.cluster.resource_version)


async def test_delete_moves_deleting_then_deleted_and_removes_the_object(domain: Domain) -> None:
    created = await domain.create_ok("doomed")
    await domain.wait_for(created.id, S.ACTIVE)

    outcome = await domain.lifecycle.delete(principal("user"), created.id)

    assert outcome.errors == []
    assert outcome.instance is not None
    assert outcome.instance.status in (S.DELETING, S.DELETED)
    deleted = await domain.wait_for(created.id, S.DELETED)
    assert deleted.deleted_at is not None
    assert await domain.lifecycle.provisioning.fetch(deleted) is None
    assert (await domain.statuses(created.id))[-2:] == ["DELETING", "DELETED"]
    events = await domain.events(created.id)
    assert (events[-2].actor, events[-2].reason) == ("user-1", "DeleteRequested")
    assert events[-1].reason == "TerraformDestroyed"


async def test_a_failed_instance_can_be_deleted(make_domain: Domains) -> None:
    domain = await make_domain()
    domain.cluster.failures.attempts = None  # every apply fails: the instance stays FAILED
    await domain.run_in_background()
    created = await domain.create_ok("fail-prov-web")
    await domain.wait_for(created.id, S.FAILED)

    outcome = await domain.lifecycle.delete(principal("user"), created.id)

    assert outcome.errors == []
    await domain.wait_for(created.id, S.DELETED)
    assert (await domain.statuses(created.id))[-3:] == ["FAILED", "DELETING", "DELETED"]


async def test_retry_of_a_failed_provisioning_provisions_again(domain: Domain) -> None:
    created = await domain.create_ok("fail-prov-web")
    failed = await domain.wait_for(created.id, S.FAILED)
    assert failed.status_reason == "TFExecApplyFailed"

    outcome = await domain.lifecycle.retry(principal("operator", sub="op-1"), created.id)

    assert outcome.errors == []
    await domain.wait_for(created.id, S.ACTIVE)
    assert await domain.statuses(created.id) == [
        "PENDING",
        "PROVISIONING",
        "FAILED",
        "PENDING",
        "PROVISIONING",
        "CONFIGURING",
        "ACTIVE",
    ]
    retried = (await domain.events(created.id))[3]
    assert (retried.actor, retried.reason) == ("op-1", "RetryRequested")


async def test_retry_of_a_failed_configuration_only_configures_again(domain: Domain) -> None:
    created = await domain.create_ok("fail-conf-web")
    failed = await domain.wait_for(created.id, S.FAILED)
    assert failed.status_reason == "ConfigurationFailed"
    assert failed.ip_address  # the machine exists

    outcome = await domain.lifecycle.retry(principal("operator"), created.id)

    assert outcome.instance is not None
    assert outcome.instance.status in (S.CONFIGURING, S.ACTIVE)
    active = await domain.wait_for(created.id, S.ACTIVE)
    assert active.ip_address == failed.ip_address
    assert await domain.statuses(created.id) == [
        "PENDING",
        "PROVISIONING",
        "CONFIGURING",
        "FAILED",
        "CONFIGURING",
        "ACTIVE",
    ]


# -- which transitions each operation allows --------------------------------------------------------
# Without the watch running, nothing moves an instance but what the test calls, so each status holds.


async def test_delete_is_allowed_from_every_live_status_and_only_once(make_domain: Domains) -> None:
    domain = await make_domain()
    user = principal("user")
    pending = await domain.create_ok("pending")

    first = await domain.lifecycle.delete(user, pending.id)
    second = await domain.lifecycle.delete(user, pending.id)  # while DELETING: harmless, no new event

    assert first.errors == second.errors == []
    assert first.instance is not None
    assert first.instance.status is S.DELETING
    assert second.instance is not None
    assert second.instance.version == first.instance.version
    await domain.settle()
    await domain.lifecycle.reconcile()  # sees the object gone
    assert (await domain.get(pending.id)).status is S.DELETED
    third = await domain.lifecycle.delete(user, pending.id)
    assert [e.code for e in third.errors] == ["ALREADY_DELETED"]
    assert await domain.statuses(pending.id) == ["PENDING", "DELETING", "DELETED"]


async def test_retry_is_allowed_only_from_failed(make_domain: Domains) -> None:
    domain = await make_domain()
    operator = principal("operator")
    pending = await domain.create_ok("pending")

    refused = await domain.lifecycle.retry(operator, pending.id)

    assert [(e.field, e.code) for e in refused.errors] == [("id", "NOT_FAILED")]
    assert refused.instance is not None
    assert refused.instance.version == pending.version
    await domain.run_in_background()
    active = await domain.wait_for(pending.id, S.ACTIVE)
    assert [e.code for e in (await domain.lifecycle.retry(operator, pending.id)).errors] == ["NOT_FAILED"]
    assert (await domain.get(pending.id)).version == active.version


async def test_a_stale_transition_loses_the_compare_and_set(make_domain: Domains) -> None:
    domain = await make_domain()
    created = await domain.create_ok("web")
    store = domain.lifecycle.store

    wrong_status = await store.transition(created.id, FINISH_CONFIGURING, actor="test", reason="Nope")
    stale = await store.transition(
        created.id, FAIL_PROVISIONING, actor="test", expected_version=created.version + 1
    )
    refused_by_when = await store.transition(
        created.id, FAIL_PROVISIONING, actor="test", when=lambda r: r.ip_address is not None
    )
    moved = await store.transition(created.id, FAIL_PROVISIONING, actor="test")
    again = await store.transition(created.id, FAIL_PROVISIONING, actor="test")

    assert wrong_status is None
    assert stale is None
    assert refused_by_when is None
    assert again is None
    assert moved is not None
    assert (moved.status, moved.version) == (S.FAILED, created.version + 1)
    assert await domain.statuses(created.id) == ["PENDING", "FAILED"]
    assert await store.transition(uuid.uuid4(), FAIL_OBJECT_LOST, actor="test") is None


async def test_duplicate_cluster_news_changes_nothing(domain: Domain) -> None:
    created = await domain.create_ok("web")
    active = await domain.wait_for(created.id, S.ACTIVE)
    obj = await domain.lifecycle.provisioning.fetch(active)
    assert obj is not None
    before = await domain.events(created.id)

    await domain.lifecycle.provisioning.apply(active, obj)  # the watch's event again
    await domain.lifecycle.provisioning.on_list([obj])  # a re-list
    await domain.lifecycle.reconcile()

    assert (await domain.get(created.id)).version == active.version
    assert await domain.events(created.id) == before
