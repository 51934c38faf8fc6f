"""Sealing provider credentials: AES-GCM, bound to the account, rotatable."""

import base64
import json
from pathlib import Path

import pytest

from shared.credentials import (
    CredentialCipher,
    CredentialsUnreadable,
    dev_key,
    key_id,
    new_key_text,
    parse_key,
)
from shared.events import SealedSecret

SECRET = {"key": "AKIA-EXAMPLE", "secret": "wJalrXUtnFEMI-unique-secret-string"}


def cipher() -> CredentialCipher:
    return CredentialCipher.from_texts(new_key_text())


def test_sealed_credentials_open_again_and_hide_the_plaintext() -> None:
    c = cipher()
    sealed = c.seal("acct-1", SECRET)
    assert c.open("acct-1", sealed) == SECRET
    wire = sealed.model_dump_json()
    assert "wJalrXUtnFEMI" not in wire
    assert SECRET["secret"].encode() not in base64.b64decode(sealed.ciphertext)
    assert sealed.key_id == c.current_key_id


def test_each_seal_uses_a_fresh_nonce() -> None:
    c = cipher()
    assert c.seal("a", SECRET).nonce != c.seal("a", SECRET).nonce


def test_ciphertext_moved_to_another_account_does_not_open() -> None:
    c = cipher()
    with pytest.raises(CredentialsUnreadable):
        c.open("acct-2", c.seal("acct-1", SECRET))


def test_tampered_ciphertext_does_not_open() -> None:
    c = cipher()
    sealed = c.seal("acct-1", SECRET)
    raw = bytearray(base64.b64decode(sealed.ciphertext))
    raw[0] ^= 1
    forged = sealed.model_copy(update={"ciphertext": base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(CredentialsUnreadable):
        c.open("acct-1", forged)


def test_rotation_opens_old_ciphertexts_and_reseals_under_the_new_key() -> None:
    old_text, new_text = new_key_text(), new_key_text()
    old = CredentialCipher.from_texts(old_text)
    sealed_old = old.seal("acct-1", SECRET)

    rotated = CredentialCipher.from_texts(new_text, [old_text])
    assert rotated.open("acct-1", sealed_old) == SECRET
    resealed = rotated.reseal("acct-1", sealed_old)
    assert resealed.key_id == key_id(parse_key(new_text)) != sealed_old.key_id
    assert CredentialCipher.from_texts(new_text).open("acct-1", resealed) == SECRET
    with pytest.raises(CredentialsUnreadable, match="no configured key"):
        CredentialCipher.from_texts(new_text).open("acct-1", sealed_old)


@pytest.mark.parametrize("bad", ["", "short", base64.b64encode(b"x" * 16).decode()])
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="secret key"):
        parse_key(bad)


def test_dev_key_is_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / ".boreas" / "secret.key"
    first = dev_key(path)
    assert dev_key(path) == first
    assert path.stat().st_mode & 0o077 == 0
    parse_key(first)


def test_sealed_form_is_plain_json() -> None:
    sealed = cipher().seal("a", SECRET)
    assert set(json.loads(sealed.model_dump_json())) == {"key_id", "nonce", "ciphertext"}
    assert SealedSecret.model_validate_json(sealed.model_dump_json()) == sealed
