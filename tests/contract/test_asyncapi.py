"""docs/asyncapi.json is generated from the catalog, is current, and is valid AsyncAPI 3.0."""

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from shared.asyncapi import build, render
from shared.events import CATALOG, PUBLIC, Audience

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "asyncapi.json"
SPEC = ROOT / ".asyncapi-specs/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    if not SPEC.exists():
        pytest.fail("the AsyncAPI schemas are missing: `make test` installs them", pytrace=False)
    return Draft7Validator(json.loads(SPEC.read_text()))


def test_committed_document_is_the_generated_one() -> None:
    assert DOCUMENT.read_text() == render(), (
        "docs/asyncapi.json is out of date: python -m shared.asyncapi > docs/asyncapi.json"
    )


def test_document_is_valid_asyncapi_3(validator: Draft7Validator) -> None:
    errors = [e.message for e in validator.iter_errors(json.loads(DOCUMENT.read_text()))]
    assert errors == []


def test_the_validator_catches_a_broken_document(validator: Draft7Validator) -> None:
    broken = copy.deepcopy(build())
    first = next(iter(broken["channels"]))
    broken["channels"][first]["address"] = 42
    broken["operations"]["publish_" + first]["action"] = "shout"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_public_topic_is_a_channel_with_an_example_and_no_internal_one_is() -> None:
    document = build()
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {cls.TOPIC for cls in PUBLIC}
    assert {cls.TOPIC for cls in CATALOG if cls.AUDIENCE is Audience.INTERNAL}.isdisjoint(addresses)
    assert {"webhook.changed", "provider_account.changed", "quota.limits_set"} - addresses
    for cls in PUBLIC:
        [example] = document["components"]["messages"][cls.__name__]["examples"]
        assert cls.model_validate(example["payload"]["data"])  # examples obey their schema
        assert example["payload"]["type"] == cls.ce_type()
