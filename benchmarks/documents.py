"""What the worst document the default limits accept costs: validation time and memory that stays.

Builds several worst-case shapes at the default limits (`DocumentLimits()`: 800 selections and 800
same-name pairs, 50 directives, 30 aliases, depth 12, 4,000 tokens, 64 KiB), checks that the real schema
accepts each (no validation error), and prints:

- parse + limits + validation time of each shape through the real schema (`schema.execute` of a
  document whose fields then fail fast for want of a principal), median of several runs, a fresh
  (distinct) document each run so no cache helps. Goal: the slowest shape <= 50 ms.
- RSS growth after executing 1,000 distinct worst-case documents. Goal: <= 64 MiB.
- the old behaviour: 4,000 sibling fields validated without the limits, and the same document now.
- the parsed-document weight estimate against tracemalloc's figure for the densest accepted document.

    python -m benchmarks.documents            # ~1 minute on 2 shared cores
    python -m benchmarks.documents --smoke    # a few runs: proves the script runs

Exit status: 0 when every shape was accepted as expected, 1 otherwise (no timing decides it).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence

import strawberry
from graphql import parse, specified_rules, validate

from benchmarks.support import Failed, finish, rss_kib
from schema.build import build_schema
from schema.document_cache import TOKEN_BYTES, document_weight, parsed_cache
from schema.document_cost import measure
from schema.limits import DocumentLimits

LIMITS = DocumentLimits()
GOAL_MS = 50.0
GOAL_MIB = 64.0
# Sixteen scalar fields of Instance: with `instances { nodes { … } }` an operation of 18 selections.
FIELDS = (
    "id name description orgId ownerSub ownerName flavor image cpu memoryMib diskGib status"
    " statusReason statusMessage createdAt updatedAt"
)
NODES = f"instances {{ nodes {{ {FIELDS} }} }}"
PER_OPERATION = 18

Shape = Callable[[str], str]


def _fill(tag: str, used: int, first: int = 0, directives: int = 0) -> list[str]:
    """Operations of `NODES` (no pairs) up to the selection limit; the first `directives` fields carry
    an `@include` each, the directive limit's worth of directive validation."""
    operations = []
    count = itertools.count(first)
    while used + PER_OPERATION <= LIMITS.max_selections:
        operations.append(f"query Q{tag}x{next(count)} {{ {NODES} }}")
        used += PER_OPERATION
    rest = LIMITS.max_selections - used
    if rest >= 3:
        fields = " ".join(FIELDS.split()[: rest - 2])
        operations.append(f"query Q{tag}x{next(count)} {{ instances {{ nodes {{ {fields} }} }} }}")
    # One directive on each of the first fields, as many as the directive limit allows.
    for index in range(min(directives // 2, len(operations))):
        operations[index] = operations[index].replace(" id ", " id @include(if: true) ", 1)
        operations[index] = operations[index].replace(" name ", " name @skip(if: false) ", 1)
    return operations


def operations(tag: str) -> str:
    """Many operations, no two fields of one selection set sharing a name: the linear worst case."""
    return "\n".join(_fill(tag, 0, directives=LIMITS.max_directives))


def siblings(tag: str) -> str:
    """As many sibling `__typename` as the pair budget allows (k(k-1)/2 pairs), the rest filled."""
    k = 2
    while (k + 1) * k // 2 <= LIMITS.max_selections:
        k += 1
    return f"query Q{tag} {{ {'__typename ' * k}}}\n" + "\n".join(_fill(tag, k))


def merged(tag: str) -> str:
    """Same-named fields with sub-selections: 8 `instances { nodes { 5 fields } }` are 7 x 28 = 196
    pairs; as many operations of them as the pair budget allows, the rest filled."""
    group = " ".join(["instances { nodes { id name status cpu image } }"] * 8)
    count = LIMITS.max_selections // 196
    head = "\n".join(f"query Q{tag}m{i} {{ {group} }}" for i in range(count))
    return head + "\n" + "\n".join(_fill(tag, count * 8 * 7))


def fragments(tag: str) -> str:
    """A fragment of 16 fields spread in every operation: counted wherever it is spread."""
    fragment = f"fragment F{tag} on Instance {{ {FIELDS} }}"
    ops, used, i = [], PER_OPERATION - 2, 0  # the fragment's own definition counts once
    while used + PER_OPERATION <= LIMITS.max_selections:
        ops.append(f"query Q{tag}f{i} {{ instances {{ nodes {{ ...F{tag} }} }} }}")
        used, i = used + PER_OPERATION, i + 1
    return fragment + "\n" + "\n".join(ops)


SHAPES: dict[str, Shape] = {
    "operations": operations,
    "siblings": siblings,
    "merged": merged,
    "fragments": fragments,
}


def check(name: str, document: str) -> None:
    cost = measure(parse(document, max_tokens=LIMITS.max_tokens), LIMITS.max_selections)
    within = (
        len(document.encode()) <= LIMITS.max_query_bytes
        and cost.selections <= LIMITS.max_selections
        and cost.pairs <= LIMITS.max_selections
        and cost.directives <= LIMITS.max_directives
    )
    print(
        f"  {name:<11} {len(document):>6} bytes  selections {cost.selections:>4}  pairs {cost.pairs:>4}"
        f"  directives {cost.directives:>2}"
    )
    if not within:
        raise Failed(f"{name}: the shape is not within the default limits")


def first_operation(document: str) -> str | None:
    start = document.find("query ")
    return document[start + 6 : document.index(" ", start + 6)] if start >= 0 else None


async def run_once(schema: strawberry.Schema, document: str) -> tuple[float, float]:
    """CPU and wall milliseconds. CPU time is the figure: on a shared machine, wall time also counts
    the other processes' turns on the cores, not work this document makes."""
    cpu, wall = time.thread_time(), time.perf_counter()
    result = await schema.execute(document, operation_name=first_operation(document))
    elapsed = ((time.thread_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000)
    # Accepted: whatever failed, failed while executing (a path), not in validation.
    refused = [error for error in result.errors or () if not error.path]
    if refused:
        raise Failed(f"refused: {refused[0].message}")
    return elapsed


def rss_mib() -> float:
    return rss_kib(os.getpid()) / 1024


async def main_async(runs: int, documents: int) -> None:
    logging.disable(logging.CRITICAL)  # the fields fail for want of a principal: that is expected
    schema = build_schema(LIMITS)
    tags = (f"t{n}" for n in itertools.count())

    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f} (CPU figures grow when the cores are shared)")
    print(f"Worst-case shapes at the default limits {LIMITS}:")
    for name, shape in SHAPES.items():
        check(name, shape("x"))

    print(f"\nparse + limits + validation through the real schema, median of {runs} fresh documents:")
    slowest = 0.0
    for name, shape in SHAPES.items():
        await run_once(schema, shape(next(tags)))  # warm-up
        times = [await run_once(schema, shape(next(tags))) for _ in range(runs)]
        cpu = sorted(t[0] for t in times)
        median = statistics.median(cpu)
        slowest = max(slowest, median)
        wall = statistics.median(t[1] for t in times)
        print(f"  {name:<11} CPU {median:6.1f} ms (min {cpu[0]:.1f}, max {cpu[-1]:.1f}); wall {wall:6.1f} ms")
    verdict = "meets" if slowest <= GOAL_MS else "MISSES"
    print(f"  slowest median {slowest:.1f} ms of CPU: {verdict} the goal of <= {GOAL_MS:.0f} ms")

    print(f"\nRSS after executing {documents} distinct worst-case documents:")
    for shape in SHAPES.values():
        for _ in range(3):
            await run_once(schema, shape(next(tags)))
    gc.collect()
    before = rss_mib()
    shapes = itertools.cycle(SHAPES.values())
    for _ in range(documents):
        await run_once(schema, next(shapes)(next(tags)))
    gc.collect()
    grown = rss_mib() - before
    cache = parsed_cache()
    verdict = "meets" if grown <= GOAL_MIB else "MISSES"
    print(
        f"  {before:.1f} MiB -> {before + grown:.1f} MiB: +{grown:.1f} MiB:"
        f" {verdict} the goal of <= {GOAL_MIB:.0f} MiB"
    )
    print(
        f"  parsed-document cache: {len(cache)} entries, {cache.total_bytes / 2**20:.1f} of"
        f" {cache.max_bytes / 2**20:.0f} MiB (entries over {cache.max_entry_bytes // 1024} KiB not kept)"
    )

    print("\nThe old behaviour, 4,000 sibling fields (~40 KB, within the token and byte limits):")
    old = "{ " + "__typename " * (LIMITS.max_tokens - 2) + "}"
    document = parse(old, max_tokens=LIMITS.max_tokens)
    started = time.thread_time()
    validate(schema._schema, document, specified_rules)
    print(f"  validated without the new limits: {(time.thread_time() - started) * 1000:.0f} ms of CPU")
    started = time.thread_time()
    result = await schema.execute(old + " ")
    elapsed = (time.thread_time() - started) * 1000
    errors = [e.message for e in result.errors or ()]
    print(f"  parsed and refused now in {elapsed:.1f} ms of CPU with {len(errors)} error:")
    print(f"    {errors[0] if errors else None}")

    print("\nWeight estimate of a parsed document (the cache charges source x 2 + tokens x", end=" ")
    print(f"{TOKEN_BYTES} bytes):")
    densest = "{ " + "__typename " * 998 + "}"
    tracemalloc.start()
    parsed = parse(densest)
    measured = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    estimated = document_weight(densest, parsed)
    print(f"  998 siblings: measured {measured / 1024:.0f} KiB, estimated {estimated / 1024:.0f} KiB")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="3 runs, 50 documents")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.documents = 3, 50
    return finish("documents", main_async(args.runs, args.documents))


if __name__ == "__main__":
    raise SystemExit(main())
