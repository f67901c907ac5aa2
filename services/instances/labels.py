"""Instance labels: their rules, their copy on the Terraform object, and the filters' selectors.

Keys and values follow Kubernetes label syntax (`services.kubernetes.object_rules`), so the same labels
can be copied onto the cluster. A user key has no prefix: on the object it becomes
`label.opencsp.io/<key>`, a valid qualified name (prefix a DNS subdomain, name at most 63), which keeps
user labels apart from the gateway's own (`opencsp.io/instance-id`, `app.kubernetes.io/managed-by`) and
from prefixes Kubernetes reserves. A prefixed user key could not be prefixed again, so it is refused.

Filters are Kubernetes selector requirements (`services/instances/reading.py` turns each into EXISTS /
NOT EXISTS over the `instance_labels` child table); `gt`/`lt` (integer comparisons) are refused, since a
value is text and no portable SQL compares the numeric ones only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from services.kubernetes.object_rules import (
    QUALIFIED_NAME_MAX,
    Requirement,
    SelectorError,
    is_label_key,
    is_label_value,
    parse_requirements,
)

MAX_LABELS: Final = 64
OBJECT_LABEL_PREFIX: Final = "label.opencsp.io/"
MAX_SELECTORS: Final = 20
MAX_SELECTOR_LENGTH: Final = 1024


class LabelFilterError(ValueError):
    """A filter's selector is not one we accept; the message names it."""


def label_problems(labels: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(code, message) for each rule the labels break; empty when they may be stored."""
    problems: list[tuple[str, str]] = []
    if len(labels) > MAX_LABELS:
        problems.append(("TOO_MANY_LABELS", f"at most {MAX_LABELS} labels, got {len(labels)}"))
    seen: set[str] = set()
    for key, value in labels[: MAX_LABELS + 1]:
        if "/" in key:
            problems.append(
                (
                    "INVALID_LABEL_KEY",
                    f"label key {_shown(key)} must have no prefix ('/'): the gateway adds one",
                )
            )
        elif not is_label_key(key):
            problems.append(
                (
                    "INVALID_LABEL_KEY",
                    f"label key {_shown(key)} must be 1-{QUALIFIED_NAME_MAX} letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit",
                )
            )
        if not is_label_value(value):
            problems.append(
                (
                    "INVALID_LABEL_VALUE",
                    f"label value {_shown(value)} of key {_shown(key)} must be empty or at most 63 letters, "
                    "digits, '-', '_' or '.', starting and ending with a letter or digit",
                )
            )
        if key in seen:
            problems.append(("DUPLICATE_LABEL_KEY", f"label key {_shown(key)} is given twice"))
        seen.add(key)
    return problems


def object_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels as they go onto the Terraform object."""
    return {OBJECT_LABEL_PREFIX + key: value for key, value in labels.items()}


def parse_label_filter(selectors: Iterable[str]) -> tuple[Requirement, ...]:
    """The requirements of every selector (each may hold several, comma-separated; all must hold)."""
    requirements: list[Requirement] = []
    given = list(selectors)
    if len(given) > MAX_SELECTORS:
        raise LabelFilterError(f"at most {MAX_SELECTORS} label selectors")
    for text in given:
        if len(text) > MAX_SELECTOR_LENGTH:
            raise LabelFilterError(f"a label selector must be at most {MAX_SELECTOR_LENGTH} characters")
        try:
            parsed = parse_requirements(text)
        except SelectorError as error:
            raise LabelFilterError(f"label selector {_shown(text)} is invalid: {error}") from None
        for requirement in parsed:
            if requirement.operator in ("gt", "lt"):
                raise LabelFilterError(
                    f"label selector {_shown(text)}: the operators > and < are not supported for labels"
                )
        requirements.extend(parsed)
    return tuple(requirements)


def _shown(text: str) -> str:
    """A hostile string quoted and cut short, for an error message."""
    return repr(text if len(text) <= 80 else text[:80] + "…")
