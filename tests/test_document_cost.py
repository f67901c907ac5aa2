"""The pure parts of the document limits: what a document costs to validate, and the byte-bounded cache."""

from __future__ import annotations

from graphql import parse

from gateway.introspection import is_introspection_only
from schema.document_cache import (
    ENTRY_BYTES,
    ByteBoundedCache,
    digest,
    document_weight,
    parse_cached,
    parsed_cache,
)
from schema.document_cost import DocumentCost, measure
from schema.multiplex import is_subscription


def cost(query: str, limit: int = 1_000) -> DocumentCost:
    return measure(parse(query), limit)


def test_fields_are_counted_wherever_their_fragment_is_spread() -> None:
    assert cost("{ a b { c } }") == DocumentCost(selections=3)
    # The operation's 2 + 2 x 2 and the fragment's own 2.
    assert cost("{ x { ...F } y { ...F } } fragment F on T { c d }").selections == 8
    # Spread twice into one selection set, a fragment is merged once, as validation does.
    assert cost("{ ...F ...F } fragment F on T { c d }").selections == 2 + 2
    # Inline fragments are part of their selection set.
    assert cost("{ ... on T { a } ... { b } }").selections == 2


def test_fragments_multiplying_fragments_stop_at_the_limit() -> None:
    # Each level doubles: 2^20 fields when expanded, in a few hundred bytes.
    levels = [f"fragment F{i} on T {{ a: x {{ ...F{i + 1} }} b: x {{ ...F{i + 1} }} }}" for i in range(20)]
    document = "{ ...F0 } " + " ".join(levels) + " fragment F20 on T { leaf }"
    assert cost(document, limit=500).selections == 501


def test_a_fragment_cycle_is_not_followed() -> None:
    assert cost("{ ...A } fragment A on T { a { ...B } } fragment B on T { b { ...A } }").selections == 6


def test_same_named_fields_count_their_pairs_and_their_merged_children() -> None:
    assert cost("{ a a a }").pairs == 3
    assert cost("{ a: x b: x }").pairs == 0  # distinct response names are not compared
    # Two `a` (1 pair), then their children merged: c, c (1) and d, d from the fragment (1); and the
    # fragment's own definition, validated on its own: d, d (1).
    assert cost("{ a { c ...F } a { c } } fragment F on T { d d }").pairs == 1 + 1 + 1 + 1
    # Fields brought in by a spread are compared with the selection set's own.
    assert cost("{ x ...F } fragment F on T { x }").pairs == 1  # in the operation; none in F alone
    assert cost("{ " + "a " * 100 + "}", limit=1_000).pairs == 4_950


def test_directives_are_counted_once_each_where_written() -> None:
    document = "query Q($v: Int @d) @d { a @d @d { ...F @d } ... @d { b } } fragment F on T @d { c @d }"
    assert cost(document).directives == 8


def test_the_cache_is_bounded_by_bytes_and_evicts_the_least_recently_used() -> None:
    cache: ByteBoundedCache[str] = ByteBoundedCache(max_bytes=3 * (100 + ENTRY_BYTES), max_entry_bytes=10_000)
    for key in "abc":
        assert cache.put(key, key, 100)
    assert cache.total_bytes == 3 * (100 + ENTRY_BYTES)
    assert cache.get("a") == "a"  # now the most recently used
    assert cache.put("d", "d", 100)
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == ["a", "c", "d"]
    # A heavier entry evicts as many as it needs, least recently used first (a, then c).
    assert cache.put("e", "e", 2 * 100 + ENTRY_BYTES)
    assert [cache.get(k) for k in "acde"] == [None, None, "d", "e"]
    assert cache.total_bytes <= cache.max_bytes
    # Replacing a key does not count it twice.
    assert cache.put("e", "e2", 10)
    assert cache.get("e") == "e2"
    assert cache.total_bytes == (100 + ENTRY_BYTES) + (10 + ENTRY_BYTES)


def test_an_entry_over_the_size_is_never_stored() -> None:
    cache: ByteBoundedCache[str] = ByteBoundedCache(max_bytes=100_000, max_entry_bytes=1_000)
    assert cache.put("small", "x", 10)
    assert not cache.put("big", "x", 1_000)
    assert cache.get("big") is None
    assert cache.get("small") == "x"
    assert cache.total_bytes == 10 + ENTRY_BYTES


def test_keys_are_digests_that_keep_parts_apart() -> None:
    assert len(digest("{ a }")) == 32
    assert digest("ab", "c") != digest("a", "bc")


def test_parsed_documents_are_shared_and_weighed_by_their_tokens() -> None:
    query = "{ shared_document_test_field }"
    first = parse_cached(query, max_tokens=100)
    assert parse_cached(query, max_tokens=100) is first
    assert parse_cached(query, max_tokens=101) is not first  # the options are part of the key
    # 5 tokens (<SOF> { name } <EOF>): the estimate charges each one, and the text twice.
    assert document_weight(query, first) == 2 * len(query) + 600 * 5


def test_the_introspection_check_and_the_multiplexer_share_the_bounded_cache() -> None:
    cache = parsed_cache()
    giant = "{ " + "__typename " * 3_000 + "} # giant"  # ~1.8 MB parsed: over what an entry may weigh
    small = "subscription { instanceStatusChanges { to } } # small"
    held = len(cache)
    assert is_introspection_only(giant, 4_000)
    assert not is_subscription(giant, None, max_bytes=65_536, max_tokens=4_000)
    assert len(cache) == held
    assert is_subscription(small, None, max_bytes=65_536, max_tokens=4_000)
    assert not is_introspection_only(small, 4_000)
    assert len(cache) == held + 1
    assert parse_cached(small, max_tokens=4_000) is parse_cached(small, max_tokens=4_000)
