"""Standard Webhooks signatures: the spec's published vector, rotation, and secret shape."""

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.webhooks import signing

# The example of the Standard Webhooks specification (its libraries test against it).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_example_signs_as_published() -> None:
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_one_changed_byte_changes_the_signature() -> None:
    for changed in (
        (SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY),
        (SPEC_SECRET, SPEC_ID + "x", SPEC_TIMESTAMP, SPEC_BODY),
        (SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.replace(b" ", b"")),
    ):
        assert signing.sign(*changed) != SPEC_SIGNATURE


def test_a_rotation_signs_with_every_secret_in_force() -> None:
    new, old = signing.new_secret(), signing.new_secret()
    header = signing.headers([new, old], "evt-1", 1700000000, b"{}")
    assert header["webhook-id"] == "evt-1"
    assert header["webhook-timestamp"] == "1700000000"
    signatures = header["webhook-signature"].split(" ")
    for secret, signature in zip([new, old], signatures, strict=True):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = hmac.new(key, b"evt-1.1700000000.{}", hashlib.sha256).digest()
        assert signature == "v1," + base64.b64encode(expected).decode()


def test_a_receiver_on_the_reference_library_verifies_with_either_rotated_secret() -> None:
    new, old, unrelated = signing.new_secret(), signing.new_secret(), signing.new_secret()
    body = b'{"id": "evt-2"}'
    header = signing.headers([new, old], "evt-2", int(time.time()), body)
    for secret in (new, old):
        assert Webhook(secret).verify(body, header) == {"id": "evt-2"}
    with pytest.raises(WebhookVerificationError):
        Webhook(unrelated).verify(body, header)


def test_new_secrets_are_whsec_and_32_random_bytes() -> None:
    made = {signing.new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(len(signing.secret_key(s)) == 32 for s in made)


# The first two the reference library would take as some key rather than refuse.
@pytest.mark.parametrize(
    "bad",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw!!",
        "whsec_not base64!",
    ],
)
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(signing.MalformedSecret):
        signing.sign(bad, "id", 1, b"")
