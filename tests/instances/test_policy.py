"""validate_create: whole-string names, parsed keys, descriptions without control characters."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.catalog import DEFAULT_FLAVORS, DEFAULT_IMAGES, Catalog
from services.instances.policy import CreateRequest, ValidCreate, validate_create

CATALOG = Catalog(DEFAULT_FLAVORS, DEFAULT_IMAGES)
FLAVOR, IMAGE = DEFAULT_FLAVORS[0].name, DEFAULT_IMAGES[0].name
KEY = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def errors(**fields: Any) -> list[tuple[str | None, str]]:
    request = CreateRequest(**{"name": "web-1", "flavor": FLAVOR, "image": IMAGE, **fields})
    result = validate_create(request, CATALOG)
    return [] if isinstance(result, ValidCreate) else [(e.field, e.code) for e in result]


@pytest.mark.parametrize("name", ["web-1\n", "web-1\r\n", "\nweb-1", "web\n-1", "web-1\x00", "web-1 "])
def test_names_match_as_a_whole(name: str) -> None:
    assert errors(name=name) == [("name", "INVALID_NAME")]


@pytest.mark.parametrize("name", ["a", "web-1", "x" * 63, "0-0"])
def test_good_names(name: str) -> None:
    assert errors(name=name) == []


@pytest.mark.parametrize(
    "description", ["a\nb", "a\rb", "a\tb", "a\x00b", "a\x85b", "a\u2028b", "a\u2029b", "\x1b[2J", "a\ud800"]
)
def test_descriptions_have_no_control_characters(description: str) -> None:
    assert errors(description=description) == [("description", "INVALID_DESCRIPTION")]


def test_descriptions_are_at_most_1_kib_of_utf8() -> None:
    assert errors(description="x" * 1024) == []
    assert errors(description="x" * 1025) == [("description", "TOO_LONG")]
    assert errors(description="é" * 513) == [("description", "TOO_LONG")]
    assert errors(description="Jürgen's build box — übung") == []


def test_the_valid_request_carries_the_reserialised_key() -> None:
    result = validate_create(
        CreateRequest("web-1", FLAVOR, IMAGE, ssh_public_key=f"  {KEY}  me@host\n"), CATALOG
    )
    assert isinstance(result, ValidCreate)
    assert result.ssh_public_key is not None
    assert result.ssh_public_key.openssh() == f"{KEY} me@host"


def test_a_refused_key_names_the_field_and_says_why() -> None:
    result = validate_create(CreateRequest("web-1", FLAVOR, IMAGE, ssh_public_key=f"{KEY} a\rb"), CATALOG)
    assert isinstance(result, list)
    [error] = result
    assert (error.field, error.code) == ("sshPublicKey", "INVALID_SSH_KEY")
    assert "one line" in error.message
