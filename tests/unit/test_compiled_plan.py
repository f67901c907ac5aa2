"""The compiled path's edges, on a small schema: what the plan answers itself (FORBIDDEN at the path)
and what it hands back to graphql-core (a null in a non-null position, masked errors, extensions that
observe executions)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from schema.compiled import CompiledQueries
from schema.errors import is_public
from schema.permissions import enforce_requirements, requires


@strawberry.type
class Item:
    name: str
    secret: str | None = strawberry.field(directives=requires("item:secret"))
    org_id: strawberry.Private[str]

    @strawberry.field
    def broken(self) -> str | None:
        raise RuntimeError("connection string with a password")

    @strawberry.field
    def missing(self) -> str:
        return None  # type: ignore[return-value]  # the fault under test


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return [Item(name="a", secret="s-a", org_id="org-a"), Item(name="b", secret="s-b", org_id="org-b")]


@dataclass(frozen=True)
class Principal:
    """Holds `item:secret` in org-a only."""

    def has(self, permission: str, org_id: str | None = None) -> bool:
        return permission == "item:secret" and org_id == "org-a"


@dataclass
class Ctx:
    principal: Principal


def _schema(*extra: Any) -> strawberry.Schema:
    mask = MaskErrors(should_mask_error=lambda e: not is_public(e), error_message="Internal server error.")
    schema = strawberry.Schema(query=Query, extensions=[lambda: mask, *extra])
    enforce_requirements(schema)
    return schema


async def _both(schema: strawberry.Schema, query: str) -> tuple[CompiledQueries, Any, Any]:
    compiled = CompiledQueries.for_schema(schema)
    assert compiled is not None
    context = Ctx(Principal())
    expected = await schema.execute(query, context_value=context)
    compiled.learn(query, None, context, validated=True)
    answer = await compiled.execute(query, None, None, context, None)
    return compiled, expected, answer


def _formatted(errors: list[GraphQLError] | None) -> list[Any]:
    return [error.formatted for error in errors or ()]


async def test_forbidden_is_null_with_the_error_at_its_path_from_the_plan() -> None:
    compiled, expected, answer = await _both(_schema(), "{ items { name secret } }")
    assert answer is not None
    assert compiled.compiled == 1
    assert (
        answer.data
        == expected.data
        == {"items": [{"name": "a", "secret": "s-a"}, {"name": "b", "secret": None}]}
    )
    assert _formatted(answer.errors) == _formatted(expected.errors)
    assert [e.path for e in answer.errors or ()] == [["items", 1, "secret"]]
    assert (answer.errors or [])[0].extensions == {"code": "FORBIDDEN", "permission": "item:secret"}


async def test_a_null_in_a_non_null_position_is_left_to_graphql_core() -> None:
    compiled, expected, answer = await _both(_schema(), "{ items { name missing } }")
    assert answer is None
    assert compiled.fell_back == 1
    # graphql-core nulls each item (the nearest nullable position) and masks the TypeError.
    assert expected.data == {"items": [None, None]}
    assert {e.message for e in expected.errors} == {"Internal server error."}


async def test_an_unexpected_error_is_left_to_graphql_core_which_masks_it() -> None:
    compiled, expected, answer = await _both(_schema(), "{ items { broken } }")
    assert answer is None
    assert compiled.fell_back == 1
    assert [e.message for e in expected.errors] == ["Internal server error."] * 2


async def test_fragments_aliases_typename_and_directives_match_graphql_core() -> None:
    query = (
        "query { first: items { ...F kind: __typename n: name @skip(if: true) }"
        " items { name @include(if: true) } }"
        " fragment F on Item { name ... on Item { secret } }"
    )
    compiled, expected, answer = await _both(_schema(), query)
    assert answer is not None
    assert compiled.compiled == 1
    assert answer.data == expected.data
    assert list(answer.data["first"][0]) == list(expected.data["first"][0]) == ["name", "secret", "kind"]
    assert _formatted(answer.errors) == _formatted(expected.errors)


class Observer(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        yield


def test_an_extension_that_may_observe_executions_turns_the_path_off() -> None:
    assert CompiledQueries.for_schema(_schema(Observer)) is None


async def test_only_validated_queries_are_answered() -> None:
    schema = _schema()
    compiled = CompiledQueries.for_schema(schema)
    assert compiled is not None
    context = Ctx(Principal())
    query = "{ items { name } }"
    assert await compiled.execute(query, None, None, context, None) is None  # never validated
    compiled.learn(query, None, context, validated=False)
    assert await compiled.execute(query, None, None, context, None) is None  # refused by validation
    compiled.learn(query, None, context, validated=True)
    assert await compiled.execute(query, None, None, context, None) is not None
