"""The one home of every cache of GraphQL documents: bounded by bytes, keyed by a hash, never a giant.

A cache bounded by entries lets a tenant fill every entry with the largest document the limits allow:
256 entries of 64 KB documents parse into hundreds of MiB that stay. So each entry is weighed (an
estimate of the memory it holds), the total weight is bounded, entries heavier than a cap are not kept at
all, and keys are SHA-256 digests, so the key itself never holds the document's text.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

from graphql import DocumentNode, parse

V = TypeVar("V")

# What one lexer token of a parsed document costs in memory, at most: the token, its node(s) and their
# locations. Measured with tracemalloc on the densest documents (`{ a a a … }`: ~560 bytes per token);
# `python -m benchmarks.documents` prints the measured figure next to this estimate.
TOKEN_BYTES = 600
# What a cached entry costs besides its value: the key, the ordered dict's node, the tuple.
ENTRY_BYTES = 200

# The parsed documents shared by the schema, the introspection check and the subscription multiplexer.
# The front end's documents weigh a few KiB to ~300 KiB (GraphiQL's introspection query); a document
# near the token limit weighs ~2.4 MiB and is parsed again each time rather than kept.
PARSED_MAX_BYTES = 16 * 1024 * 1024
PARSED_MAX_ENTRY_BYTES = 512 * 1024


class ByteBoundedCache(Generic[V]):
    """An LRU cache whose entries' total weight stays within `max_bytes`; an entry heavier than
    `max_entry_bytes` is never stored. Safe to share between threads (sync execution runs in some)."""

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.total_bytes = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: V, weight: int) -> bool:
        """Keep `value` unless it weighs more than an entry may; evict the least recently used entries
        until the total fits. True when it was stored."""
        weight += ENTRY_BYTES
        if weight > self.max_entry_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.total_bytes -= old[1]
            while self._entries and self.total_bytes + weight > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.total_bytes -= evicted
            self._entries[key] = (value, weight)
            self.total_bytes += weight
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.total_bytes = 0


def digest(*parts: str) -> bytes:
    """A fixed-size key for a document (and whatever else a cached result depends on)."""
    hasher = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        hasher.update(len(encoded).to_bytes(8, "big"))
        hasher.update(encoded)
    return hasher.digest()


def document_weight(query: str, document: DocumentNode) -> int:
    """An upper estimate of the memory a parsed document holds: its source twice (the source, and the
    values sliced from it) and every token, comments included, with the nodes built from it."""
    tokens = 0
    token = document.loc.start_token if document.loc else None
    while token is not None:
        tokens += 1
        token = token.next
    return 2 * len(query.encode("utf-8", "surrogatepass")) + TOKEN_BYTES * tokens


_parsed: ByteBoundedCache[DocumentNode] = ByteBoundedCache(PARSED_MAX_BYTES, PARSED_MAX_ENTRY_BYTES)


def parse_options_key(options: Mapping[str, Any]) -> str:
    return repr(sorted(options.items()))


def parse_cached(query: str, **options: Any) -> DocumentNode:
    """`graphql.parse`, remembered by a hash of the text and the options; raises GraphQLError as parse
    does (a document that does not parse is not kept)."""
    key = digest(query, parse_options_key(options))
    document = _parsed.get(key)
    if document is None:
        document = parse(query, **options)
        _parsed.put(key, document, document_weight(query, document))
    return document


def parsed_cache() -> ByteBoundedCache[DocumentNode]:
    """The shared cache of parsed documents (for tests and the benchmark)."""
    return _parsed
