"""parse_ssh_public_key over a table of real keys (made here with cryptography) and hostile lines."""

from __future__ import annotations

import base64
import struct
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.instances.ssh_keys import MAX_BYTES, InvalidSshKey, SshPublicKey, parse_ssh_public_key


def openssh(key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def line(key_type: str, blob: bytes, comment: str = "") -> str:
    text = f"{key_type} {base64.b64encode(blob).decode()}"
    return f"{text} {comment}" if comment else text


def blob_of(text: str) -> bytes:
    return base64.b64decode(text.split()[1])


ED25519 = ed25519.Ed25519PrivateKey.generate().public_key()
ED25519_LINE = openssh(ED25519)
ED25519_RAW = ED25519.public_bytes(Encoding.Raw, PublicFormat.Raw)
P256 = ec.generate_private_key(ec.SECP256R1()).public_key()
P256_POINT = P256.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
P384_LINE = openssh(ec.generate_private_key(ec.SECP384R1()).public_key())
P521_LINE = openssh(ec.generate_private_key(ec.SECP521R1()).public_key())
RSA_2048_LINE = openssh(rsa.generate_private_key(65537, 2048).public_key())
RSA_1024_LINE = openssh(rsa.generate_private_key(65537, 1024).public_key())  # noqa: S505 (refused here)
SK_ED25519_BLOB = ssh_string(b"sk-ssh-ed25519@openssh.com") + ssh_string(ED25519_RAW) + ssh_string(b"ssh:")
SK_P256_BLOB = (
    ssh_string(b"sk-ecdsa-sha2-nistp256@openssh.com")
    + ssh_string(b"nistp256")
    + ssh_string(P256_POINT)
    + ssh_string(b"ssh:")
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # cryptography deprecates DSA; here it is the point
    DSA = dsa.generate_private_key(1024).public_key()  # noqa: S505 (refused here)
    DSA_LINE = DSA.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)


GOOD: list[tuple[str, str, str]] = [
    # (pasted, type, comment)
    (ED25519_LINE, "ssh-ed25519", ""),
    (ED25519_LINE + " alice@laptop", "ssh-ed25519", "alice@laptop"),
    (ED25519_LINE + " alice on her laptop\n", "ssh-ed25519", "alice on her laptop"),  # `cat id.pub`
    ("  " + ED25519_LINE + " a\r\n", "ssh-ed25519", "a"),
    (openssh(P256) + " p256", "ecdsa-sha2-nistp256", "p256"),
    (P384_LINE, "ecdsa-sha2-nistp384", ""),
    (P521_LINE, "ecdsa-sha2-nistp521", ""),
    (RSA_2048_LINE + " rsa", "ssh-rsa", "rsa"),
    (line("sk-ssh-ed25519@openssh.com", SK_ED25519_BLOB, "yubikey"), "sk-ssh-ed25519@openssh.com", "yubikey"),
    (line("sk-ecdsa-sha2-nistp256@openssh.com", SK_P256_BLOB), "sk-ecdsa-sha2-nistp256@openssh.com", ""),
]


# Ids by position and type: the keys are made per run, and pytest-xdist workers must collect the same ids.
@pytest.mark.parametrize(
    ("pasted", "key_type", "comment"), GOOD, ids=[f"{n}-{row[1]}" for n, row in enumerate(GOOD)]
)
def test_accepted_keys_are_reserialised_from_their_parsed_form(
    pasted: str, key_type: str, comment: str
) -> None:
    parsed = parse_ssh_public_key(pasted)

    assert (parsed.key_type, parsed.comment) == (key_type, comment)
    assert parsed.blob == blob_of(pasted)
    expected = " ".join(pasted.split()[:2]) + (f" {comment}" if comment else "")
    assert parsed.openssh() == expected


def test_the_stored_line_carries_only_type_blob_and_comment() -> None:
    parsed = parse_ssh_public_key("\t" + ED25519_LINE + "   bob@host  \n")
    assert parsed == SshPublicKey("ssh-ed25519", blob_of(ED25519_LINE), "bob@host")
    assert parsed.openssh() == ED25519_LINE + " bob@host"


ED_BLOB = blob_of(ED25519_LINE)
HOSTILE: list[tuple[str, str, str]] = [
    # (why, pasted, words the message must contain)
    ("empty", "", "empty"),
    ("blank", " \n ", "empty"),
    ("no blob", "ssh-ed25519", "key type followed by"),
    ("not base64", "ssh-ed25519 AAAA$$$$", "base64"),
    ("garbage blob", "ssh-rsa not-a-key", "base64"),
    ("truncated blob", line("ssh-ed25519", ED_BLOB[:20]), "not a valid ssh-ed25519"),
    ("trailing bytes in the blob", line("ssh-ed25519", ED_BLOB + b"x"), "not a valid ssh-ed25519"),
    ("ed25519 blob declared as rsa", line("ssh-rsa", ED_BLOB), "of type 'ssh-ed25519', but the line says"),
    ("p384 blob declared as p256", "ecdsa-sha2-nistp256 " + P384_LINE.split()[1], "of type"),
    ("sk blob declared plain", line("ssh-ed25519", SK_ED25519_BLOB), "of type"),
    ("blob without a type", line("ssh-ed25519", b"\x00\x00"), "too short"),
    ("blob type of absurd length", line("ssh-ed25519", b"\xff\xff\xff\xff" + ED_BLOB), "does not start"),
    ("RSA 1024", RSA_1024_LINE, "at least 2048 bits (this one has 1024)"),
    ("DSA", DSA_LINE.decode(), "'ssh-dss' is not allowed"),
    ("certificate", "ssh-ed25519-cert-v01@openssh.com AAAA", "not allowed"),
    ("authorized_keys options", 'command="id" ' + ED25519_LINE, "not allowed"),
    ("comment with \\r", ED25519_LINE + " a\rruncmd: [id]", "one line"),
    ("comment with \\x85", ED25519_LINE + " a\x85runcmd: [id]", "printable ASCII"),
    ("comment with U+2028", ED25519_LINE + " a\u2028runcmd: [id]", "printable ASCII"),
    ("comment ending in U+2028", ED25519_LINE + " a\u2028", "printable ASCII"),
    ("comment with \\x00", ED25519_LINE + " a\x00b", "printable ASCII"),
    ("comment with a tab", ED25519_LINE + " a\tb", "printable ASCII"),
    ("comment with \\x1b", ED25519_LINE + " \x1b[31mred", "printable ASCII"),
    ("non-ASCII comment", ED25519_LINE + " jürgen", "printable ASCII"),
    ("two keys on one line", ED25519_LINE + " " + P384_LINE, "exactly one key"),
    ("two keys after a comment", ED25519_LINE + " me " + RSA_2048_LINE, "exactly one key"),
    ("two keys on two lines", ED25519_LINE + "\n" + P384_LINE, "one line"),
    ("two keys, CRLF", ED25519_LINE + "\r\n" + P384_LINE, "one line"),
    ("8 KiB + 1", ED25519_LINE + " " + "c" * (MAX_BYTES - len(ED25519_LINE)), "longer than 8 KiB"),
    ("8 KiB + 1 in UTF-8", ED25519_LINE + " " + "é" * ((MAX_BYTES - len(ED25519_LINE)) // 2), "8 KiB"),
]


@pytest.mark.parametrize(("why", "pasted", "says"), HOSTILE, ids=[row[0] for row in HOSTILE])
def test_hostile_keys_are_refused_with_a_reason(why: str, pasted: str, says: str) -> None:
    with pytest.raises(InvalidSshKey) as refused:
        parse_ssh_public_key(pasted)
    assert says in str(refused.value), why


def test_exactly_8_kib_is_accepted() -> None:
    pasted = ED25519_LINE + " " + "c" * (MAX_BYTES - len(ED25519_LINE) - 1)
    assert len(pasted) == MAX_BYTES
    assert parse_ssh_public_key(pasted).key_type == "ssh-ed25519"
