"""Each event schema is pinned to its VERSION: change a schema without bumping it and this fails.

When it fails on purpose: bump ``VERSION`` (minor for additive changes, a new class with the next
major for breaking ones), add the changelog line above it, and update the fingerprint here.
"""

import hashlib
import inspect
import json
import re

import pytest

from shared.events import CATALOG, Event

PINNED = {
    "ServiceHeartbeat": "1.1-f0385e66d23119bd",
    "InstanceLaunchRequested": "1.2-a4dc55954ea66865",
    "InstanceRejected": "1.0-bcf6b78ab940f30b",
    "InstancePlaced": "1.2-0c2765f827a9368c",
    "InstanceFailed": "1.0-533a75836fc04052",
    "InstanceStateChanged": "1.0-331872ab03a84c98",
    "InstanceActionRequested": "1.0-9c2da1f948f3fc41",
    "InstanceOwnerChanged": "1.0-da580951d8007a97",
    "ProviderAccountChanged": "1.1-57e954717161cd31",
    "ProviderAccountHealth": "1.0-30096565dfd8e83c",
    "InstanceLaunchAdmitted": "1.2-a4dc55954ea66865",
    "QuotaLimitsSet": "1.1-972c7d4e687f54fb",
    "QuotaUsageChanged": "1.1-c24fdeba419bb315",
    "WebhookChanged": "2.0-3179f4d423db6137",
    "WebhookDeliveryAttempted": "1.0-ae2dc8b409d57324",
    "WebhookDisabled": "1.0-2817fad49dfb25d7",
    "ProviderAccountCatalogRead": "1.0-a91ec41e66e28ca9",
    "InstanceApprovalRequested": "1.0-072f16cfae12a160",
    "InstanceApproved": "1.0-693deb276cf3ed20",
    "InstanceDenied": "1.0-5c2ddc6b7962e908",
    "InstanceLeaseExtended": "1.0-5b0115860226f14b",
    "InstanceLeaseExpiring": "1.0-1d286a750ac1d85e",
    "InstanceLeaseExpired": "1.0-1d286a750ac1d85e",
    "DeploymentRequested": "1.0-6e8794e050d6aacf",
    "DeploymentAdmitted": "1.0-c2bc24cd638026ab",
    "DeploymentRefused": "1.0-476d9ef6d57b6864",
    "DeploymentScaleRequested": "1.0-9ad2c5b320c97771",
    "DeploymentScaleAdmitted": "1.0-2b55aecbcdab4a89",
    "DeploymentScaleRefused": "1.0-a6bfc00315e7f853",
    "DeploymentDeleteRequested": "1.0-368fa9df4f034c60",
    "DeploymentOwnerChanged": "1.0-937e0e242e8629ca",
    "DeploymentStateChanged": "1.0-5f43a23b9d7e2cd3",
}

# The public contract: routing key → the fields ``data`` has at least.
CONTRACT_TOPICS = {
    "instance.state_changed": {
        "instance_id",
        "owner",
        "account_id",
        "provider",
        "provider_instance_id",
        "old_state",
        "new_state",
        "cpus",
        "memory_mb",
        "observed_at",
    },
    "instance.launch_requested": {
        "instance_id",
        "owner",
        "image",
        "cpus",
        "memory_mb",
        "placement",
    },
    "instance.rejected": {"instance_id", "owner", "reason"},
    "instance.placed": {
        "instance_id",
        "account_id",
        "provider",
        "provider_instance_id",
        "region",
    },
    "instance.failed": {"instance_id", "reason", "attempts"},
    "quota.usage_changed": {"owner", "usage", "limits"},
    "instance.lease_expiring": {"instance_id", "owner", "expires_at"},
    "instance.lease_expired": {"instance_id", "owner", "expires_at"},
    "instance.approval_requested": {"instance_id", "owner", "cpus", "memory_mb"},
    "instance.approved": {"instance_id", "owner"},
    "instance.denied": {"instance_id", "owner"},
    "deployment.state_changed": {"deployment_id", "owner", "new_state"},
}


def _structure(node: object) -> object:
    """The schema without its prose: rewording a docstring is no schema change."""
    if isinstance(node, dict):
        return {k: _structure(v) for k, v in node.items() if k not in ("description", "title")}
    if isinstance(node, list):
        return [_structure(v) for v in node]
    return node


def fingerprint(cls: type[Event]) -> str:
    structure = _structure(cls.model_json_schema())
    schema = json.dumps(structure, sort_keys=True, separators=(",", ":"))
    return f"{cls.VERSION}-{hashlib.sha256(schema.encode()).hexdigest()[:16]}"


@pytest.mark.parametrize("cls", CATALOG, ids=lambda c: c.__name__)
def test_schema_matches_its_pinned_version(cls: type[Event]) -> None:
    assert cls.__name__ in PINNED, f"{cls.__name__} is new: pin it as {fingerprint(cls)!r}"
    assert fingerprint(cls) == PINNED[cls.__name__], (
        f"{cls.__name__}'s schema or version changed: bump VERSION if the schema changed, then "
        f"pin {fingerprint(cls)!r}"
    )


def test_nothing_pinned_is_missing_from_the_catalog() -> None:
    assert set(PINNED) == {cls.__name__ for cls in CATALOG}


@pytest.mark.parametrize("cls", CATALOG, ids=lambda c: c.__name__)
def test_topic_and_version_are_well_formed(cls: type[Event]) -> None:
    assert re.fullmatch(r"[a-z_]+\.[a-z_]+", cls.TOPIC), "topics are entity.action"
    assert re.fullmatch(r"\d+\.\d+", cls.VERSION)


@pytest.mark.parametrize("cls", CATALOG, ids=lambda c: c.__name__)
def test_current_version_has_a_changelog_line(cls: type[Event]) -> None:
    source = inspect.getsource(cls)
    assert re.search(rf"#\s*{re.escape(cls.VERSION)}:", source), (
        f"add '# {cls.VERSION}: what changed' above {cls.__name__}.VERSION"
    )


def test_one_class_per_topic_and_major() -> None:
    types = [cls.ce_type() for cls in CATALOG]
    assert len(types) == len(set(types))


@pytest.mark.parametrize("topic", sorted(CONTRACT_TOPICS))
def test_public_topics_carry_the_contract_fields(topic: str) -> None:
    [cls] = [c for c in CATALOG if c.TOPIC == topic]
    missing = CONTRACT_TOPICS[topic] - set(cls.model_fields)
    assert not missing, f"{topic} lacks contract fields {missing}"
