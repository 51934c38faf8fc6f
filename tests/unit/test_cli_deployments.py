"""`boreas deployments` run in process against an httpx.MockTransport, as in test_cli_commands:
templates read as YAML or JSON and sent as written, names and parameters, every problem of a
refused template on a line of its own, the list and one deployment with its groups, watching it
(events on GET /v1/events, or re-reading it while the stream is quiet), scaling and deleting."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from boreas_cli import deployment_watch
from boreas_cli.deployment_watch import change_lines, scaled, settled
from boreas_cli.errors import problem_message
from tests.unit import test_cli_commands
from tests.unit.test_cli_commands import problem

boreas = test_cli_commands.boreas  # the fixture: ``boreas(handler, *args)``
Run = Callable[..., tuple[int, str, str]]

ID = "d0000000-0000-4000-8000-000000000001"
DB1 = "10000000-0000-4000-8000-000000000001"
WEB1 = "20000000-0000-4000-8000-000000000001"
WEB2 = "20000000-0000-4000-8000-000000000002"
WEB3 = "20000000-0000-4000-8000-000000000003"
ME = {"id": "u", "username": "alice", "role": "user"}

TEMPLATE_YAML = """\
# a database, then two web servers on two accounts
groups:
  - name: db
    count: 1
    image: postgres-{{ version }}
    cpus: 2
    memory_mb: 4096
  - name: web
    count: 2
    image: nginx
    cpus: 1
    memory_mb: 1024
    spread: accounts
    after: [db]
on_failure: rollback
"""


def deployment(
    state: str = "running",
    db: str = "running",
    web: tuple[str, ...] = ("running", "running"),
    **fields: Any,
) -> dict[str, Any]:
    """The gateway's deployment ``shop``: a db and ``len(web)`` web servers in these states."""
    web_ids = [WEB1, WEB2, WEB3][: len(web)]
    return {
        "id": ID,
        "name": "shop",
        "owner": "alice",
        "state": state,
        "reason": None,
        "failed": [],
        "on_failure": "rollback",
        "parameters": {"version": "16"},
        "created_at": "2026-11-26T11:00:00.000000Z",
        "updated_at": "2026-11-26T11:00:05.000000Z",
        "groups": [
            {
                "name": "db",
                "count": 1,
                "after": [],
                "spread": None,
                "instances": [{"id": DB1, "name": "shop-db-1", "state": db}],
            },
            {
                "name": "web",
                "count": len(web),
                "after": ["db"],
                "spread": "accounts",
                "instances": [
                    {"id": i, "name": f"shop-web-{n}", "state": s}
                    for n, (i, s) in enumerate(zip(web_ids, web, strict=True), 1)
                ],
            },
        ],
    } | fields


class Gateway:
    """Answers ``METHOD /path`` with the JSON given (or the response itself; a list: the next of
    them each time, the last one again once they are used up), keeps every request, and streams
    ``events`` on GET /v1/events, then holds the stream open."""

    def __init__(self, answers: dict[str, Any], events: list[dict[str, Any]] | None = None) -> None:
        self.answers = {k: copy.deepcopy(v) for k, v in answers.items()}
        self.events = list(events or [])
        self.got: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        asked = f"{request.method} {request.url.path}"
        self.got.append(request)
        if asked == "GET /v1/events":
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=self._stream()
            )
        answer = self.answers[asked]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(202 if request.method != "GET" else 200, json=answer)

    async def _stream(self) -> AsyncIterator[bytes]:
        events, self.events = self.events, []
        for number, envelope in enumerate(events, 1):
            frame = f"id: {number}\nevent: {envelope['topic']}\ndata: {json.dumps(envelope)}\n\n"
            yield frame.encode()
        await asyncio.Event().wait()  # open until the watch is over
        yield b""

    def requests(self, asked: str) -> list[httpx.Request]:
        return [r for r in self.got if f"{r.method} {r.url.path}" == asked]


def event(topic: str, subject: str, **data: Any) -> dict[str, Any]:
    return {"topic": topic, "subject": subject, "time": "2026-11-26T11:00:06Z", "data": data}


@pytest.fixture
def run(boreas: Run, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``boreas`` whose watches (on their own async client) talk to the same gateway."""

    def with_watch(gateway: Gateway, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(
            deployment_watch,
            "client",
            lambda settings: httpx.AsyncClient(
                base_url=settings.url, transport=httpx.MockTransport(gateway)
            ),
        )
        return boreas(gateway, *args)

    return with_watch


# -- create ---------------------------------------------------------------------------------------


def test_a_yaml_template_is_sent_as_yaml_named_after_its_file_with_its_parameters(
    run: Run, tmp_path: Path
) -> None:
    file = tmp_path / "shop.yaml"
    file.write_text(TEMPLATE_YAML)
    gateway = Gateway(
        {"POST /v1/deployments": deployment("requested", "requested", ("requested",) * 2)}
    )
    exit_code, out, err = run(
        gateway, "deployments", "create", "-f", str(file), "--param", "version=16"
    )
    assert (exit_code, err) == (0, "")
    (sent,) = gateway.requests("POST /v1/deployments")
    assert sent.headers["content-type"] == "application/yaml"
    body = yaml.safe_load(sent.content)
    assert body == {
        "name": "shop",
        "template": yaml.safe_load(TEMPLATE_YAML),
        "parameters": {"version": "16"},
    }
    lines = [line.split() for line in out.splitlines()]
    assert ["state", "requested"] in lines
    assert ["db", "1", "-", "-", "shop-db-1", "requested", DB1] in lines
    assert ["web", "2", "db", "accounts", "shop-web-1", "requested", WEB1] in lines
    assert ["shop-web-2", "requested", WEB2] in lines  # the group's cells only on its first


def test_a_json_template_is_sent_as_json_and_the_name_given_wins(run: Run, tmp_path: Path) -> None:
    file = tmp_path / "template.json"
    file.write_text(json.dumps(yaml.safe_load(TEMPLATE_YAML)))
    gateway = Gateway({"POST /v1/deployments": deployment("requested")})
    exit_code, out, _ = run(
        gateway,
        *f"deployments create -f {file} --name shop -p version=16".split(),
        *"--idempotency-key k1 -o json".split(),
    )
    assert exit_code == 0
    (sent,) = gateway.requests("POST /v1/deployments")
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["idempotency-key"] == "k1"
    assert json.loads(sent.content)["name"] == "shop"
    assert json.loads(out)["id"] == ID


def test_yaml_anchors_are_written_out_for_the_gateway_which_refuses_aliases(
    run: Run, tmp_path: Path
) -> None:
    file = tmp_path / "two.yaml"
    file.write_text(
        "groups:\n"
        "  - {name: a, count: 1, image: x, cpus: 1, memory_mb: 64, placement: &p {region: north}}\n"
        "  - {name: b, count: 1, image: x, cpus: 1, memory_mb: 64, placement: *p}\n"
    )
    gateway = Gateway({"POST /v1/deployments": deployment("requested")})
    assert run(gateway, "deployments", "create", "-f", str(file))[0] == 0
    sent = gateway.requests("POST /v1/deployments")[0].content.decode()
    assert "&" not in sent and "*" not in sent
    groups = yaml.safe_load(sent)["template"]["groups"]
    assert [g["placement"] for g in groups] == [{"region": "north"}] * 2


def test_a_template_on_stdin_needs_a_name_and_a_whole_request_has_one(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway({"POST /v1/deployments": deployment("requested")})
    monkeypatch.setattr(sys, "stdin", io.StringIO(TEMPLATE_YAML))
    exit_code, out, err = run(gateway, "deployments", "create", "-f", "-", "-p", "version=16")
    assert (exit_code, out, gateway.got) == (2, "", [])
    assert err.startswith("boreas: --name: a deployment needs a name (stdin gives none)")

    whole = {
        "name": "shop",
        "template": yaml.safe_load(TEMPLATE_YAML),
        "parameters": {"version": "15", "x": "1"},
    }
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(whole)))
    exit_code, _, _ = run(gateway, "deployments", "create", "-f", "-", "-p", "version=16")
    assert exit_code == 0
    sent = json.loads(gateway.requests("POST /v1/deployments")[0].content)
    assert sent["name"] == "shop"
    assert sent["parameters"] == {"version": "16", "x": "1"}


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("groups: [unclosed", "is neither JSON nor YAML"),
        ("- just\n- a list\n", "must hold a template: an object with `groups`"),
    ],
)
def test_a_file_that_is_no_template_is_a_usage_error(
    run: Run, tmp_path: Path, content: str, said: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(content)
    gateway = Gateway({})
    exit_code, out, err = run(gateway, "deployments", "create", "-f", str(file))
    assert (exit_code, out, gateway.got) == (2, "", [])
    assert said in err


def test_a_parameter_that_is_not_name_equals_value_is_a_usage_error(
    run: Run, tmp_path: Path
) -> None:
    file = tmp_path / "shop.yaml"
    file.write_text(TEMPLATE_YAML)
    gateway = Gateway({})
    exit_code, _, err = run(gateway, "deployments", "create", "-f", str(file), "-p", "16")
    assert (exit_code, gateway.got) == (2, [])
    assert err.startswith("boreas: --param: NAME=VALUE")


def test_a_refused_template_prints_every_problem_at_its_pointer(run: Run, tmp_path: Path) -> None:
    file = tmp_path / "shop.yaml"
    file.write_text(TEMPLATE_YAML)
    errors = [
        {"pointer": "/template/groups/1/after/0", "message": "no group named 'dbs'"},
        {"pointer": "/parameters/version", "message": "not used by the template"},
    ]
    refused = httpx.Response(
        422,
        json={
            "type": "about:blank",
            "title": "Invalid request",
            "status": 422,
            "detail": "/template/groups/1/after/0: no group named 'dbs'",
            "errors": errors,
        },
        headers={"content-type": "application/problem+json"},
    )
    exit_code, out, err = run(
        Gateway({"POST /v1/deployments": refused}), "deployments", "create", "-f", str(file)
    )
    assert (exit_code, out) == (1, "")
    assert err.splitlines() == [
        "boreas: Invalid request:",
        "  /template/groups/1/after/0: no group named 'dbs'",
        "  /parameters/version: not used by the template",
    ]


def test_one_problem_reads_as_the_detail_and_is_pointed_at_when_the_detail_does_not() -> None:
    one = {"pointer": "/template/groups/0/spread", "message": "only 1 account fits"}
    named = {"title": "Invalid request", "detail": "/template/groups/0/spread: only 1 account fits"}
    assert problem_message(422, named | {"errors": [one]}, "") == (
        "Invalid request: /template/groups/0/spread: only 1 account fits"
    )
    vague = {"title": "Invalid request", "detail": "The template cannot be used."}
    assert problem_message(422, vague | {"errors": [one]}, "").splitlines() == [
        "Invalid request: The template cannot be used.",
        "  /template/groups/0/spread: only 1 account fits",
    ]


def test_create_wait_watches_it_to_running(run: Run, tmp_path: Path) -> None:
    file = tmp_path / "shop.yaml"
    file.write_text(TEMPLATE_YAML)
    steps = [
        deployment("requested", "requested", ("requested", "requested")),
        deployment("creating", "running", ("requested", "requested")),
        deployment("running", "running", ("running", "running")),
    ]
    gateway = Gateway(
        {"POST /v1/deployments": steps[0], f"GET /v1/deployments/{ID}": steps},
        events=[
            event("deployment.state_changed", ID, old_state="requested", new_state="creating"),
            event("instance.state_changed", "0dd00000-0000-4000-8000-00000000000f"),  # not its
            event("deployment.state_changed", ID, old_state="creating", new_state="running"),
        ],
    )
    exit_code, out, err = run(
        gateway, "deployments", "create", "-f", str(file), "-p", "version=16", "--wait"
    )
    assert (exit_code, err) == (0, "")
    changes = [line.split("  ", 1)[1] for line in out.splitlines()]
    assert changes == [
        f"shop  {ID}  requested",
        "shop-db-1  db  requested",
        "shop-web-1  web  requested",
        "shop-web-2  web  requested",
        "shop-db-1  db  requested → running",  # what moved it, then the deployment
        f"shop  {ID}  requested → creating",
        "shop-web-1  web  requested → running",
        "shop-web-2  web  requested → running",
        f"shop  {ID}  creating → running",
    ]
    assert len(gateway.requests(f"GET /v1/deployments/{ID}")) == 3  # the other's event: none


# -- list, show -----------------------------------------------------------------------------------


def test_list_follows_every_page_as_a_table_or_json(run: Run) -> None:
    other = deployment("creating", "running", ("requested",)) | {
        "id": "d0000000-0000-4000-8000-000000000002",
        "name": "farm",
    }

    def pages(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") == "next":
            return httpx.Response(200, json={"items": [other], "next_cursor": None})
        return httpx.Response(200, json={"items": [deployment()], "next_cursor": "next"})

    exit_code, out, _ = run(pages, "deployments", "list")
    assert exit_code == 0
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["ID", "NAME", "OWNER", "STATE", "GROUPS", "RUNNING", "CREATED"]
    assert [row[:7] for row in rows] == [
        [ID, "shop", "alice", "running", "db:1", "web:2", "3/3"],
        [other["id"], "farm", "alice", "creating", "db:1", "web:1", "1/2"],
    ]
    exit_code, out, _ = run(pages, "deployments", "list", "-o", "json", "--owner", "alice")
    assert [d["name"] for d in json.loads(out)] == ["shop", "farm"]
    exit_code, out, _ = run(pages, "deployments", "list", "-o", "json", "--limit", "1")
    assert [d["name"] for d in json.loads(out)] == ["shop"]  # the first page was enough


def test_show_finds_a_deployment_by_name_and_names_its_failed_instances(run: Run) -> None:
    degraded = deployment(
        "degraded",
        web=("running", "error"),
        on_failure="keep",
        reason="web: 1 of 2 instances failed",
        failed=[WEB2],
    )
    deleted = deployment("deleted") | {"id": "d0000000-0000-4000-8000-00000000000d"}
    gateway = Gateway(
        {
            "GET /v1/users/me": ME,
            "GET /v1/deployments": {"items": [deleted, degraded], "next_cursor": None},
            f"GET /v1/deployments/{ID}": degraded,
        }
    )
    exit_code, out, err = run(gateway, "deployments", "show", "shop")
    assert exit_code == 0
    assert gateway.requests("GET /v1/deployments")[0].url.params["owner"] == "alice"
    lines = [line.split(None, 1) for line in out.splitlines() if line]
    assert ["failed", "shop-web-2"] in lines
    assert ["reason", "web: 1 of 2 instances failed"] in lines
    assert ["parameters", '{"version":"16"}'] in lines
    assert ["shop-web-2", "error", WEB2] in [line.split() for line in out.splitlines()]
    assert err == "shop is degraded: web: 1 of 2 instances failed; failed: shop-web-2.\n"


def test_show_of_a_name_nobody_has_is_not_found(run: Run) -> None:
    gateway = Gateway(
        {"GET /v1/users/me": ME, "GET /v1/deployments": {"items": [], "next_cursor": None}}
    )
    exit_code, out, err = run(gateway, "deployments", "show", "nope")
    assert (exit_code, out) == (4, "")
    assert err == "boreas: You have no deployment named 'nope' (that is not deleted or rejected).\n"


def test_show_of_another_users_deployment_is_not_found(run: Run) -> None:
    gateway = Gateway({f"GET /v1/deployments/{ID}": problem(404, "Not Found", "No deployment.")})
    exit_code, _, err = run(gateway, "deployments", "show", ID)
    assert (exit_code, err) == (4, "boreas: Not Found: No deployment.\n")


# -- watch ----------------------------------------------------------------------------------------


def test_watch_as_json_prints_the_deployment_at_each_change_and_fails_when_rolled_back(
    run: Run,
) -> None:
    failed = deployment(
        "failed",
        "terminated",
        ("terminated", "error"),
        reason="web: shop-web-2 failed: no capacity",
        failed=[WEB2],
    )
    steps = [deployment("creating", "running", ("running", "requested")), failed]
    gateway = Gateway(
        {f"GET /v1/deployments/{ID}": steps},
        events=[event("instance.failed", WEB2, reason="no capacity")],
    )
    exit_code, out, err = run(gateway, "deployments", "watch", ID, "-o", "json")
    assert exit_code == 1
    assert [json.loads(line)["state"] for line in out.splitlines()] == ["creating", "failed"]
    assert err == (
        "boreas: shop is failed (web: shop-web-2 failed: no capacity; failed: shop-web-2)\n"
    )


def test_a_quiet_stream_does_not_stop_the_watch_it_reads_the_deployment_again(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployment_watch, "POLL_SECONDS", 0.01)
    steps = [deployment("creating", "running", ("running", "requested")), deployment()]
    gateway = Gateway({f"GET /v1/deployments/{ID}": steps})  # and no event at all
    exit_code, out, _ = run(gateway, "deployments", "watch", ID, "--timeout", "10")
    assert exit_code == 0
    assert out.splitlines()[-2].endswith("shop-web-2  web  requested → running")
    assert out.splitlines()[-1].endswith("creating → running")


def test_watch_gives_up_after_its_timeout(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment_watch, "POLL_SECONDS", 0.01)
    gateway = Gateway({f"GET /v1/deployments/{ID}": deployment("creating", "requested")})
    exit_code, _, err = run(gateway, "deployments", "watch", ID, "--timeout", "0.2")
    assert exit_code == 1
    assert err == f"boreas: Not settled after 0.2 s: {ID} is still creating.\n"


def test_a_deployment_is_settled_once_none_of_its_instances_is_changing() -> None:
    assert settled(deployment())
    assert not settled(deployment("creating"))
    assert not settled(deployment("running", web=("running", "running", "requested")))
    assert settled(deployment("degraded", web=("running", "error")))
    assert settled(deployment("failed", "terminating"))  # ended: nothing more to wait for
    assert settled(deployment("rejected", "rejected", ("rejected", "rejected")))
    assert not settled(deployment("deleting", "terminated", ("terminating", "terminated")))


def test_change_lines_name_why_a_deployment_went_wrong() -> None:
    before = deployment("creating", web=("running", "requested"))
    after = deployment("degraded", web=("running", "error"), reason="web: 1 failed", failed=[WEB2])
    lines = [line.split("  ", 1)[1] for line in change_lines(after, before)]
    assert lines == [
        "shop-web-2  web  requested → error",
        f"shop  {ID}  creating → degraded  (web: 1 failed; failed: shop-web-2)",
    ]


# -- scale, delete --------------------------------------------------------------------------------


def test_scale_posts_the_group_and_count(run: Run) -> None:
    gateway = Gateway({f"POST /v1/deployments/{ID}/scale": deployment(web=("running",) * 2)})
    exit_code, _, _ = run(gateway, "deployments", "scale", ID, "web", "3")
    assert exit_code == 0
    (sent,) = gateway.requests(f"POST /v1/deployments/{ID}/scale")
    assert json.loads(sent.content) == {"group": "web", "count": 3}


def test_scale_wait_watches_until_the_group_has_its_count_running(run: Run) -> None:
    up = deployment(web=("running", "running", "requested"))
    steps = [deployment(), up, deployment("creating", web=("running", "running", "pending")),
             deployment(web=("running",) * 3)]  # fmt: skip
    gateway = Gateway(
        {f"POST /v1/deployments/{ID}/scale": up, f"GET /v1/deployments/{ID}": steps},
        events=[event("instance.state_changed", WEB3), event("deployment.state_changed", ID)],
    )
    exit_code, out, err = run(gateway, "deployments", "scale", ID, "web", "3", "--wait")
    assert (exit_code, err) == (0, "")
    assert out.splitlines()[-2].endswith("shop-web-3  web  pending → running")
    assert out.splitlines()[-1].endswith("creating → running")


def test_scale_wait_down_waits_for_the_newest_to_end_even_while_all_run(run: Run) -> None:
    steps = [deployment(web=("running",) * 3)] * 3 + [
        deployment(web=("running", "running", "terminating")),
        deployment(web=("running", "running", "terminated")),
    ]
    gateway = Gateway(
        {f"POST /v1/deployments/{ID}/scale": steps[0], f"GET /v1/deployments/{ID}": steps},
        events=[event("instance.state_changed", WEB3)] * 3,
    )
    exit_code, out, _ = run(gateway, "deployments", "scale", ID, "web", "2", "--wait")
    assert exit_code == 0
    assert out.splitlines()[-1].endswith("shop-web-3  web  terminating → terminated")


def test_a_scale_up_quota_refuses_ends_the_wait_with_the_refused_instance(run: Run) -> None:
    up = deployment(web=("running", "running", "requested"))
    steps = [deployment(), up, deployment(web=("running", "running", "rejected"))]
    gateway = Gateway(
        {f"POST /v1/deployments/{ID}/scale": up, f"GET /v1/deployments/{ID}": steps},
        events=[event("instance.state_changed", WEB3)],
    )
    exit_code, _, err = run(gateway, "deployments", "scale", ID, "web", "3", "--wait")
    assert exit_code == 1
    assert err == (
        f"boreas: web has 2 instances, not 3: shop-web-3 rejected "
        f"(boreas deployments show {ID} says why).\n"
    )


def test_scaled_is_done_when_the_count_is_live_and_settled_or_cannot_be() -> None:
    known = {DB1, WEB1, WEB2}
    done = scaled("web", 3, known)
    assert not done(deployment(web=("running", "running", "requested")))
    assert done(deployment(web=("running", "running", "running")))
    assert done(deployment(web=("running", "running", "error")))  # an added one went wrong
    assert done(deployment("deleted", "terminated", ("terminated",) * 2))


def test_scaling_a_deployment_being_deleted_is_a_conflict(run: Run) -> None:
    refused = problem(409, "Conflict", "A deployment that is deleting cannot be scaled.")
    gateway = Gateway({f"POST /v1/deployments/{ID}/scale": refused})
    exit_code, _, err = run(gateway, "deployments", "scale", ID, "web", "3")
    assert (exit_code, err) == (
        5,
        "boreas: Conflict: A deployment that is deleting cannot be scaled.\n",
    )


def test_scale_to_zero_is_a_usage_error(run: Run) -> None:
    gateway = Gateway({})
    assert run(gateway, "deployments", "scale", ID, "web", "0")[0] == 2
    assert gateway.got == []


def test_delete_wait_watches_it_to_deleted_whatever_state_it_was_in(run: Run) -> None:
    steps = [
        deployment(),  # the scheduler has not said deleting yet
        deployment("deleting", "running", ("terminating", "terminating")),
        deployment("deleted", "terminated", ("terminated", "terminated")),
    ]
    gateway = Gateway(
        {f"DELETE /v1/deployments/{ID}": steps[0], f"GET /v1/deployments/{ID}": steps},
        events=[event("deployment.state_changed", ID)] * 2,
    )
    exit_code, out, err = run(gateway, "deployments", "delete", ID, "--wait")
    assert (exit_code, err) == (0, "")
    assert f"shop  {ID}  deleting → deleted" in out
    assert len(gateway.requests(f"DELETE /v1/deployments/{ID}")) == 1


def test_delete_by_name_prints_the_deployment_as_it_now_is(run: Run) -> None:
    deleting = deployment("deleting", "running", ("terminating", "terminating"))
    gateway = Gateway(
        {
            "GET /v1/users/me": ME,
            "GET /v1/deployments": {"items": [deployment()], "next_cursor": None},
            f"DELETE /v1/deployments/{ID}": deleting,
        }
    )
    exit_code, out, _ = run(gateway, "deployments", "delete", "shop", "-o", "json")
    assert exit_code == 0
    assert json.loads(out)["state"] == "deleting"
