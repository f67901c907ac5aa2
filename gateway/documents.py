"""Trusted documents: the front end's manifest, requests that name a document instead of sending it, and
the `open`/`enforce` gate.

The manifest is what GraphQL Codegen's client preset and Relay's compiler write: `{"<sha256 hex>":
"<document>"}`, the hash over the document's UTF-8 text. It is checked whole at start-up (hashes, parse,
validation against the schema, the document limits, the cost limit): a bad entry stops the process with
one line naming it, and `opencsp-gateway documents check MANIFEST` runs the same checks in a front end's CI.

A request names a document with `"documentId": "sha256:<hex>"` (the GraphQL-over-HTTP persisted
operations proposal) or Apollo's `"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "<hex>"}}`.
`lookup(hex)` is the seam the compiled execution path keys on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import strawberry
from graphql import GraphQLError, OperationDefinitionNode, parse, specified_rules, validate
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from schema.cost import CostError, operation_cost
from schema.document_cost import measure
from schema.errors import document_not_trusted, persisted_query_not_found
from schema.limits import DocumentLimits
from services.auth.permissions import OPERATIONS_ADHOC
from services.auth.principal import Principal

Mode = Literal["open", "enforce"]
_HEX = re.compile(r"[0-9a-f]{64}")
ADHOC = "adhoc"  # the metrics label of every document not in the manifest


@dataclass(frozen=True, slots=True)
class Document:
    """`name`: the operation name inside it (the first, when it has several; `anonymous` without one)."""

    name: str
    text: str
    hash: str
    operations: frozenset[str] = frozenset()

    def label(self, operation_name: str | None) -> str:
        """The metrics label of running `operation_name` of this document."""
        return operation_name if operation_name in self.operations else self.name


class ManifestError(Exception):
    """The manifest cannot be used; one line per problem."""


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class TrustedDocuments:
    """The documents of the manifest, by hash."""

    def __init__(self, documents: Mapping[str, Document] | None = None) -> None:
        self._by_hash: dict[str, Document] = dict(documents or {})
        self._by_text = _by_text(self._by_hash)

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Any:
        return iter(self._by_hash.values())

    def replace(self, other: TrustedDocuments) -> None:
        """Take `other`'s documents (the app makes the registry before the schema its manifest is
        checked against)."""
        self._by_hash = dict(other._by_hash)
        self._by_text = _by_text(self._by_hash)

    def label(self, text: str | None, operation_name: str | None) -> str:
        """The metrics label of an operation: its trusted document's name, else `adhoc`."""
        document = self.of_text(text) if text else None
        return document.label(operation_name) if document is not None else ADHOC

    def lookup(self, document_id: str) -> Document | None:
        return self._by_hash.get(document_id)

    def of_text(self, text: str) -> Document | None:
        """The trusted document this text is, if any (a client may send a trusted document's text).

        A dict of the manifest's texts, not a SHA-256 per call: the metrics label every operation by it,
        and for a request by id the text is the manifest's own string, found by identity. The keys are
        the manifest's, so a client's text never stays in it."""
        return self._by_text.get(text)

    @classmethod
    def from_manifest(cls, entries: Mapping[str, str]) -> TrustedDocuments:
        """Entries already checked (`check_manifest`): parsed only to learn their operation names."""
        documents = {}
        for digest, text in entries.items():
            names = [
                d.name.value if d.name else "anonymous"
                for d in parse(text).definitions
                if isinstance(d, OperationDefinitionNode)
            ]
            documents[digest] = Document(names[0] if names else "anonymous", text, digest, frozenset(names))
        return cls(documents)


def _by_text(documents: Mapping[str, Document]) -> dict[str, Document]:
    return {document.text: document for document in documents.values()}


def read_manifest(path: Path) -> dict[str, str]:
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ManifestError(f"{path}: cannot be read ({error.strerror})") from None
    except orjson.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: must be a JSON object of sha256 hex -> document")
    return raw


def check_manifest(
    entries: Mapping[str, object], schema: strawberry.Schema, limits: DocumentLimits, max_cost: int
) -> list[str]:
    """Every problem of a manifest, one line each: the hash, parsing and validation with the gateway's
    document limits, and the static cost of each operation (variables absent: defaults and assumed sizes)."""
    problems: list[str] = []
    for digest, text in entries.items():
        where = f"{digest[:16]}…" if len(digest) > 16 else digest
        if not isinstance(text, str):
            problems.append(f"{where}: the document must be a string")
            continue
        if not _HEX.fullmatch(digest):
            problems.append(f"{where}: the key must be a lowercase sha256 hex digest")
            continue
        if sha256_hex(text) != digest:
            problems.append(f"{where}: the key is not the sha256 of the document (it is {sha256_hex(text)})")
            continue
        problems += [f"{where}: {line}" for line in _document_problems(text, schema, limits, max_cost)]
    return problems


def _document_problems(
    text: str, schema: strawberry.Schema, limits: DocumentLimits, max_cost: int
) -> list[str]:
    if len(text.encode()) > limits.max_query_bytes:
        return [f"larger than {limits.max_query_bytes} bytes"]
    try:
        document = parse(text, max_tokens=limits.max_tokens)
    except GraphQLError as error:
        return [error.message]
    figures = measure(document, limits.max_selections)
    if figures.selections > limits.max_selections or figures.pairs > limits.max_selections:
        return [f"more than {limits.max_selections} field selections"]
    if figures.directives > limits.max_directives:
        return [f"more than {limits.max_directives} directives"]
    rules = [
        *specified_rules,
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    errors = validate(schema._schema, document, rules)
    if errors:
        return [error.message for error in errors]
    problems: list[str] = []
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        name = operation.name.value if operation.name else None
        try:
            cost = operation_cost(schema._schema, document, name, {})
        except CostError as error:
            problems.append(f"{name or 'anonymous'}: {error}")
            continue
        if cost > max_cost:
            problems.append(f"{name or 'anonymous'}: estimated cost {cost} is over the limit of {max_cost}")
    return problems


def load(path: Path, schema: strawberry.Schema, limits: DocumentLimits, max_cost: int) -> TrustedDocuments:
    """The manifest at `path`, every entry checked; ManifestError names each bad entry."""
    entries = read_manifest(path)
    problems = check_manifest(entries, schema, limits, max_cost)
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems))
    return TrustedDocuments.from_manifest({k: v for k, v in entries.items() if isinstance(v, str)})


class DocumentRequestError(Exception):
    """A document id that is malformed or contradicts the text sent (HTTP 400)."""


def requested_id(document_id: object, extensions: Mapping[str, Any] | None) -> str | None:
    """The sha256 hex a request names, from `documentId` or Apollo's `persistedQuery`; None: none."""
    if document_id is not None:
        if not isinstance(document_id, str) or not document_id.startswith("sha256:"):
            raise DocumentRequestError('documentId must read "sha256:<64 hex digits>".')
        digest = document_id.removeprefix("sha256:")
        if not _HEX.fullmatch(digest):
            raise DocumentRequestError('documentId must read "sha256:<64 hex digits>".')
        return digest
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise DocumentRequestError("extensions.persistedQuery must be version 1 with a sha256Hash.")
    hashed = persisted.get("sha256Hash")
    if not isinstance(hashed, str) or not _HEX.fullmatch(hashed):
        raise DocumentRequestError("extensions.persistedQuery.sha256Hash must be 64 lowercase hex digits.")
    return hashed


@dataclass(frozen=True, slots=True)
class Admitted:
    text: str
    document: Document | None


class DocumentGate:
    """Turns what a request sent (text, id or both) into the text to run, or refuses it."""

    def __init__(self, documents: TrustedDocuments, mode: Mode) -> None:
        self.documents = documents
        self.mode = mode

    def resolve(self, text: str | None, digest: str | None) -> Admitted:
        """Before authentication: the id's document, or the text. Raises DocumentRequestError (400) or
        GraphQLError (unknown id: a GraphQL request error)."""
        if digest is None:
            if text is None:
                raise DocumentRequestError("The query parameter is missing.")
            return Admitted(text, self.documents.of_text(text))
        if text is not None:
            if sha256_hex(text) != digest:
                raise DocumentRequestError("The query does not hash to the document id sent with it.")
            return Admitted(text, self.documents.lookup(digest))
        document = self.documents.lookup(digest)
        if document is None:
            raise persisted_query_not_found() if self.mode == "open" else document_not_trusted(named=True)
        return Admitted(document.text, document)

    def admit(self, document: Document | None, principal: Principal | None) -> None:
        """After authentication: in `enforce` mode, untrusted text needs `operations:adhoc`."""
        if (
            self.mode == "enforce"
            and document is None
            and (principal is None or not principal.has(OPERATIONS_ADHOC))
        ):
            raise document_not_trusted(named=False)
