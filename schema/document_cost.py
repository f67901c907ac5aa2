"""What validating a parsed document will cost, counted in one linear pass before validation runs.

Validation is linear in the document except for OverlappingFieldsCanBeMerged, which compares every pair
of fields that share a response name in a selection set, the fields that fragment spreads bring in
included, and then the merged sub-selections of each pair: 4,000 sibling `__typename` fields are 8 million
pairs (about a second of one core). So three figures are counted:

- selections: fields, with a fragment spread counting as the fields of its fragment wherever it is
  spread (a fragment spread twice into one selection set once, as validation does), summed over every
  operation and fragment definition. Spreads cannot hide fields, and fragments cannot multiply them.
- pairs: in each selection set, fragments inlined, a response name that occurs k times adds k(k-1)/2,
  and the sub-selections of those k fields are counted as one selection set: the comparisons
  OverlappingFieldsCanBeMerged makes, so the quadratic part is bounded as well as the linear one.
- directives: every directive written in the document, each definition once.

Counting stops as soon as a figure passes its bound, so the pass costs at most the bound, however many
times fragments multiply.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import (
    DocumentNode,
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)


@dataclass(slots=True)
class DocumentCost:
    selections: int = 0
    pairs: int = 0
    directives: int = 0


class _Over(Exception):
    pass


def measure(document: DocumentNode, max_selections: int) -> DocumentCost:
    """The document's figures; `selections` and `pairs` stop just past `max_selections`."""
    cost = DocumentCost()
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    definitions = [d for d in document.definitions if isinstance(d, ExecutableDefinitionNode)]
    cost.directives = sum(_directives(d) for d in definitions)
    try:
        for definition in definitions:
            _count_fields(definition, fragments, cost, max_selections)
    except _Over:
        pass
    return cost


def _directives(definition: ExecutableDefinitionNode) -> int:
    count = len(definition.directives or ())
    if isinstance(definition, OperationDefinitionNode):
        count += sum(len(v.directives or ()) for v in definition.variable_definitions or ())
    stack = [definition.selection_set]
    while stack:
        for selection in stack.pop().selections:
            count += len(selection.directives or ())
            selection_set = getattr(selection, "selection_set", None)
            if selection_set is not None:
                stack.append(selection_set)
    return count


def _count_fields(
    definition: ExecutableDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    cost: DocumentCost,
    limit: int,
) -> None:
    own = frozenset[str]()
    if isinstance(definition, FragmentDefinitionNode):
        own = frozenset([definition.name.value])
    # Each item: the selection sets validation merges into one, and the fragments being expanded above
    # them (a spread of one of those is a cycle, which validation refuses: it is not followed).
    work: list[tuple[list[SelectionSetNode], frozenset[str]]] = [([definition.selection_set], own)]
    while work:
        sets, expanding = work.pop()
        inlined: set[str] = set()
        by_name: dict[str, list[FieldNode]] = {}
        while sets:
            for selection in sets.pop().selections:
                if isinstance(selection, FieldNode):
                    cost.selections += 1
                    if cost.selections > limit:
                        raise _Over
                    name = (selection.alias or selection.name).value
                    by_name.setdefault(name, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    sets.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    spread = selection.name.value
                    fragment = fragments.get(spread)
                    if fragment is not None and spread not in expanding and spread not in inlined:
                        inlined.add(spread)
                        sets.append(fragment.selection_set)
        below = expanding | inlined
        for fields in by_name.values():
            cost.pairs += len(fields) * (len(fields) - 1) // 2
            if cost.pairs > limit:
                raise _Over
            children = [field.selection_set for field in fields if field.selection_set is not None]
            if children:
                work.append((children, below))
