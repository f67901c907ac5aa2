"""The reason → sentence table and the rules that keep peer-written reasons out of the public fields."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from services.instances import reasons

ROOT = Path(__file__).resolve().parents[1]
CONSTANTS = {
    name: value
    for name, value in vars(reasons).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}


def test_every_reason_has_a_fixed_sentence() -> None:
    assert CONSTANTS, "the module defines its reasons as upper-case constants"
    for name, reason in CONSTANTS.items():
        text = reasons.sentence(reason)
        assert text is not None, name
        assert text == reasons.SENTENCES[reason], name
        assert re.fullmatch(r"[A-Z][A-Za-z ,;'.-]+\.", text), (name, text)  # a plain sentence, no ids


def test_every_reason_the_services_record_is_in_the_table() -> None:
    """Each transition the lifecycle makes names a constant of the table (or a `reason` one of the
    table's rules returned), never a literal or a peer's value."""
    checked = 0
    for path in (ROOT / "services" / "instances").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr == "transition":
                given = [k.value for k in node.keywords if k.arg == "reason"]
            elif node.func.attr == "_fail" and len(node.args) > 1:  # Configuration._fail(id, reason, …)
                given = [node.args[1]]
            else:
                continue
            assert given, f"{path.name}:{node.lineno}: a transition without a reason"
            value = given[0]
            named = (isinstance(value, ast.Attribute) and value.attr in CONSTANTS) or (
                isinstance(value, ast.Name) and (value.id in CONSTANTS or value.id == "reason")
            )
            assert named, f"{path.name}:{node.lineno}: reason={ast.unparse(value)}"
            checked += 1
    assert checked >= 12


def test_an_unknown_reason_reads_as_unrecognized_with_the_generic_sentence() -> None:
    peer = "ProxmoxNode_pve3:storage_local_lvm"
    assert reasons.public_reason(peer) == reasons.UNRECOGNIZED
    assert reasons.sentence(peer) == reasons.SENTENCES[reasons.UNRECOGNIZED]
    assert reasons.public_reason(reasons.APPLY_FAILED) == reasons.APPLY_FAILED
    assert reasons.sentence(reasons.APPLY_FAILED) == "Provisioning the virtual machine failed."
    assert (reasons.public_reason(None), reasons.sentence(None)) == (None, None)


@pytest.mark.parametrize(
    ("rule", "known", "fallback"),
    [
        (reasons.provisioning_reason, reasons.PLANNED_WITH_CHANGES, reasons.PROGRESSING),
        (reasons.failure_reason, reasons.PLAN_FAILED, reasons.TERRAFORM_FAILED),
        (reasons.ready_reason, reasons.PLANNED_NO_CHANGES, reasons.OUTPUTS_WRITTEN),
    ],
    ids=["provisioning", "failure", "ready"],
)
def test_a_condition_reason_is_kept_only_when_known_for_its_phase(
    rule: object, known: str, fallback: str
) -> None:
    assert callable(rule)
    assert rule(known) == (known, None)
    assert rule("node_pve3") == (fallback, "node_pve3")
    assert rule(None) == (fallback, None)
    assert rule(12) == (fallback, "12")  # not even a string: JSON is the peer's
    # A known reason of another phase (a stale failure while provisioning again) is replaced too.
    other = reasons.DRIFT_DETECTED if fallback != reasons.TERRAFORM_FAILED else reasons.NO_DRIFT
    assert rule(other) == (fallback, other)


def test_the_detail_keeps_the_peers_words_and_a_replaced_reason() -> None:
    assert reasons.detail("root@pam denied") == "root@pam denied"
    assert reasons.detail("root@pam denied", "Odd_reason") == "Odd_reason: root@pam denied"
    assert reasons.detail(None, "Odd_reason") == "Odd_reason"
    assert reasons.detail("") is None
    assert reasons.detail({"not": "text"}) is None


def test_the_module_is_pure() -> None:
    tree = ast.parse(Path(reasons.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_every_reason_a_day2_task_records_is_in_the_table() -> None:
    """`begin_task` / `end_task` name constants of the table too: directly, in both branches of a
    conditional, or through `actions.REQUESTED`, whose values are checked here."""
    from services.instances.actions import REQUESTED

    assert set(REQUESTED.values()) <= set(CONSTANTS.values())

    def named(value: ast.expr) -> bool:
        if isinstance(value, ast.IfExp):
            return named(value.body) and named(value.orelse)
        if isinstance(value, ast.Subscript):
            return isinstance(value.value, ast.Name) and value.value.id == "REQUESTED"
        return isinstance(value, ast.Attribute) and value.attr in CONSTANTS

    checked = 0
    for path in (ROOT / "services" / "instances").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr in ("begin_task", "end_task"):
                (value,) = [k.value for k in node.keywords if k.arg == "reason"]
                assert named(value), f"{path.name}:{node.lineno}: reason={ast.unparse(value)}"
                checked += 1
    assert checked >= 4
