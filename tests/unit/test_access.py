"""Row-level rules: what each caller sees (a predicate that agrees with the SQL clause), deletes, retries."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.auth.principal import SYSTEM, Principal
from services.db.models import InstanceRow
from services.instances.access import may_delete, may_power, may_resize, may_retry, visibility_of
from services.instances.records import InstanceRecord
from services.instances.states import InstanceStatus
from services.instances.visibility import Visibility
from tests.support.factories import insert_instances, instance_row
from tests.unit.conftest import ADMIN_ORG, Domain, principal

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def instance(org: str = "org-a", owner: str = "user-1") -> InstanceRecord:
    return InstanceRecord(
        id=uuid.uuid4(),
        name="web",
        description="",
        org_id=org,
        owner_sub=owner,
        owner_name="",
        flavor="small",
        image="debian-12",
        cpu=1,
        memory_mib=2048,
        disk_gib=20,
        ssh_public_key=None,
        status=InstanceStatus.ACTIVE,
        status_reason=None,
        status_message=None,
        ip_address=None,
        hostname=None,
        node=None,
        terraform_name=None,
        terraform_namespace=None,
        semaphore_task_id=None,
        created_at=NOW,
        updated_at=NOW,
        active_at=NOW,
        deleted_at=None,
        version=1,
    )


MINE = instance()
COLLEAGUES = instance(owner="user-2")
SAME_SUB_OTHER_ORG = instance(org="org-b")  # subjects are unique per issuer, but the org is checked too
FOREIGN = instance(org="org-b", owner="user-9")
ROWS = {
    "mine": MINE,
    "colleague's": COLLEAGUES,
    "same sub, other org": SAME_SUB_OTHER_ORG,
    "foreign": FOREIGN,
}

CALLERS: dict[str, Principal] = {
    "nobody": principal(None),
    "user": principal("user"),
    "viewer": principal("viewer"),
    "operator": principal("operator"),
    "admin of org-a": principal("admin"),
    "viewer granted by org-b": principal("viewer", roles_in="org-b"),
    "platform admin": principal("admin", sub="root", org=ADMIN_ORG),
    "system": SYSTEM,
}

# caller → (sees, may delete, may retry), each the set of ROWS names.
EXPECTED: dict[str, tuple[set[str], set[str], set[str]]] = {
    "nobody": (set(), set(), set()),
    "user": ({"mine"}, {"mine"}, set()),
    "viewer": ({"mine", "colleague's"}, set(), set()),
    "operator": ({"mine", "colleague's"}, {"mine", "colleague's"}, {"mine", "colleague's"}),
    "admin of org-a": ({"mine", "colleague's"}, {"mine", "colleague's"}, {"mine", "colleague's"}),
    "viewer granted by org-b": ({"same sub, other org", "foreign"}, set(), set()),
    "platform admin": (set(ROWS), set(ROWS), set(ROWS)),
    "system": (set(ROWS), set(ROWS), set(ROWS)),
}


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_who_sees_deletes_and_retries_what(caller: str) -> None:
    who = CALLERS[caller]
    visibility = visibility_of(who)

    seen = {
        name for name, row in ROWS.items() if visibility.allows(org_id=row.org_id, owner_sub=row.owner_sub)
    }
    deletable = {name for name, row in ROWS.items() if may_delete(who, row)}
    retryable = {name for name, row in ROWS.items() if may_retry(who, row)}

    assert (seen, deletable, retryable) == EXPECTED[caller]


def test_a_user_cannot_delete_their_own_instance_without_delete() -> None:
    viewer = principal("viewer")
    assert not may_delete(viewer, MINE)
    assert may_delete(principal("user"), MINE)
    assert not may_delete(principal("user", sub="user-2"), MINE)


def test_callers_with_the_same_rights_in_an_org_share_one_visibility() -> None:
    # Reading the whole org covers one's own rows: the owner is left out, so subscriptions can be shared.
    assert visibility_of(principal("viewer")) == visibility_of(principal("viewer", sub="user-2"))
    assert visibility_of(principal("viewer")) == Visibility(org_ids=frozenset({"org-a"}))
    assert visibility_of(principal("user")) != visibility_of(principal("user", sub="user-2"))
    assert visibility_of(principal("admin", org=ADMIN_ORG)) == Visibility.everything()


def test_nothing_is_visible_through_an_empty_visibility() -> None:
    assert not Visibility().allows(org_id="org-a", owner_sub="user-1")
    assert not Visibility(owner_sub="user-1").allows(org_id="org-a", owner_sub="user-1")  # needs the org too


async def test_the_sql_clause_selects_exactly_what_the_predicate_allows(domain_without_watch: Domain) -> None:
    engine = domain_without_watch.runtime.engine
    names = {name: f"vm-{i}" for i, name in enumerate(sorted(ROWS))}
    rows = [
        instance_row(i, name=names[name], org_id=row.org_id, owner_sub=row.owner_sub)
        for i, (name, row) in enumerate(sorted(ROWS.items()))
    ]
    await insert_instances(engine, rows)

    for caller, who in CALLERS.items():
        clause = visibility_of(who).clause()
        async with engine.connect() as connection:
            selected = set((await connection.execute(select(InstanceRow.name).where(clause))).scalars())

        assert selected == {names[name] for name in EXPECTED[caller][0]}, caller


def test_retry_needs_retry_in_the_instances_org() -> None:
    assert may_retry(principal("operator"), COLLEAGUES)
    assert not may_retry(principal("operator"), FOREIGN)
    assert may_retry(principal("operator", roles_in="org-b"), FOREIGN)
    assert not may_retry(principal("user"), replace(MINE, status=InstanceStatus.FAILED))


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("nobody", set()),
        ("viewer", set()),  # sees the org, may act on nothing
        ("user", {"mine"}),  # own instances only
        ("operator", {"mine", "colleague's"}),  # the org's
    ],
)
def test_who_may_power_and_resize_what(caller: str, expected: set[str]) -> None:
    who = CALLERS[caller]
    assert {name for name, row in ROWS.items() if may_power(who, row)} == expected
    assert {name for name, row in ROWS.items() if may_resize(who, row)} == expected
