"""Provider credentials, sealed with AES-256-GCM under BOREAS_SECRET_KEY.

A sealed credential carries the id of the key that sealed it, a random 96-bit nonce and the
ciphertext; the account id is bound in as associated data, so a ciphertext copied onto another
account does not open. Webhook signing secrets are sealed the same way, bound to their webhook's
id under another purpose. Rotation: configure the new key as current and the old ones as previous,
then re-seal every account (``python -m services.gateway.rekey``); until then both open.

Only the gateway seals. The services that act on clouds receive sealed credentials inside the
internal ``provider_account.changed`` event and open them with the same key: credentials never
cross the bus, a log line or an API response in clear.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.events import SealedSecret

KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KEY_FILE = Path(".boreas") / "secret.key"


class CredentialsUnreadable(Exception):
    """Wrong key, tampered ciphertext, or a ciphertext that belongs to another account."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"boreas.key-id:" + key).hexdigest()[:12]


def parse_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError as exc:
        raise ValueError("a secret key must be base64 (urlsafe) of 32 random bytes") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"a secret key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def new_key_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def dev_key(path: Path = DEV_KEY_FILE) -> str:
    """The development key: generated once into a git-ignored file, then reused by every process."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, new_key_text().encode())
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    return path.read_text().strip()


# What a sealed value is for: bound in with its owner's id, so it opens for nothing else.
PROVIDER_ACCOUNT = "provider-account"
WEBHOOK = "webhook"
WEBHOOK_URL = "webhook-url"


def _associated_data(purpose: str, subject_id: str) -> bytes:
    return f"boreas.{purpose}:{subject_id}".encode()


@dataclass(frozen=True)
class CredentialCipher:
    current: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def from_texts(
        cls, current: str, previous: list[str] | tuple[str, ...] = ()
    ) -> CredentialCipher:
        return cls(parse_key(current), tuple(parse_key(p) for p in previous if p.strip()))

    @property
    def current_key_id(self) -> str:
        return key_id(self.current)

    def seal(
        self, account_id: str, credentials: dict[str, str], *, purpose: str = PROVIDER_ACCOUNT
    ) -> SealedSecret:
        nonce = secrets.token_bytes(NONCE_BYTES)
        plaintext = json.dumps(credentials, sort_keys=True).encode()
        ciphertext = AESGCM(self.current).encrypt(
            nonce, plaintext, _associated_data(purpose, account_id)
        )
        return SealedSecret(
            key_id=self.current_key_id,
            nonce=base64.b64encode(nonce).decode(),
            ciphertext=base64.b64encode(ciphertext).decode(),
        )

    def open(
        self, account_id: str, sealed: SealedSecret, *, purpose: str = PROVIDER_ACCOUNT
    ) -> dict[str, str]:
        keys = {key_id(k): k for k in (self.current, *self.previous)}
        key = keys.get(sealed.key_id)
        if key is None:
            raise CredentialsUnreadable(f"no configured key has id {sealed.key_id}")
        try:
            plaintext = AESGCM(key).decrypt(
                base64.b64decode(sealed.nonce),
                base64.b64decode(sealed.ciphertext),
                _associated_data(purpose, account_id),
            )
        except (InvalidTag, ValueError) as exc:
            raise CredentialsUnreadable(
                "credentials do not open with this key and account"
            ) from exc
        return json.loads(plaintext)

    def reseal(
        self, account_id: str, sealed: SealedSecret, *, purpose: str = PROVIDER_ACCOUNT
    ) -> SealedSecret:
        """Re-encrypt under the current key (no-op result if it already is)."""
        if sealed.key_id == self.current_key_id:
            return sealed
        opened = self.open(account_id, sealed, purpose=purpose)
        return self.seal(account_id, opened, purpose=purpose)
