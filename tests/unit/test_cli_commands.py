"""The boreas command run in process against an httpx.MockTransport: what goes to stdout and
stderr, the exit codes of docs/cli.md, and the requests it makes."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable

import httpx
import pytest

from boreas_cli import context
from boreas_cli.__main__ import main
from boreas_cli.client import Api
from boreas_cli.config import Settings

Handler = Callable[[httpx.Request], httpx.Response]
INSTANCE = {
    "id": "4dc69263-ae23-4224-909a-a3f23db3d179",
    "name": "web-1",
    "owner": "alice",
    "state": "running",
    "cpus": 2,
    "memory_mb": 2048,
    "provider": "simulator",
    "region": "north",
    "created_at": "2026-11-25T07:32:21.026020Z",
}


def problem(status: int, title: str, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.fixture
def boreas(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Runs ``boreas *args`` with ``handler`` as the gateway; (exit code, stdout, stderr)."""

    def run(handler: Handler, *args: str, token: str | None = "t0ken") -> tuple[int, str, str]:
        settings = Settings(
            url="http://boreas.test", token=token, username=None, token_from_env=True
        )

        def api(*, needs_token: bool = True) -> Api:
            return Api(settings, transport=httpx.MockTransport(handler), needs_token=needs_token)

        monkeypatch.setattr(context, "api", api)
        monkeypatch.setattr(sys, "argv", ["boreas", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    return run


@pytest.mark.parametrize(
    ("status", "title", "code"),
    [(401, "Unauthorized", 3), (403, "Forbidden", 4), (404, "Not Found", 4), (409, "Conflict", 5)],
)
def test_a_refusal_prints_the_problem_on_stderr_and_exits_with_its_code(
    boreas: Callable[..., tuple[int, str, str]], status: int, title: str, code: int
) -> None:
    exit_code, out, err = boreas(
        lambda _r: problem(status, title, "Said the gateway."), "instances", "stop", INSTANCE["id"]
    )
    assert exit_code == code
    assert out == ""
    assert err.startswith(f"boreas: {title}: Said the gateway.\n")
    assert "Traceback" not in err


def test_a_server_error_is_a_generic_failure(boreas: Callable[..., tuple[int, str, str]]) -> None:
    exit_code, out, err = boreas(
        lambda _r: problem(500, "Internal Server Error", "It was logged."), "instances", "list"
    )
    assert (exit_code, out, err) == (1, "", "boreas: Internal Server Error: It was logged.\n")


def test_an_unreachable_gateway_has_its_own_code(
    boreas: Callable[..., tuple[int, str, str]],
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    exit_code, out, err = boreas(refuse, "instances", "list")
    assert exit_code == 6 and out == ""
    assert err.startswith("boreas: Cannot reach the Boreas gateway at http://boreas.test")


def test_without_a_token_nothing_is_sent(boreas: Callable[..., tuple[int, str, str]]) -> None:
    sent: list[httpx.Request] = []
    exit_code, _, err = boreas(
        lambda r: sent.append(r) or httpx.Response(200), "whoami", token=None
    )
    assert (exit_code, sent) == (3, [])
    assert "boreas login" in err


def test_a_wrong_command_line_is_a_usage_error(
    boreas: Callable[..., tuple[int, str, str]],
) -> None:
    exit_code, out, _ = boreas(lambda _r: httpx.Response(200), "instances", "launch")
    assert (exit_code, out) == (2, "")


def test_lists_follow_every_page_and_print_json_or_a_table(
    boreas: Callable[..., tuple[int, str, str]],
) -> None:
    second = INSTANCE | {"id": "5ec0d000-0000-4000-8000-000000000000", "name": "web-2"}

    def pages(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer t0ken"
        if request.url.params.get("cursor") == "next":
            return httpx.Response(200, json={"items": [second], "next_cursor": None})
        return httpx.Response(200, json={"items": [INSTANCE], "next_cursor": "next"})

    exit_code, out, err = boreas(pages, "instances", "list", "-o", "json")
    assert (exit_code, err) == (0, "")
    assert json.loads(out) == [INSTANCE, second]

    exit_code, out, _ = boreas(pages, "instances", "list")
    header, *rows = out.splitlines()
    assert header.split() == [
        "ID", "NAME", "OWNER", "STATE", "CPUS", "MEMORY_MB", "PROVIDER", "REGION", "CREATED",
    ]  # fmt: skip
    assert [row.split()[:4] for row in rows] == [
        [INSTANCE["id"], "web-1", "alice", "running"],
        [second["id"], "web-2", "alice", "running"],
    ]


def test_an_instance_is_found_by_its_name(boreas: Callable[..., tuple[int, str, str]]) -> None:
    gone = INSTANCE | {"id": "0dd00000-0000-4000-8000-000000000000", "state": "terminated"}
    asked: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/users/me":
            return httpx.Response(200, json={"id": "u", "username": "alice", "role": "user"})
        if request.url.path == "/v1/instances":
            return httpx.Response(200, json={"items": [gone, INSTANCE], "next_cursor": None})
        return httpx.Response(202, json=INSTANCE | {"state": "terminating"})

    exit_code, out, _ = boreas(gateway, "instances", "terminate", "web-1", "-o", "json")
    assert exit_code == 0
    assert asked[-1] == f"DELETE /v1/instances/{INSTANCE['id']}"
    assert json.loads(out)[0]["state"] == "terminating"


def test_quotas_set_keeps_the_limits_not_given(
    boreas: Callable[..., tuple[int, str, str]],
) -> None:
    put: list[dict[str, int | None]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        limits = {"instances": 10, "cpus": 20, "memory_mb": 40960}
        if request.method == "PUT":
            put.append(json.loads(request.content))
            limits = put[-1]
        return httpx.Response(200, json={"limits": limits, "usage": {"instances": 1}})

    exit_code, out, _ = boreas(
        gateway, "quotas", "set", "alice", "--instances", "2", "--memory-mb", "unlimited"
    )
    assert exit_code == 0
    assert put == [{"instances": 2, "cpus": 20, "memory_mb": None}]
    assert out.splitlines()[1].split() == ["instances", "2", "1"]
    assert out.splitlines()[3].split() == ["memory_mb", "unlimited", "-"]


def test_grants_add_keeps_the_grantees_there_are(
    boreas: Callable[..., tuple[int, str, str]],
) -> None:
    account = {"id": "acc-1", "name": "team-sim", "grants": ["alice"]}
    put: list[dict[str, list[str]]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            put.append(json.loads(request.content))
            return httpx.Response(200, json=account | put[-1])
        if request.url.path == "/v1/provider-accounts":
            return httpx.Response(200, json={"items": [account], "next_cursor": None})
        return httpx.Response(200, json=account)

    exit_code, _, _ = boreas(gateway, "grants", "add", "team-sim", "bob", "alice")
    assert exit_code == 0
    assert put == [{"grants": ["alice", "bob"]}]


def test_usage_as_csv_has_a_row_per_owner_and_account(
    boreas: Callable[..., tuple[int, str, str]],
) -> None:
    hours = {"instance_hours": 1.5, "cpu_hours": 3.0, "memory_mb_hours": 3072.0}
    report = {
        "from": "2026-10-26T00:00:00Z",
        "to": "2026-11-25T00:00:00Z",
        "owners": [
            {"owner": "alice", **hours, "accounts": [{"account_id": "acc-1", **hours}]},
            {"owner": "bob", **hours, "accounts": [{"account_id": "acc-gone", **hours}]},
        ],
    }

    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/usage":
            assert request.url.params["from"] == "2026-10-26T00:00:00Z"
            return httpx.Response(200, json=report)
        accounts = [{"id": "acc-1", "name": "team-sim"}]
        return httpx.Response(200, json={"items": accounts, "next_cursor": None})

    exit_code, out, err = boreas(gateway, "usage", "--csv", "--from", "2026-10-26T00:00:00Z")
    assert (exit_code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["owner"], r["account"], r["cpu_hours"]) for r in rows] == [
        ("alice", "team-sim", "3.0"),
        ("bob", "acc-gone", "3.0"),  # a deleted account: its id
    ]
