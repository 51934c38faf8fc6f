"""The boreas command's governance commands run in process against an httpx.MockTransport, as in
test_cli_commands: leases on launches and their extension, approving and denying held launches,
lease policies, approval rules, cost budgets in quotas and cost in the usage report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.unit import test_cli_commands
from tests.unit.test_cli_commands import INSTANCE, problem

boreas = test_cli_commands.boreas  # the fixture: ``boreas(handler, *args)``
Run = Callable[..., tuple[int, str, str]]
ID = INSTANCE["id"]
LEASED = INSTANCE | {
    "expires_at": "2026-11-25T09:32:21.026020Z",
    "price_per_hour": 0.04,
    "approval_deadline": None,
}


class Gateway:
    """Answers each ``METHOD /path`` with the JSON given for it (or the response itself), and
    keeps every request it got with its JSON body."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.got: list[tuple[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        asked = f"{request.method} {request.url.path}"
        self.got.append((asked, json.loads(request.content) if request.content else None))
        answer = self.answers[asked]
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def sent(self, asked: str) -> list[Any]:
        return [body for what, body in self.got if what == asked]


# -- leases ---------------------------------------------------------------------------------------


def test_launch_asks_for_a_lease_in_seconds(boreas: Run) -> None:
    gateway = Gateway({"POST /v1/instances": LEASED | {"state": "requested"}})
    exit_code, out, _ = boreas(
        gateway,
        "instances",
        "launch",
        "web-1",
        "--image",
        "debian-12",
        "--lease",
        "2h",
        "-o",
        "json",
    )
    assert exit_code == 0
    assert gateway.sent("POST /v1/instances")[0]["lease_seconds"] == 7200
    assert json.loads(out)["expires_at"] == LEASED["expires_at"]


def test_launch_without_a_lease_leaves_it_to_the_policy(boreas: Run) -> None:
    gateway = Gateway({"POST /v1/instances": INSTANCE | {"state": "requested"}})
    exit_code, _, _ = boreas(gateway, "instances", "launch", "web-1", "--image", "debian-12")
    assert exit_code == 0
    assert "lease_seconds" not in gateway.sent("POST /v1/instances")[0]


def test_a_lease_that_is_no_duration_is_a_usage_error_and_nothing_is_sent(boreas: Run) -> None:
    gateway = Gateway({})
    exit_code, out, err = boreas(
        gateway, "instances", "launch", "web-1", "--image", "debian-12", "--lease", "2 weeks"
    )
    assert (exit_code, out, gateway.got) == (2, "", [])
    assert err.startswith("boreas: --lease: a duration such as 90s, 30m, 2h, 1d")


def test_a_lease_over_the_policy_max_reads_as_the_gateway_says(boreas: Run) -> None:
    refused = problem(422, "Unprocessable Entity", "lease_seconds 86400 is over your max, 7200.")
    exit_code, _, err = boreas(
        Gateway({"POST /v1/instances": refused}),
        *"instances launch web-1 --image debian-12 --lease 1d".split(),
    )
    assert exit_code == 1
    assert err == "boreas: Unprocessable Entity: lease_seconds 86400 is over your max, 7200.\n"


def test_extend_posts_the_seconds_and_says_when_the_lease_ends(boreas: Run) -> None:
    gateway = Gateway({f"POST /v1/instances/{ID}/extend": LEASED})
    exit_code, out, err = boreas(gateway, "instances", "extend", ID, "--by", "1h30m")
    assert exit_code == 0
    assert gateway.sent(f"POST /v1/instances/{ID}/extend") == [{"seconds": 5400}]
    assert ["expires_at", LEASED["expires_at"]] in [line.split() for line in out.splitlines()]
    assert err == "The lease of web-1 ends at 2026-11-25 09:32:21Z (extended by 1h30m).\n"


def test_extending_an_instance_without_a_lease_is_a_conflict(boreas: Run) -> None:
    refused = problem(409, "Conflict", "web-1 has no lease to extend.")
    exit_code, out, err = boreas(
        Gateway({f"POST /v1/instances/{ID}/extend": refused}),
        "instances",
        "extend",
        ID,
        "--by",
        "1h",
    )
    assert (exit_code, out, err) == (5, "", "boreas: Conflict: web-1 has no lease to extend.\n")


def test_the_list_shows_the_lease_end_and_price_when_there_are_some(boreas: Run) -> None:
    page = {"items": [LEASED, INSTANCE | {"name": "web-2"}], "next_cursor": None}
    exit_code, out, _ = boreas(Gateway({"GET /v1/instances": page}), "instances", "list")
    assert exit_code == 0
    header, first, second = out.splitlines()
    assert header.split()[-3:] == ["CREATED", "EXPIRES", "PRICE/H"]
    assert first.split()[-5:] == ["2026-11-25", "07:32:21Z", "2026-11-25", "09:32:21Z", "0.04"]
    assert second.split()[-4:] == ["2026-11-25", "07:32:21Z", "-", "-"]


def test_the_list_has_no_lease_or_price_columns_when_no_instance_has_either(boreas: Run) -> None:
    page = {"items": [INSTANCE | {"expires_at": None, "price_per_hour": None}], "next_cursor": None}
    exit_code, out, _ = boreas(Gateway({"GET /v1/instances": page}), "instances", "list")
    assert exit_code == 0
    assert out.splitlines()[0].split()[-1] == "CREATED"


# -- approvals ------------------------------------------------------------------------------------

HELD = LEASED | {
    "state": "awaiting_approval",
    "approval_deadline": "2026-11-26T07:32:21Z",
    "price_per_hour": None,
}


def test_a_held_launch_says_what_it_waits_for(boreas: Run) -> None:
    exit_code, out, err = boreas(
        Gateway({f"GET /v1/instances/{ID}": HELD}), "instances", "show", ID
    )
    assert exit_code == 0
    assert ["state", "awaiting_approval"] in [line.split() for line in out.splitlines()]
    assert err == (
        "web-1 awaits an admin's approval, denied if unanswered by 2026-11-26 07:32:21Z: "
        f"boreas instances approve|deny {ID}.\n"
    )


def test_approve_sends_the_comment_and_prints_the_instance(boreas: Run) -> None:
    gateway = Gateway({f"POST /v1/instances/{ID}/approve": INSTANCE | {"state": "requested"}})
    exit_code, out, err = boreas(
        gateway, "instances", "approve", ID, "--comment", "ticket OPS-7", "-o", "json"
    )
    assert (exit_code, err) == (0, "")
    assert gateway.sent(f"POST /v1/instances/{ID}/approve") == [{"comment": "ticket OPS-7"}]
    assert [i["state"] for i in json.loads(out)] == ["requested"]


def test_deny_without_a_comment_sends_none_and_says_the_launch_will_not_run(boreas: Run) -> None:
    denied = INSTANCE | {"state": "denied", "reason": "denied by admin"}
    gateway = Gateway({f"POST /v1/instances/{ID}/deny": denied})
    exit_code, out, err = boreas(gateway, "instances", "deny", ID)
    assert exit_code == 0
    assert gateway.sent(f"POST /v1/instances/{ID}/deny") == [{}]
    assert out.splitlines()[1].split()[:4] == [ID, "web-1", "alice", "denied"]
    assert err == "web-1 was denied and will not run: denied by admin.\n"


def test_answering_what_no_longer_awaits_approval_is_a_conflict(boreas: Run) -> None:
    refused = problem(409, "Conflict", "web-1 is running, not awaiting approval.")
    exit_code, out, err = boreas(
        Gateway({f"POST /v1/instances/{ID}/approve": refused}), "instances", "approve", ID
    )
    assert (exit_code, out) == (5, "")
    assert err == "boreas: Conflict: web-1 is running, not awaiting approval.\n"


def test_only_admins_answer(boreas: Run) -> None:
    refused = problem(403, "Forbidden", "Only admins may do this.")
    exit_code, _, _ = boreas(
        Gateway({f"POST /v1/instances/{ID}/deny": refused}), "instances", "deny", ID
    )
    assert exit_code == 4


# -- lease policies -------------------------------------------------------------------------------

POLICY = {"default_seconds": 3600, "max_seconds": None, "on_expiry": "stop", "warn_seconds": 300}


def test_lease_policy_set_keeps_what_is_not_given(boreas: Run) -> None:
    changed = {**POLICY, "default_seconds": 28800, "max_seconds": 604800, "warn_seconds": 600}
    gateway = Gateway(
        {"GET /v1/lease-policies/alice": POLICY, "PUT /v1/lease-policies/alice": changed}
    )
    exit_code, out, _ = boreas(
        gateway, *"lease-policies set alice --default 8h --max 7d --warn 10m".split()
    )
    assert exit_code == 0
    assert gateway.sent("PUT /v1/lease-policies/alice") == [changed]
    assert [line.split() for line in out.splitlines()] == [
        ["FIELD", "VALUE"],
        ["username", "alice"],
        ["default", "8h"],
        ["max", "7d"],
        ["on_expiry", "stop"],
        ["warn", "10m"],
    ]


def test_lease_policy_none_lifts_the_default_and_the_max(boreas: Run) -> None:
    set_to = {**POLICY, "default_seconds": None, "on_expiry": "terminate", "warn_seconds": 0}
    gateway = Gateway(
        {"GET /v1/lease-policies/alice": POLICY, "PUT /v1/lease-policies/alice": set_to}
    )
    exit_code, out, _ = boreas(
        gateway,
        *"lease-policies set alice --default none --max none".split(),
        *"--on-expiry terminate --warn 0 -o json".split(),
    )
    assert exit_code == 0
    assert gateway.sent("PUT /v1/lease-policies/alice") == [set_to]
    assert json.loads(out) == {"username": "alice", **set_to}


def test_a_bad_on_expiry_or_duration_sends_nothing(boreas: Run) -> None:
    gateway = Gateway({"GET /v1/lease-policies/alice": POLICY})
    assert boreas(gateway, *"lease-policies set alice --on-expiry explode".split())[0] == 2
    exit_code, _, err = boreas(gateway, *"lease-policies set alice --max 0".split())
    assert exit_code == 2 and "--max: a duration longer than 0 s" in err
    assert gateway.sent("PUT /v1/lease-policies/alice") == []


def test_a_policy_for_nobody_is_not_found(boreas: Run) -> None:
    missing = problem(404, "Not Found", "There is no user named 'nobody'.")
    gateway = Gateway(
        {"GET /v1/lease-policies/nobody": missing, "PUT /v1/lease-policies/nobody": missing}
    )
    exit_code, _, err = boreas(gateway, *"lease-policies set nobody --max 1d".split())
    assert (exit_code, err) == (4, "boreas: Not Found: There is no user named 'nobody'.\n")
    assert gateway.sent("PUT /v1/lease-policies/nobody")[0]["max_seconds"] == 86400


def test_lease_policy_show_defaults_to_yours(boreas: Run) -> None:
    gateway = Gateway(
        {
            "GET /v1/users/me": {"id": "u", "username": "alice", "role": "user"},
            "GET /v1/lease-policies/alice": POLICY,
        }
    )
    exit_code, out, _ = boreas(gateway, "lease-policies", "show")
    assert exit_code == 0
    rows = [line.split() for line in out.splitlines()]
    assert ["default", "1h"] in rows and ["max", "unlimited"] in rows and ["warn", "5m"] in rows


# -- approval rules -------------------------------------------------------------------------------

RULES = [
    {"name": "big", "when": {"cpus_over": 8, "memory_mb_over": 16384}},
    {"name": "pricey", "when": {"cost_per_hour_over": 0.5}},
    {"name": "prod", "when": {"accounts": ["prod-aws"], "owners": ["bob", "carol"]}},
]


def test_approval_rules_come_from_a_yaml_file(boreas: Run, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: big\n"
        "    when: {cpus_over: 8, memory_mb_over: 16384}\n"
        "  - name: pricey\n"
        "    when:\n"
        "      cost_per_hour_over: 0.5\n"
        "  - name: prod\n"
        "    when: {accounts: [prod-aws], owners: [bob, carol]}\n"
    )
    gateway = Gateway({"PUT /v1/approval-rules": {"rules": RULES}})
    exit_code, out, err = boreas(gateway, "approval-rules", "set", "-f", str(rules))
    assert exit_code == 0
    assert gateway.sent("PUT /v1/approval-rules") == [{"rules": RULES}]
    assert out.splitlines() == [
        "NAME    HOLDS A LAUNCH IF",
        "big     cpus > 8 and memory_mb > 16384",
        "pricey  price/h > 0.50 (or unknown)",
        "prod    account in prod-aws and owner in bob, carol",
    ]
    assert err == "A launch matching any rule awaits an admin's approval.\n"


def test_approval_rules_as_a_json_list(boreas: Run, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES[:1]))
    gateway = Gateway({"PUT /v1/approval-rules": {"rules": RULES[:1]}})
    exit_code, out, _ = boreas(gateway, "approval-rules", "set", "--file", str(rules), "-o", "json")
    assert exit_code == 0
    assert gateway.sent("PUT /v1/approval-rules") == [{"rules": RULES[:1]}]
    assert json.loads(out) == {"rules": RULES[:1]}


def test_approval_rules_that_are_not_a_list_send_nothing(boreas: Run, tmp_path: Path) -> None:
    gateway = Gateway({})
    rules = tmp_path / "rules.yaml"
    for text, said in (
        ("name: big\n", "must hold a list of rules"),
        ("rules: [unclosed\n", "is neither JSON nor YAML"),
    ):
        rules.write_text(text)
        exit_code, _, err = boreas(gateway, "approval-rules", "set", "-f", str(rules))
        assert exit_code == 2 and said in err, err
    exit_code, _, err = boreas(gateway, "approval-rules", "set", "-f", str(tmp_path / "none"))
    assert exit_code == 2 and err.startswith("boreas: Cannot read ")
    assert gateway.got == []


def test_a_rule_the_gateway_refuses_reads_as_its_field_errors(boreas: Run, tmp_path: Path) -> None:
    body = {
        "title": "Invalid request",
        "status": 422,
        "errors": [
            {"loc": ["body", "rules", 0, "when", "cpus_over"], "msg": "not an integer"},
            {"loc": ["body", "rules", 1, "name"], "msg": "missing"},
        ],
    }
    rules = tmp_path / "rules.json"
    rules.write_text('[{"name": "x", "when": {"cpus_over": "many"}}, {"when": {}}]')
    gateway = Gateway({"PUT /v1/approval-rules": httpx.Response(422, json=body)})
    exit_code, _, err = boreas(gateway, "approval-rules", "set", "-f", str(rules))
    assert exit_code == 1
    assert err.splitlines()[1:] == [
        "  body.rules.0.when.cpus_over: not an integer",
        "  body.rules.1.name: missing",
    ]


def test_rules_read_back_with_nulls_show_only_their_conditions(boreas: Run) -> None:
    nulls = {"cpus_over": None, "memory_mb_over": None, "cost_per_hour_over": None}
    rules = [{"name": "prod", "when": {**nulls, "accounts": None, "owners": ["bob"]}}]
    exit_code, out, _ = boreas(
        Gateway({"GET /v1/approval-rules": {"rules": rules}}), "approval-rules", "show"
    )
    assert exit_code == 0
    assert out.splitlines()[1] == "prod  owner in bob"


def test_no_approval_rules_says_so(boreas: Run) -> None:
    exit_code, out, err = boreas(
        Gateway({"GET /v1/approval-rules": {"rules": []}}), "approval-rules", "show"
    )
    assert (exit_code, out.split()) == (0, ["NAME", "HOLDS", "A", "LAUNCH", "IF"])
    assert err == "No approval rules: no launch awaits approval.\n"


# -- budgets and cost -----------------------------------------------------------------------------

QUOTA = {
    "limits": {"instances": 10, "cpus": 20, "memory_mb": 40960, "cost_per_month": 50.0},
    "usage": {"instances": 1, "cpus": 2, "memory_mb": 2048, "cost_this_month": 12.5},
}


def test_quotas_set_a_budget_beside_the_other_limits(boreas: Run) -> None:
    changed = {**QUOTA, "limits": {**QUOTA["limits"], "cost_per_month": 99.5}}
    gateway = Gateway({"GET /v1/quotas/alice": QUOTA, "PUT /v1/quotas/alice": changed})
    exit_code, out, _ = boreas(gateway, "quotas", "set", "alice", "--cost-per-month", "99.50")
    assert exit_code == 0
    assert gateway.sent("PUT /v1/quotas/alice") == [changed["limits"]]
    assert [line.split() for line in out.splitlines()] == [
        ["RESOURCE", "LIMIT", "IN", "USE"],
        ["instances", "10", "1"],
        ["cpus", "20", "2"],
        ["memory_mb", "40960", "2048"],
        ["cost_per_month", "99.50", "12.50"],
    ]


def test_quotas_set_keeps_the_budget_when_it_is_not_given(boreas: Run) -> None:
    gateway = Gateway({"GET /v1/quotas/alice": QUOTA, "PUT /v1/quotas/alice": QUOTA})
    exit_code, _, _ = boreas(gateway, "quotas", "set", "alice", "--cpus", "4")
    assert exit_code == 0
    assert gateway.sent("PUT /v1/quotas/alice")[0]["cost_per_month"] == 50.0
    exit_code, _, _ = boreas(gateway, "quotas", "set", "alice", "--cost-per-month", "unlimited")
    assert exit_code == 0
    assert gateway.sent("PUT /v1/quotas/alice")[1]["cost_per_month"] is None


def test_a_budget_that_is_no_number_is_a_usage_error(boreas: Run) -> None:
    gateway = Gateway({"GET /v1/quotas/alice": QUOTA})
    for bad in ("lots", "inf", "nan"):
        exit_code, _, err = boreas(gateway, "quotas", "set", "alice", "--cost-per-month", bad)
        assert exit_code == 2 and "--cost-per-month: a number, or 'unlimited'" in err
    assert gateway.sent("PUT /v1/quotas/alice") == []


def test_a_launch_over_budget_reads_as_the_reason(boreas: Run) -> None:
    reason = (
        "cost_per_month budget 10.00 would be passed: 9.60 spent or committed this month, "
        "this launch would add 0.96 (0.04/h until 2026-12-01 00:00 UTC)"
    )
    rejected = INSTANCE | {"state": "rejected", "reason": reason}
    exit_code, out, _ = boreas(
        Gateway({f"GET /v1/instances/{ID}": rejected}), "instances", "show", ID
    )
    assert exit_code == 0
    assert ["reason", *reason.split()] in [line.split() for line in out.splitlines()]


REPORT = {
    "from": "2026-11-01T00:00:00Z",
    "to": "2026-11-25T00:00:00Z",
    "owners": [
        {
            "owner": "alice",
            "instance_hours": 10.0,
            "cpu_hours": 20.0,
            "memory_mb_hours": 20480.0,
            "cost": 0.4,
            "accounts": [
                {
                    "account_id": "acc-1",
                    "instance_hours": 10.0,
                    "cpu_hours": 20.0,
                    "memory_mb_hours": 20480.0,
                    "cost": 0.4,
                }
            ],
        }
    ],
}


def _usage_gateway() -> Gateway:
    accounts = {"items": [{"id": "acc-1", "name": "team-sim"}], "next_cursor": None}
    return Gateway({"GET /v1/usage": REPORT, "GET /v1/provider-accounts": accounts})


def test_usage_shows_the_cost_per_owner_and_account(boreas: Run) -> None:
    exit_code, out, _ = boreas(_usage_gateway(), "usage")
    assert exit_code == 0
    header, row = out.splitlines()
    assert header.split()[-1] == "COST"
    assert row.split() == ["alice", "team-sim", "10", "20", "20480", "0.40"]


def test_usage_as_csv_has_the_cost(boreas: Run) -> None:
    exit_code, out, _ = boreas(_usage_gateway(), "usage", "--csv")
    assert exit_code == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert list(row)[-1] == "cost"
    assert (row["account"], row["cost"]) == ("team-sim", "0.4")
