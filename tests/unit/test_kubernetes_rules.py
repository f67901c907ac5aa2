"""The Kubernetes API's object rules shared by the simulated cluster and the API stand-in (no sockets)."""

from __future__ import annotations

import pytest

from services.kubernetes.object_rules import (
    Requirement,
    SelectorError,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_key,
    is_label_value,
    label_problems,
    parse_requirements,
    parse_selector,
)

LABELS = {"app": "web", "tier": "db", "example.com/zone": "a", "size": "10", "empty": ""}

SELECTS = [
    ("", True),
    ("   ", True),
    ("app=web", True),
    ("app==web", True),
    ("app = web", True),
    ("app=api", False),
    ("missing=web", False),
    ("app!=api", True),
    ("app!=web", False),
    ("missing!=web", True),  # != also selects objects without the key
    ("app in (web, api)", True),
    ("app in(api)", False),
    ("missing in (web)", False),
    ("app notin (api)", True),
    ("app notin (web,api)", False),
    ("missing notin (web)", True),
    ("tier", True),
    ("missing", False),
    ("!missing", True),
    ("! tier", False),
    ("example.com/zone=a", True),
    ("app=web,tier=db", True),
    ("app=web, tier=api", False),
    ("app in (web),!missing,tier", True),
    ("empty=", True),
    ("app=", False),
    ("empty in (,x)", True),
    ("empty in ()", True),  # `()` holds the empty value, as in Kubernetes
    ("app notin ()", True),
    ("app in (a,,web)", True),
    ("size>9", True),
    ("size>10", False),
    ("size<11", True),
    ("app>1", False),  # a value that is not a number never compares
    ("missing<1", False),
]


@pytest.mark.parametrize(("selector", "selected"), SELECTS)
def test_selectors_match_as_the_api_server_does(selector: str, selected: bool) -> None:
    assert parse_selector(selector)(LABELS) is selected


def test_a_selector_parses_into_its_requirements() -> None:
    assert parse_requirements("a=b, c notin (x,y), !d, e") == [
        Requirement("a", "=", frozenset({"b"})),
        Requirement("c", "notin", frozenset({"x", "y"})),
        Requirement("d", "!", frozenset()),
        Requirement("e", "exists", frozenset()),
    ]
    assert parse_requirements("in in (in, notin), x notin ()") == [
        Requirement("in", "in", frozenset({"in", "notin"})),
        Requirement("x", "notin", frozenset({""})),
    ]


def test_numbers_compare_only_within_int64() -> None:
    labels = {"huge": "9" * 5000, "big": str(2**63), "max": str(2**63 - 1)}
    assert parse_selector("huge>1")(labels) is False  # no int() of a 5000-digit string
    assert parse_selector("big>1")(labels) is False
    assert parse_selector("max>9223372036854775806")(labels) is True
    with pytest.raises(SelectorError):
        parse_selector(f"max<{2**63}")


MALFORMED = [
    "a in b",  # a set needs parentheses
    "a in (x",
    "a in (,,)",  # as labels.Parse: an empty value may not end a list after ',,'
    "a in (x,,)",
    "a in (x y)",
    "a=(x)",
    "a=b=c",
    "a=b c",
    "!a=b",  # a negated key takes no operator
    "!",
    "a!b",
    "a,",
    ",a",
    "a,,b",
    "=b",
    "a ~ b",
    "a>x",  # gt/lt need an integer
    "a<99999999999999999999",
    "-a=b",  # the key is not a qualified name
    "a/b/c=d",
    "/a=b",
    "Not_DNS.example.com/a=b",
    "k" * 64,
    "a=" + "v" * 64,  # the value is not a label value
    "a=-b",
    "a in (b, c_)",
    "a=b\u00e9",
]


@pytest.mark.parametrize("selector", MALFORMED)
def test_malformed_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(selector)


DNS_LABELS = [
    ("a", True),
    ("web-1", True),
    ("1web", True),
    ("x" * 63, True),
    ("x" * 64, False),
    ("", False),
    ("-web", False),
    ("web-", False),
    ("Web", False),
    ("web_1", False),
    ("web.1", False),
    ("web\n", False),  # Python's `$` would let a trailing newline through
]


@pytest.mark.parametrize(("name", "valid"), DNS_LABELS)
def test_dns1123_labels(name: str, valid: bool) -> None:
    assert is_dns1123_label(name) is valid


DNS_SUBDOMAINS = [
    ("inst-0123", True),
    ("a.b.c", True),
    ("example.com", True),
    (".".join(["x" * 63] * 4)[:253], True),
    ("x" * 254, False),
    ("", False),
    ("a..b", False),
    (".a", False),
    ("a.", False),
    ("a-.b", False),
    ("A.b", False),
    ("a_b", False),
    ("inst-1\n", False),
]


@pytest.mark.parametrize(("name", "valid"), DNS_SUBDOMAINS)
def test_dns1123_subdomains(name: str, valid: bool) -> None:
    assert is_dns1123_subdomain(name) is valid


LABEL_KEYS = [
    ("app", True),
    ("App_1.x-y", True),
    ("app.kubernetes.io/managed-by", True),
    ("opencsp.io/instance-id", True),
    ("k" * 63, True),
    ("k" * 64, False),
    ("", False),
    ("-app", False),
    ("app-", False),
    ("/app", False),  # an empty prefix
    ("example.com/", False),  # an empty name
    ("a/b/c", False),
    ("Example.com/app", False),  # the prefix is a lowercase DNS subdomain
    ("x" * 254 + "/app", False),
    ("app\n", False),
    ("ap p", False),
]


@pytest.mark.parametrize(("key", "valid"), LABEL_KEYS)
def test_label_keys(key: str, valid: bool) -> None:
    assert is_label_key(key) is valid


LABEL_VALUES = [
    ("", True),
    ("opencsp-gateway", True),
    ("0123e4567-e89b-12d3-a456-426614174000", True),
    ("A.b_c-d", True),
    ("v" * 63, True),
    ("v" * 64, False),
    ("-v", False),
    ("v.", False),
    ("a/b", False),
    ("a b", False),
    ("v\n", False),
]


@pytest.mark.parametrize(("value", "valid"), LABEL_VALUES)
def test_label_values(value: str, valid: bool) -> None:
    assert is_label_value(value) is valid


def test_label_problems_name_each_bad_key_and_value() -> None:
    assert label_problems({"app": "web", "opencsp.io/instance-id": "x"}) == []
    assert label_problems({"bad key": "ok", "ok": "bad value", "n": 1}) == [
        "metadata.labels: Invalid value: 'bad key': not a valid label key",
        "metadata.labels: Invalid value: 'bad value': not a valid label value",
        "metadata.labels: Invalid value: 1: not a valid label value",
    ]
