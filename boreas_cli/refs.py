"""What a command is given to name an instance or a deployment: its id, or its name among the
caller's own that have not ended."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from boreas_cli.client import Api
from boreas_cli.errors import CliError, ExitCode


def resolve(
    api: Api, ref: str, *, path: str, noun: str, ended: Collection[str], ended_as: str
) -> str:
    """The id ``ref`` is, or the id of the one item of the list at ``path`` (``noun``s) that is
    the caller's, named ``ref`` and in no state of ``ended`` (``ended_as`` says which, to a
    user)."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    me = api.get("/v1/users/me")
    named = [
        item
        for item in api.pages(path, owner=me["username"])
        if item.get("name") == ref and item.get("state") not in ended
    ]
    if not named:
        raise CliError(
            f"You have no {noun} named {ref!r} (that is not {ended_as}).", ExitCode.NOT_FOUND
        )
    if len(named) > 1:
        ids = ", ".join(str(item["id"]) for item in named)
        raise CliError(f"Several {noun}s are named {ref!r} ({ids}); give an id.")
    return str(named[0]["id"])
