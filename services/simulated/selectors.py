"""Equality-based label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`, comma meaning AND).

The gateway only ever selects by equality (`app.kubernetes.io/managed-by=opencsp-gateway`); set-based
requirements are refused with the API server's 400 rather than silently matching too much.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from services.kubernetes.cluster import ClusterError

LabelMatcher = Callable[[Mapping[str, str]], bool]

_REQUIREMENT = re.compile(
    r"(?P<neg>!)?(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)(?:\s*(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*))?"
)


def parse_selector(text: str, *, what: str = "list terraforms") -> LabelMatcher:
    """A predicate over an object's labels; ClusterError 400 when `text` is not an equality selector."""
    checks: list[LabelMatcher] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _REQUIREMENT.fullmatch(part)
        if match is None or (match["neg"] and match["op"]):
            raise ClusterError(f"{what}: 400 Bad Request (unable to parse requirement {part!r})", status=400)
        checks.append(_requirement(match["key"], match["op"], match["value"], negated=bool(match["neg"])))
    return lambda labels: all(check(labels) for check in checks)


def _requirement(key: str, op: str | None, value: str | None, *, negated: bool) -> LabelMatcher:
    def absent(labels: Mapping[str, str]) -> bool:
        return key not in labels

    def present(labels: Mapping[str, str]) -> bool:
        return key in labels

    def equal(labels: Mapping[str, str]) -> bool:
        return labels.get(key) == value

    def not_equal(labels: Mapping[str, str]) -> bool:  # as in Kubernetes, true without the key too
        return labels.get(key) != value

    if negated:
        return absent
    if op is None:
        return present
    return not_equal if op == "!=" else equal
