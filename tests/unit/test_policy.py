"""Pure rules of who may do what (the role policy, per-org permissions) and what a create may ask for.

`tests/auth/test_principal.py` covers claims parsing and the default role table; this file covers the
policy's own parsing and `Principal.from_roles` with an admin org configured (the production setup).
"""

from __future__ import annotations

from typing import Any

import pytest

from services.auth import permissions as p
from services.auth.permissions import DEFAULT_POLICY, PolicyError, parse_policy, permissions_for
from services.catalog import DEFAULT_FLAVORS, DEFAULT_IMAGES, Catalog
from services.instances.policy import (
    MAX_DESCRIPTION,
    MAX_IDEMPOTENCY_KEY,
    CreateRequest,
    ValidCreate,
    validate_create,
)
from tests.unit.conftest import ADMIN_ORG, principal

# -- the policy -------------------------------------------------------------------------------------


def test_policy_accepts_json_text_bytes_or_a_mapping_alike() -> None:
    expected = {"auditor": frozenset({p.INSTANCE_READ, p.QUOTA_READ_ORG}), "nobody": frozenset()}
    text = '{"auditor": ["instance:read", "quota:read:org", "instance:read"], "nobody": []}'

    assert parse_policy(text) == expected
    assert parse_policy(text.encode()) == expected
    assert parse_policy({"auditor": ("quota:read:org", "instance:read"), "nobody": []}) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"viewer": ["instance:read", "admin:everything"]},
            "role 'viewer': unknown permission 'admin:everything'",
        ),
        ({"viewer": b"instance:read"}, "role 'viewer': permissions must be a list"),
        ({"viewer": 7}, "role 'viewer': permissions must be a list"),
        ({"viewer": [None]}, "role 'viewer': permissions must be a list"),
        ({1: ["instance:read"]}, "role names must be non-empty strings"),
        ("null", "must be a JSON object"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_a_malformed_policy_is_refused_naming_the_culprit(value: Any, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(value)


def test_permissions_are_the_union_of_known_roles() -> None:
    assert (
        permissions_for(["viewer", "user"], DEFAULT_POLICY)
        == DEFAULT_POLICY["viewer"] | DEFAULT_POLICY["user"]
    )
    assert permissions_for(["superuser", ""], DEFAULT_POLICY) == frozenset()
    assert permissions_for([], DEFAULT_POLICY) == frozenset()


# -- permissions per org, with an admin org configured ----------------------------------------------


def test_a_role_counts_only_in_the_org_that_granted_it() -> None:
    guest = principal("operator", org="org-a", roles_in="org-b")

    assert guest.permissions == frozenset()
    assert guest.has(p.INSTANCE_RETRY, "org-b")
    assert not guest.has(p.INSTANCE_RETRY)
    assert not guest.has(p.INSTANCE_RETRY, "org-c")
    assert guest.grants == {"org-b": DEFAULT_POLICY["operator"]}


def test_admin_of_the_admin_org_acts_in_every_org() -> None:
    platform_admin = principal("admin", org=ADMIN_ORG)

    assert platform_admin.all_orgs
    assert platform_admin.permissions_in("org-z") == DEFAULT_POLICY["admin"]
    assert platform_admin.has(p.INSTANCE_DELETE_ORG, "org-z")


def test_admin_of_any_other_org_stays_in_it_and_all_orgs_is_not_listed() -> None:
    customer_admin = principal("admin", org="org-a")

    assert not customer_admin.all_orgs
    assert customer_admin.has(p.INSTANCE_DELETE_ORG)
    assert not customer_admin.has(p.INSTANCE_READ, "org-z")
    assert p.ADMIN_ALL_ORGS not in customer_admin.permissions  # what `me` shows is what the checks do
    assert customer_admin.permissions == DEFAULT_POLICY["admin"] - {p.ADMIN_ALL_ORGS}


def test_admin_granted_by_the_admin_org_to_an_outsider_does_not_cross_orgs() -> None:
    # The admin org grants `admin` to a user whose home is org-a: it counts in the admin org only.
    outsider = principal("admin", org="org-a", roles_in=ADMIN_ORG)

    assert not outsider.all_orgs
    assert outsider.has(p.ADMIN_SYNC, ADMIN_ORG)
    assert not outsider.has(p.INSTANCE_READ)
    assert not outsider.has(p.INSTANCE_READ, "org-z")


def test_a_policy_that_gives_all_orgs_to_another_role_crosses_orgs_only_from_the_admin_org() -> None:
    policy = parse_policy({"support": ["instance:read", "instance:read:org", "admin:all-orgs"]})
    common: dict[str, Any] = {
        "policy": policy,
        "expires_at": principal(None).expires_at,
        "admin_org_id": ADMIN_ORG,
    }
    from services.auth.principal import Principal

    inside = Principal.from_roles(
        sub="s", org_id=ADMIN_ORG, roles={ADMIN_ORG: frozenset({"support"})}, **common
    )
    outside = Principal.from_roles(sub="s", org_id="org-a", roles={"org-a": frozenset({"support"})}, **common)

    assert inside.all_orgs
    assert inside.has(p.INSTANCE_READ_ORG, "org-z")
    assert not inside.has(p.INSTANCE_DELETE, "org-z")  # only what it holds at home
    assert not outside.all_orgs
    assert not outside.has(p.INSTANCE_READ_ORG, "org-z")


# -- what a create may ask for ------------------------------------------------------------------------

CATALOG = Catalog(DEFAULT_FLAVORS, DEFAULT_IMAGES)


def codes(request: CreateRequest) -> list[tuple[str | None, str]]:
    result = validate_create(request, CATALOG)
    assert isinstance(result, list), result
    assert all(error.message for error in result)
    return [(error.field, error.code) for error in result]


def request(**changes: Any) -> CreateRequest:
    return CreateRequest(**{"name": "web", "flavor": "small", "image": "debian-12", **changes})


def test_a_valid_request_resolves_its_flavor_and_image() -> None:
    valid = validate_create(
        request(flavor="large", image="rocky-9", description="x" * MAX_DESCRIPTION), CATALOG
    )

    assert isinstance(valid, ValidCreate)
    assert (valid.flavor.name, valid.flavor.cpu, valid.image.name) == ("large", 4, "rocky-9")


@pytest.mark.parametrize("name", ["a", "web-1", "0", "x" * 63, "a-b-c9"])
def test_names_that_are_dns_labels_are_accepted(name: str) -> None:
    assert isinstance(validate_create(request(name=name), CATALOG), ValidCreate)


@pytest.mark.parametrize(
    "name", ["", "Web", "web_1", "-web", "web-", "x" * 64, "web.example", "wéb", "web\n"]
)
def test_names_that_are_not_dns_labels_are_refused(name: str) -> None:
    assert codes(request(name=name)) == [("name", "INVALID_NAME")]


def test_an_unknown_flavor_or_image_names_the_choices() -> None:
    [flavor] = validate_create(request(flavor="huge"), CATALOG)  # type: ignore[misc]
    [image] = validate_create(request(image="windows-95"), CATALOG)  # type: ignore[misc]

    assert (flavor.field, flavor.code) == ("flavor", "UNKNOWN_FLAVOR")
    assert "small, medium, large, xlarge" in flavor.message
    assert (image.field, image.code) == ("image", "UNKNOWN_IMAGE")
    assert "debian-12" in image.message


@pytest.mark.parametrize("key", ["order-17", "x" * MAX_IDEMPOTENCY_KEY, "a b", "ключ"])
def test_printable_idempotency_keys_up_to_the_limit_are_accepted(key: str) -> None:
    assert isinstance(validate_create(request(idempotency_key=key), CATALOG), ValidCreate)


@pytest.mark.parametrize("key", ["", "x" * (MAX_IDEMPOTENCY_KEY + 1), "a\nb", "tab\t", "\x00"])
def test_other_idempotency_keys_are_refused(key: str) -> None:
    assert codes(request(idempotency_key=key)) == [("idempotencyKey", "INVALID_KEY")]


def test_every_problem_is_reported_at_once_in_field_order() -> None:
    bad = request(name="BAD", flavor="huge", image="nope", idempotency_key="")

    assert codes(bad) == [
        ("name", "INVALID_NAME"),
        ("flavor", "UNKNOWN_FLAVOR"),
        ("image", "UNKNOWN_IMAGE"),
        ("idempotencyKey", "INVALID_KEY"),
    ]
