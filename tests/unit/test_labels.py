"""Label rules: Kubernetes syntax without a prefix, at most 64, and selectors the filter accepts."""

from __future__ import annotations

import pytest

from services.instances.labels import (
    MAX_SELECTORS,
    OBJECT_LABEL_PREFIX,
    LabelFilterError,
    label_problems,
    object_labels,
    parse_label_filter,
)
from services.kubernetes.object_rules import is_label_key


def codes(*labels: tuple[str, str]) -> list[str]:
    return [code for code, _ in label_problems(labels)]


def test_valid_labels_pass() -> None:
    assert codes(("env", "prod"), ("a.b_c-d", ""), ("k" * 63, "v" * 63), ("X9", "Y.z")) == []


@pytest.mark.parametrize(
    ("label", "code"),
    [
        (("", "x"), "INVALID_LABEL_KEY"),
        (("opencsp.io/x", "x"), "INVALID_LABEL_KEY"),  # a prefix could not be prefixed again
        (("env\n", "x"), "INVALID_LABEL_KEY"),
        (("é", "x"), "INVALID_LABEL_KEY"),
        (("env", "-x"), "INVALID_LABEL_VALUE"),
        (("env", "x\n"), "INVALID_LABEL_VALUE"),
    ],
)
def test_invalid_labels_are_named(label: tuple[str, str], code: str) -> None:
    assert codes(label) == [code]


def test_limits_and_duplicates() -> None:
    assert codes(*[(f"k{i}", "") for i in range(64)]) == []
    assert codes(*[(f"k{i}", "") for i in range(65)]) == ["TOO_MANY_LABELS"]
    assert codes(("a", "1"), ("a", "1")) == ["DUPLICATE_LABEL_KEY"]
    # A flood is judged on its first 65 only: the answer stays small.
    assert len(label_problems([("-", "-")] * 10_000)) == 1 + 2 * 65 + 64


def test_every_valid_key_stays_a_valid_label_key_once_prefixed() -> None:
    labels = {"k" * 63: "v", "a.b": "", "Z": "1"}
    copied = object_labels(labels)
    assert list(copied) == [OBJECT_LABEL_PREFIX + key for key in labels]
    assert all(is_label_key(key) for key in copied)


def test_filters_parse_into_requirements_and_refuse_what_sql_cannot_serve() -> None:
    parsed = parse_label_filter(["env=prod,tier!=db", "team", "!x", "a in (b,c)"])
    assert [(r.key, r.operator, sorted(r.values)) for r in parsed] == [
        ("env", "=", ["prod"]),
        ("tier", "!=", ["db"]),
        ("team", "exists", []),
        ("x", "!", []),
        ("a", "in", ["b", "c"]),
    ]
    with pytest.raises(LabelFilterError, match="not supported"):
        parse_label_filter(["n<3"])
    with pytest.raises(LabelFilterError, match=f"at most {MAX_SELECTORS}"):
        parse_label_filter(["a"] * (MAX_SELECTORS + 1))
    with pytest.raises(LabelFilterError, match="at most 1024 characters"):
        parse_label_filter(["a" * 1025])
    with pytest.raises(LabelFilterError, match=r"label selector 'aaaa.*…' is invalid"):
        parse_label_filter(["a" * 100 + "=("])
