"""Standard Webhooks signatures (https://www.standardwebhooks.com/), made by the specification's
own library, ``standardwebhooks``.

A secret is ``whsec_`` followed by base64 of random bytes; the HMAC key is those bytes. A message
is signed as ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256, and the signature is
sent as ``v1,<base64>``. During a secret rotation every current secret signs, the signatures
separated by spaces, so receivers holding either secret verify the message.

The secret's shape is checked here, strictly, before the library sees it: the library would also
take a secret without ``whsec_`` and skip characters that are not base64, so a mistyped secret
would sign with some other key instead of being refused.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = 32


class MalformedSecret(ValueError):
    pass


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise MalformedSecret(f"a webhook secret starts with {PREFIX}")
    try:
        return base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error as exc:
        raise MalformedSecret("a webhook secret is whsec_ then base64") from exc


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    # The library signs text: bodies are JSON, UTF-8 by definition, so the bytes survive.
    signed_at = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(secret_key(secret)).sign(message_id, signed_at, body.decode())


def signature_header(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_in_use)


def headers(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of a signed delivery."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_in_use, message_id, timestamp, body),
    }
