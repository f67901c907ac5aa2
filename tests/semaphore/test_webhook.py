"""Verification of the signed task hint that the playbook posts to the gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.semaphore.webhook import (
    MAX_SCAN_AGE_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HintInvalid,
    SecuritySummary,
    TaskHint,
    WebhookError,
    WebhookMalformed,
    WebhookSignatureMismatch,
    WebhookStale,
    sign,
    signed_headers,
    verify_hint,
)

SECRET = "s3cret"
BODY = b'{"task_id": 42}'
NOW = 1_700_000_000


def verify(body: bytes = BODY, ts: str | None = str(NOW), sig: str | None = None, **kw: object) -> TaskHint:
    signature = sign(SECRET, body, NOW) if sig is None else sig
    return verify_hint(SECRET, body, ts, signature, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]


def test_known_vector_matches_openssl() -> None:
    # printf '%s.%s' 1700000000 '{"task_id": 42}' | openssl dgst -sha256 -hmac s3cret
    assert (
        sign(SECRET, BODY, NOW) == "sha256=5a70b3ce44fba25cf89a5ce3be5ae804b74e864ee1a4b5acbff79078d92bc167"
    )


def test_valid_hint_gives_task_id() -> None:
    assert verify() == TaskHint(task_id=42)


def test_signed_headers_round_trip() -> None:
    headers = signed_headers(SECRET, BODY)
    assert verify_hint(SECRET, BODY, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]).task_id == 42


def test_uppercase_hex_and_whitespace_are_accepted() -> None:
    signature = sign(SECRET, BODY, NOW)
    assert verify(sig=" sha256=" + signature.removeprefix("sha256=").upper() + " ").task_id == 42


def test_tampered_body_is_rejected() -> None:
    with pytest.raises(WebhookSignatureMismatch):
        verify(body=b'{"task_id": 43}', sig=sign(SECRET, BODY, NOW))


def test_tampered_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookSignatureMismatch):
        verify(ts=str(NOW + 1))


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(WebhookSignatureMismatch):
        verify(sig=sign("other", BODY, NOW))


def test_rotated_secrets_accept_either() -> None:
    for secret in ("old", "new"):
        hint = verify_hint(["old", "new"], BODY, str(NOW), sign(secret, BODY, NOW), now=NOW)
        assert hint.task_id == 42
    with pytest.raises(WebhookSignatureMismatch):
        verify_hint(["old", "new"], BODY, str(NOW), sign(SECRET, BODY, NOW), now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_stale_and_future_timestamps_are_rejected(skew: int) -> None:
    with pytest.raises(WebhookStale):
        verify(now=NOW - skew)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_inside_tolerance_pass(skew: int) -> None:
    assert verify(now=NOW + skew).task_id == 42


def test_tolerance_is_configurable() -> None:
    with pytest.raises(WebhookStale):
        verify(now=NOW + 11, tolerance=10)


@pytest.mark.parametrize(
    ("ts", "sig"),
    [
        (None, None),
        ("", None),
        ("-5", None),
        ("1700000000.5", None),
        ("soon", None),
        (str(NOW), ""),
        (str(NOW), "5a70b3ce44fba25cf89a5ce3be5ae804b74e864ee1a4b5acbff79078d92bc167"),  # no sha256=
        (str(NOW), "sha1=5a70b3ce44fba25cf89a5ce3be5ae804b74e864ee1a4b5acbff79078d92bc167"),
        (str(NOW), "sha256=5a70b3ce"),  # too short
        (str(NOW), "sha256=" + "z" * 64),  # not hex
        (str(NOW), "sha256=" + "a" * 64 + ",sha256=" + "b" * 64),
    ],
)
def test_malformed_headers_are_rejected(ts: str | None, sig: str | None) -> None:
    signature = sign(SECRET, BODY, NOW) if sig is None and ts is not None else (sig or "")
    with pytest.raises(WebhookMalformed):
        verify_hint(SECRET, BODY, ts, signature if ts is not None else None, now=NOW)


def test_missing_signature_header_is_malformed() -> None:
    with pytest.raises(WebhookMalformed):
        verify_hint(SECRET, BODY, str(NOW), None, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"task_id": "42"}',
        b'{"task_id": true}',
        b'{"task_id": 0}',
        b'{"task_id": -1}',
    ],
)
def test_signed_but_malformed_body_is_rejected(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        verify(body=body, sig=sign(SECRET, body, NOW))


def test_oversized_body_is_rejected_before_hashing() -> None:
    body = b'{"task_id": 1, "pad": "' + b"x" * 10_000 + b'"}'
    with pytest.raises(WebhookMalformed, match="too large"):
        verify(body=body, sig=sign(SECRET, body, NOW))


def test_errors_share_a_base_with_reasons() -> None:
    reasons = {cls.reason for cls in (WebhookMalformed, WebhookSignatureMismatch, WebhookStale)}
    assert reasons == {"malformed", "bad_signature", "stale_timestamp"}
    assert all(
        issubclass(cls, WebhookError) for cls in (WebhookMalformed, WebhookSignatureMismatch, WebhookStale)
    )


def test_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="secret"):
        verify_hint("", BODY, str(NOW), sign("x", BODY, NOW), now=NOW)


def _with_security(security: Any) -> bytes:
    return json.dumps({"task_id": 42, "security": security}).encode()


def test_a_security_summary_travels_with_the_task_id() -> None:
    body = _with_security({"hardening_index": 0, "warnings": 0, "scanned_at": NOW - 60})
    assert verify(body=body, sig=sign(SECRET, body, NOW)) == TaskHint(
        task_id=42,
        security=SecuritySummary(
            hardening_index=0, warnings=0, scanned_at=datetime.fromtimestamp(NOW - 60, UTC)
        ),
    )


def _valid(**changes: Any) -> dict[str, Any]:
    return {"hardening_index": 100, "warnings": 7, "scanned_at": NOW, **changes}


@pytest.mark.parametrize(
    "security",
    [
        None,
        [],
        "x",
        {},
        _valid(hardening_index=101),
        _valid(hardening_index=-1),
        _valid(hardening_index=50.0),
        _valid(hardening_index="50"),
        _valid(hardening_index=True),
        _valid(warnings=-1),
        _valid(warnings=10**9),
        _valid(warnings=None),
        _valid(scanned_at=NOW + 301),
        _valid(scanned_at=NOW - MAX_SCAN_AGE_SECONDS - 1),
        _valid(scanned_at=float(NOW)),
        _valid(scanned_at="2026-12-02T07:00:00Z"),
        {**_valid(), "extra": 1},
        {"hardening_index": 1, "warnings": 1},
    ],
    ids=lambda value: json.dumps(value)[:50],
)
def test_a_malformed_security_summary_makes_the_whole_hint_malformed(security: Any) -> None:
    body = _with_security(security)
    with pytest.raises(HintInvalid, match="security"):
        verify(body=body, sig=sign(SECRET, body, NOW))


@pytest.mark.parametrize("scanned_at", [NOW + 300, NOW - MAX_SCAN_AGE_SECONDS])
def test_scan_times_at_the_edges_pass(scanned_at: int) -> None:
    body = _with_security(_valid(scanned_at=scanned_at))
    hint = verify(body=body, sig=sign(SECRET, body, NOW))
    assert hint.security is not None
