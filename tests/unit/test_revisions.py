"""The newest-revision upsert that every projection of announced state uses."""

from __future__ import annotations

from shared.revisions import upsert_newest


def test_a_row_is_replaced_only_by_a_higher_revision() -> None:
    sql = upsert_newest("accounts", ("id", "name", "revision", "deleted"))
    assert sql == (
        "INSERT INTO accounts (id, name, revision, deleted) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, revision = EXCLUDED.revision, "
        "deleted = EXCLUDED.deleted WHERE accounts.revision < EXCLUDED.revision"
    )


def test_the_key_is_never_updated() -> None:
    sql = upsert_newest("webhooks", ("webhook_id", "revision"), key="webhook_id")
    assert "ON CONFLICT (webhook_id)" in sql
    assert "webhook_id = EXCLUDED" not in sql
