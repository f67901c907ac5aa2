"""The front end's documents as a trusted-documents manifest (tests/fixtures/trusted-documents.json).

The dashboard builds its documents from template literals: `${instanceFields()}` (with or without the
network fields, as `instance:read:network` allows) and `${mutation}` (the names passed to `act`). They
are read from its JavaScript and expanded every way the page can, so the manifest holds exactly what the
dashboard sends. Regenerate with `python -m tests.support.trusted_documents`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

from tests.support.documents import CHANGES, CREATE

ROOT = Path(__file__).resolve().parents[2]
APP_JS = ROOT / "gateway" / "static" / "dashboard" / "app.js"
MANIFEST = ROOT / "tests" / "fixtures" / "trusted-documents.json"

_LITERAL = re.compile(r"(['`])((?:query|mutation|subscription) [A-Z][A-Za-z]*[ ({].*?)\1", re.S)
_FIELDS = re.compile(
    r"function instanceFields\(\) \{\s*const network = [^?]+\? '([^']*)' : '';\s*return `([^`]*)`;"
)
_ACTIONS = re.compile(r"act\('([A-Za-z]+)'")


def dashboard_documents(source: str | None = None) -> list[str]:
    """Every document the dashboard can send, expanded from its JavaScript."""
    text = APP_JS.read_text() if source is None else source
    fields = _FIELDS.search(text)
    assert fields is not None, "instanceFields() changed shape: update tests/support/trusted_documents.py"
    network, base = fields.groups()
    variants = [base.replace("${network}", ""), base.replace("${network}", network)]
    actions = sorted(set(_ACTIONS.findall(text)))
    documents: list[str] = []
    for _, literal in _LITERAL.findall(text):
        choices = [variants if "${instanceFields()}" in literal else [None]]
        choices.append(actions if "${mutation}" in literal else [None])
        for instance_fields, action in itertools.product(*choices):
            document = literal
            if instance_fields is not None:
                document = document.replace("${instanceFields()}", instance_fields)
            if action is not None:
                document = document.replace("${mutation}", action)
            assert "${" not in document, f"an unexpanded template in {document!r}"
            documents.append(document)
    return documents


def console_documents() -> list[str]:
    """The dashboard's documents and the ones the suites send as a console would."""
    return [*dashboard_documents(), CHANGES, CREATE]


def manifest(documents: list[str] | None = None) -> dict[str, str]:
    chosen = console_documents() if documents is None else documents
    return {hashlib.sha256(d.encode()).hexdigest(): d for d in chosen}


def write(path: Path = MANIFEST) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write()
