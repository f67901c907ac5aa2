"""Rules the Kubernetes API server applies to object names, labels and label selectors.

One home for them, so dev mode's simulated cluster (`services.simulated`) and the test stand-in of the
API server (`tests/peers/kube_store.py`) refuse and select exactly what a real API server does, and
neither drifts from the other. Standard library only: this is knowledge of the API's rules, not a
client. The grammar and checks follow k8s.io/apimachinery (`labels.Parse`, `validation.IsQualifiedName`,
`IsValidLabelValue`, `IsDNS1123Subdomain`, `IsDNS1123Label`); patterns are matched against the whole
string, so a trailing newline is never accepted as Python's `$` would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

LabelMatcher = Callable[[Mapping[str, str]], bool]

DNS1123_LABEL_MAX: Final = 63
DNS1123_SUBDOMAIN_MAX: Final = 253
LABEL_VALUE_MAX: Final = 63
QUALIFIED_NAME_MAX: Final = 63

_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE: Final = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_INT64: Final = re.compile(r"[+-]?[0-9]+")


def is_dns1123_label(name: str) -> bool:
    """At most 63 lowercase letters, digits and '-', starting and ending with a letter or digit."""
    return len(name) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.fullmatch(name) is not None


def is_dns1123_subdomain(name: str) -> bool:
    """Dot-separated DNS-1123 labels, at most 253 characters: what `metadata.name` must be."""
    return len(name) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(name) is not None


def is_label_key(key: str) -> bool:
    """A qualified name: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name at most 63 characters."""
    prefix, slash, name = key.partition("/")
    if not slash:
        prefix, name = "", key
    elif not prefix or not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= QUALIFIED_NAME_MAX and _QUALIFIED_NAME.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    """Empty, or at most 63 alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric."""
    return len(value) <= LABEL_VALUE_MAX and _LABEL_VALUE.fullmatch(value) is not None


def label_problems(labels: Mapping[str, object]) -> list[str]:
    """What the API server says about invalid `metadata.labels` (empty when they are all valid)."""
    problems = []
    for key, value in labels.items():
        if not is_label_key(key):
            problems.append(f"metadata.labels: Invalid value: {key!r}: not a valid label key")
        if not isinstance(value, str) or not is_label_value(value):
            problems.append(f"metadata.labels: Invalid value: {value!r}: not a valid label value")
    return problems


# --- label selectors ---------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label selector the API server refuses with 400 Bad Request."""


Operator = Literal["=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"]

_WHITESPACE: Final = " \t\r\n"
_SYMBOLS: Final = "=!(),<>"
_TWO_CHAR_SYMBOLS: Final = ("!=", "==")
_SET_OPERATORS: Final = ("in", "notin")
_OPERATORS: Final[dict[str, Operator]] = {"=": "=", "==": "==", "!=": "!=", ">": "gt", "<": "lt"}
_END: Final = ""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated part of a selector; `values` is empty for `exists` and `!`."""

    key: str
    operator: Operator
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!":
            return self.key not in labels
        if self.operator in ("=", "==", "in"):
            return self.key in labels and labels[self.key] in self.values
        if self.operator in ("!=", "notin"):  # as in Kubernetes, true for objects without the key too
            return self.key not in labels or labels[self.key] not in self.values
        number = _int64(labels.get(self.key))
        if number is None:  # absent or not a number: never compares
            return False
        (limit,) = self.values
        return number > int(limit) if self.operator == "gt" else number < int(limit)


def parse_selector(text: str) -> LabelMatcher:
    """A predicate over an object's labels for `text` in the API's selector syntax (`a=b`, `a==b`,
    `a!=b`, `a in (b,c)`, `a notin (b)`, `a`, `!a`, `a>1`, `a<1`; comma means AND; empty selects
    everything). SelectorError for anything the API server would refuse."""
    requirements = parse_requirements(text)
    return lambda labels: all(requirement.matches(labels) for requirement in requirements)


def parse_requirements(text: str) -> list[Requirement]:
    """The requirements of `text`, by the grammar of k8s.io/apimachinery's `labels.Parse`."""
    return _Parser(_lex(text)).parse()


def _lex(text: str) -> list[str]:
    """Identifiers and symbols; `_END` last. Symbols are single characters, `!=` and `==`."""
    lexemes: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in _SYMBOLS:
            symbol = text[i : i + 2] if text[i : i + 2] in _TWO_CHAR_SYMBOLS else ch
            lexemes.append(symbol)
            i += len(symbol)
        else:
            start = i
            while i < len(text) and text[i] not in _WHITESPACE and text[i] not in _SYMBOLS:
                i += 1
            lexemes.append(text[start:i])
    lexemes.append(_END)
    return lexemes


def _is_identifier(lexeme: str) -> bool:
    return lexeme != _END and lexeme[0] not in _SYMBOLS


class _Parser:
    def __init__(self, lexemes: list[str]) -> None:
        self._items = lexemes
        self._at = 0

    def _peek(self) -> str:
        return self._items[self._at]

    def _next(self) -> str:
        lexeme = self._items[self._at]
        self._at += 1 if lexeme != _END else 0
        return lexeme

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        if self._peek() == _END:
            return requirements
        while True:
            if not (_is_identifier(self._peek()) or self._peek() == "!"):
                raise SelectorError(
                    f"found {_shown(self._peek())}, expected: !, identifier, or end of string"
                )
            requirements.append(self._requirement())
            lexeme = self._next()
            if lexeme == _END:
                return requirements
            if lexeme != ",":
                raise SelectorError(f"found {_shown(lexeme)}, expected: ',' or 'end of string'")
            if not (_is_identifier(self._peek()) or self._peek() == "!"):
                raise SelectorError(f"found {_shown(self._peek())}, expected: identifier after ','")

    def _requirement(self) -> Requirement:
        negated = self._peek() == "!"
        if negated:
            self._next()
        key = self._next()
        if not _is_identifier(key):
            raise SelectorError(f"found {_shown(key)}, expected: identifier")
        if not is_label_key(key):
            raise SelectorError(f"invalid label key {key!r}")
        if negated:
            return Requirement(key, "!", frozenset())
        if self._peek() in (",", _END):
            return Requirement(key, "exists", frozenset())
        lexeme = self._next()
        operator: Operator
        if lexeme in _SET_OPERATORS:
            operator = "notin" if lexeme == "notin" else "in"
            values = self._set_values()
        elif lexeme in _OPERATORS:
            operator = _OPERATORS[lexeme]
            values = {self._exact_value()}
        else:
            raise SelectorError(f"found {_shown(lexeme)}, expected: in, notin, =, ==, !=, gt, lt")
        for value in values:
            if not is_label_value(value):
                raise SelectorError(f"invalid label value {value!r} for key {key!r}")
        if operator in ("gt", "lt"):
            (limit,) = values
            if _int64(limit) is None:
                raise SelectorError(f"for 'gt', 'lt' operators, the value must be an integer (key {key!r})")
        return Requirement(key, operator, frozenset(values))

    def _exact_value(self) -> str:
        if self._peek() in (",", _END):
            return ""  # `a=` selects an empty value, as in Kubernetes
        lexeme = self._next()
        if not _is_identifier(lexeme):
            raise SelectorError(f"found {_shown(lexeme)}, expected: identifier")
        return lexeme

    def _set_values(self) -> set[str]:
        """`(a,b)`; as in Kubernetes `()`, `(,a)`, `(a,)` and `(a,,b)` also hold the empty value."""
        lexeme = self._next()
        if lexeme != "(":
            raise SelectorError(f"found {_shown(lexeme)}, expected: '('")
        if self._peek() == ")":
            self._next()
            return {""}
        if not (_is_identifier(self._peek()) or self._peek() == ","):
            raise SelectorError(f"found {_shown(self._peek())}, expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:  # labels.Parse's parseIdentifiersList, step for step
            lexeme = self._next()
            if _is_identifier(lexeme):
                values.add(lexeme)
                if self._peek() == ")":
                    self._next()
                    return values
                if self._peek() != ",":
                    raise SelectorError(f"found {_shown(self._peek())}, expected: ',' or ')'")
            elif lexeme == ",":
                if not values:
                    values.add("")
                if self._peek() == ")":
                    self._next()
                    values.add("")
                    return values
                if self._peek() == ",":
                    self._next()
                    values.add("")
            else:
                raise SelectorError(f"found {_shown(lexeme)}, expected: ',' or identifier")


def _shown(lexeme: str) -> str:
    return "'end of string'" if lexeme == _END else repr(lexeme)


def _int64(text: str | None) -> int | None:
    """`text` as Go's strconv.ParseInt(text, 10, 64) reads it, None when it does not."""
    if text is None or len(text) > 20 or not _INT64.fullmatch(text):  # no int() of a huge string
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None
