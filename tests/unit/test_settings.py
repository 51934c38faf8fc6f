"""Settings follow the contract's environment variables and refuse default secrets in prod."""

import pydantic
import pytest

from shared.config import GatewaySettings, NotifierSettings, ServiceSettings
from shared.credentials import new_key_text


def test_defaults_are_the_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOREAS_AMQP_URL", "BOREAS_DATABASE_URL", "BOREAS_GATEWAY_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOREAS_ENV", "dev")  # prod, the default, refuses the guest account
    settings = GatewaySettings()
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/boreas"
    assert settings.gateway_port == 8080


def test_a_service_started_bare_is_prod_and_refuses_default_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BOREAS_ENV", "BOREAS_AMQP_URL", "BOREAS_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(pydantic.ValidationError, match="BOREAS_ENV=prod refuses"):
        ServiceSettings()
    monkeypatch.setenv("BOREAS_AMQP_URL", "amqp://boreas:s3cret@mq:5672/")
    monkeypatch.setenv("BOREAS_SECRET_KEY", new_key_text())
    settings = ServiceSettings()
    assert settings.env == "prod"
    assert settings.webhook_networks() == (), "no private network for webhooks"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_AMQP_URL", "amqp://boreas:s3cret@mq:5672/prod")
    monkeypatch.setenv("BOREAS_GATEWAY_PORT", "9090")
    settings = GatewaySettings()
    assert settings.amqp_url == "amqp://boreas:s3cret@mq:5672/prod"
    assert settings.gateway_port == 9090


def test_prod_refuses_the_default_broker_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_ENV", "prod")
    monkeypatch.delenv("BOREAS_AMQP_URL", raising=False)
    with pytest.raises(pydantic.ValidationError, match="refuses the default RabbitMQ guest"):
        ServiceSettings()


def test_prod_accepts_a_real_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_ENV", "prod")
    monkeypatch.setenv("BOREAS_AMQP_URL", "amqp://boreas:s3cret@mq:5672/")
    monkeypatch.setenv("BOREAS_SECRET_KEY", new_key_text())
    assert ServiceSettings().env == "prod"


def test_nonsense_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_GATEWAY_PORT", "99999")
    with pytest.raises(pydantic.ValidationError, match="gateway_port"):
        GatewaySettings()


def test_prod_requires_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOREAS_ENV", "prod")
    monkeypatch.setenv("BOREAS_AMQP_URL", "amqp://boreas:s3cret@mq:5672/")
    monkeypatch.delenv("BOREAS_SECRET_KEY", raising=False)
    with pytest.raises(pydantic.ValidationError, match="requires BOREAS_SECRET_KEY"):
        ServiceSettings()


def test_secret_key_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key_text()
    monkeypatch.setenv("BOREAS_SECRET_KEY", key)
    settings = ServiceSettings()
    assert key not in repr(settings) and key not in str(settings.model_dump())
    assert settings.credential_cipher().current_key_id


def test_one_owners_webhooks_get_a_quarter_of_a_replicas_requests_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BOREAS_WEBHOOK_CONCURRENCY", "BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER"):
        monkeypatch.delenv(name, raising=False)
    assert NotifierSettings().webhook_owner_limit() == 8
    monkeypatch.setenv("BOREAS_WEBHOOK_CONCURRENCY", "6")
    assert NotifierSettings().webhook_owner_limit() == 1
    monkeypatch.setenv("BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER", "5")
    assert NotifierSettings().webhook_owner_limit() == 5


def test_an_owner_may_never_fill_a_replicas_webhook_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOREAS_WEBHOOK_CONCURRENCY", "16")
    monkeypatch.setenv("BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER", "16")
    with pytest.raises(
        pydantic.ValidationError,
        match=r"BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER \(16\) must be below "
        r"BOREAS_WEBHOOK_CONCURRENCY \(16\)",
    ):
        NotifierSettings()
    monkeypatch.delenv("BOREAS_WEBHOOK_CONCURRENCY_PER_OWNER")
    monkeypatch.setenv("BOREAS_WEBHOOK_CONCURRENCY", "1")
    with pytest.raises(pydantic.ValidationError, match="must be at least 2"):
        NotifierSettings()
