"""The deploy files are valid and say what the code expects, checked offline.

- deploy/compose.yaml against the Compose Specification's JSON Schema (the copy vendored in
  check-jsonschema);
- deploy/k8s's overlays as `kubectl kustomize` renders them, against the Kubernetes OpenAPI
  schemas vendored in kubernetes-validate, strictly (unknown fields are errors), and against
  what Boreas needs of them: probes, resources, hardening, labels, one Deployment per service;
- deploy/Dockerfile: several stages, a numeric non-root user (the one Kubernetes runs as), and
  a build context (Dockerfile.dockerignore) that holds what it copies;
- every BOREAS_ variable those files set is a setting the code reads.

Each validator is also shown a broken copy, which it must reject.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from shared import config
from shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
WORKERS = tuple(s for s in SERVICES if s != "gateway")
# Where the workers' probe listener serves: BOREAS_PROBE_PORT's default (compose leaves it so).
PROBE_PORT = config.ServiceSettings.model_fields["probe_port"].default
LIVENESS_PATH, READINESS_PATH = "/healthz", "/readyz"
RECOMMENDED_LABELS = {
    f"app.kubernetes.io/{name}"
    for name in ("name", "instance", "component", "part-of", "version", "managed-by")
}


# --- compose -----------------------------------------------------------------------------------


def compose_schema_errors(path: Path) -> str:
    """What check-jsonschema finds wrong with ``path`` (empty when it is valid)."""
    schema = ["--builtin-schema", "vendor.compose-spec"]
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *schema, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if checked.returncode == 0:
        return ""
    return checked.stdout + checked.stderr or f"exit status {checked.returncode}"


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    errors = compose_schema_errors(COMPOSE)
    assert not errors, errors


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda gateway: gateway.update(restart_policy="always"), "restart_policy"),
        (
            lambda gateway: gateway.update(ports="127.0.0.1:8080:8080"),
            "$.services.gateway.ports: '127.0.0.1:8080:8080' is not of type 'array'",
        ),
    ],
    ids=["unknown-service-key", "wrong-type"],
)
def test_compose_validation_rejects_a_broken_copy(
    tmp_path: Path, breakage: Any, expected: str
) -> None:
    broken = load_compose()
    breakage(broken["services"]["gateway"])
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    errors = compose_schema_errors(path)
    assert expected in errors, errors or "the broken copy passed"


def test_compose_runs_every_service_and_the_simulator_with_health_checks() -> None:
    services = load_compose()["services"]
    for name in (*SERVICES, "simulator", "rabbitmq", "postgres"):
        assert "healthcheck" in services[name], f"compose service {name} has no healthcheck"
    for name in (*SERVICES, "simulator"):
        waits_for = services[name]["depends_on"]
        assert waits_for["postgres"] == {"condition": "service_healthy"}, name
    for name in WORKERS:
        assert services[name]["deploy"]["replicas"] >= 2, f"{name} should show it scales"
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{PROBE_PORT}{READINESS_PATH}" in check, name


# --- Kubernetes --------------------------------------------------------------------------------


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl (1.27 or newer, for its built-in kustomize v5) is needed to render "
            "deploy/k8s: install it from the Kubernetes package repository or your "
            "distribution (Debian's kubernetes-client 1.20 is too old for these kustomizations)",
            pytrace=False,
        )
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, f"kubectl kustomize {directory}: {rendered.stderr}"
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def schema_errors(objects: Iterable[dict[str, Any]]) -> list[str]:
    errors = []
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                errors.append(f"{obj['kind']}/{obj['metadata']['name']} {where}: {exc.message}")
    return errors


def test_overlay_matches_the_kubernetes_schemas(overlay: tuple[str, list[dict]]) -> None:
    _name, objects = overlay
    errors = schema_errors(objects)
    assert not errors, "\n".join(errors)


def test_kubernetes_validation_rejects_a_broken_copy(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "k8s")
    manifest = tmp_path / "k8s" / "base" / "scheduler.yaml"
    text = manifest.read_text()
    assert "terminationGracePeriodSeconds: 30" in text
    manifest.write_text(
        text.replace("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: thirty")
    )
    errors = schema_errors(render(tmp_path / "k8s" / "overlays" / "prod"))
    assert any(
        "Deployment/boreas-scheduler" in e and "terminationGracePeriodSeconds" in e for e in errors
    ), errors or "the broken copy passed"


def test_kubernetes_validation_rejects_an_unknown_field(overlay: tuple[str, list[dict]]) -> None:
    _name, objects = overlay
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    errors = schema_errors([deployment])
    assert any("livenesProbe" in e for e in errors), errors or "the misspelt field passed"


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def config_value(objects: list[dict[str, Any]], name: str) -> str:
    (configmap,) = by_kind(objects, "ConfigMap").values()
    return configmap["data"].get(name) or str(
        config.ServiceSettings.model_fields[name.removeprefix("BOREAS_").lower()].default
    )


def test_every_service_has_a_deployment_and_a_disruption_budget(
    overlay: tuple[str, list[dict]],
) -> None:
    name, objects = overlay
    deployments = by_kind(objects, "Deployment")
    budgets = by_kind(objects, "PodDisruptionBudget")
    expected = {f"boreas-{s}" for s in SERVICES} | (
        {"boreas-simulator"} if name == "dev" else set()
    )
    assert set(deployments) == expected
    assert set(budgets) == {f"boreas-{s}" for s in SERVICES}
    for service in SERVICES:
        deployment = deployments[f"boreas-{service}"]
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command == ["python", "-m", f"services.{service}"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[f"boreas-{service}"]["spec"]["selector"]["matchLabels"] == selector
    (autoscaler,) = by_kind(objects, "HorizontalPodAutoscaler").values()
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "boreas-gateway"
    assert "replicas" not in deployments["boreas-gateway"]["spec"], "the autoscaler sets them"


def test_every_command_is_a_module_that_exists(overlay: tuple[str, list[dict]]) -> None:
    _name, objects = overlay
    compose_commands = [s["command"] for s in load_compose()["services"].values() if "command" in s]
    k8s_commands = [c["command"] for _where, pod in pods(objects) for c in pod["containers"]]
    for command in compose_commands + k8s_commands:
        assert command[:2] == ["python", "-m"], command
        assert importlib.util.find_spec(command[2]) is not None, f"no module {command[2]}"
    job = by_kind(objects, "Job")["boreas-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][2] == "shared.migrate"


def test_pods_are_hardened_and_bounded(overlay: tuple[str, list[dict]]) -> None:
    _name, objects = overlay
    grace = float(config_value(objects, "BOREAS_SHUTDOWN_GRACE"))
    for where, pod in pods(objects):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["securityContext"]["runAsUser"] == image_user(), where
        assert pod["automountServiceAccountToken"] is False, where
        if where.startswith("Deployment/"):
            assert pod["terminationGracePeriodSeconds"] > grace, where
        for container in pod["containers"]:
            hardening = container["securityContext"]
            assert hardening["readOnlyRootFilesystem"] is True, where
            assert hardening["allowPrivilegeEscalation"] is False, where
            assert hardening["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (where, bound)


def test_probes_are_where_the_services_serve_them(overlay: tuple[str, list[dict]]) -> None:
    _name, objects = overlay
    deployments = by_kind(objects, "Deployment")

    def probes(service: str) -> tuple[dict[str, Any], dict[str, int]]:
        container = deployments[f"boreas-{service}"]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        return container, ports

    gateway, ports = probes("gateway")
    env = {e["name"]: e["value"] for e in gateway["env"]}
    assert ports["http"] == int(env["BOREAS_GATEWAY_PORT"])
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert gateway[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    routes = (ROOT / "services" / "gateway" / "routes" / "health.py").read_text()
    assert '"/healthz"' in routes and '"/readyz"' in routes

    # The workers' listener must be where their settings put it, and reachable from outside.
    assert config_value(objects, "BOREAS_PROBE_HOST") == "0.0.0.0"
    assert int(config_value(objects, "BOREAS_PROBE_PORT")) == PROBE_PORT
    for service in WORKERS:
        worker, ports = probes(service)
        assert ports == {"probe": PROBE_PORT}, service
        for probe, path in (
            ("startupProbe", LIVENESS_PATH),
            ("livenessProbe", LIVENESS_PATH),
            ("readinessProbe", READINESS_PATH),
        ):
            assert worker[probe]["httpGet"] == {"path": path, "port": "probe"}, (service, probe)


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_object_carries_the_recommended_labels(overlay: tuple[str, list[dict]]) -> None:
    name, objects = overlay
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        labels = obj["metadata"]["labels"]
        assert RECOMMENDED_LABELS - {"app.kubernetes.io/component"} <= set(labels), where
        assert labels["app.kubernetes.io/version"] == project_version(), where
        assert labels["app.kubernetes.io/part-of"] == "boreas", where
    for where, _pod in pods(objects):
        owner = next(o for o in objects if f"{o['kind']}/{o['metadata']['name']}" == where)
        assert RECOMMENDED_LABELS <= set(owner["spec"]["template"]["metadata"]["labels"]), where
    if name == "prod":
        images = {c["image"] for _w, pod in pods(objects) for c in pod["containers"]}
        assert images == {f"boreas:{project_version()}"}


def test_network_policies_deny_by_default(overlay: tuple[str, list[dict]]) -> None:
    _name, objects = overlay
    policies = by_kind(objects, "NetworkPolicy")
    deny = policies["boreas-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress_ports = {
        (p["protocol"], p["port"])
        for rule in policies["boreas-dns-broker-database"]["spec"]["egress"]
        for p in rule["ports"]
    }
    assert {("UDP", 53), ("TCP", 5672), ("TCP", 5432)} <= egress_ports


# --- settings ----------------------------------------------------------------------------------


def real_settings() -> set[str]:
    """BOREAS_ variables the code reads: the settings classes' fields, and the few read by name
    (the simulator's, `make subscriber`'s)."""
    names = set()
    for cls in vars(config).values():
        if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls is not BaseSettings:
            prefix = cls.model_config.get("env_prefix", "")
            names.update(f"{prefix}{field}".upper() for field in cls.model_fields)
    for source in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        names.update(
            re.findall(r'environ(?:\.get)?[\[(]\s*"(BOREAS_[A-Z0-9_]+)"', source.read_text())
        )
    return names


def compose_variables(compose: dict[str, Any]) -> set[str]:
    names = set()
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        names.update(environment)
    return {n for n in names if n.startswith("BOREAS_")}


def kubernetes_variables(objects: list[dict[str, Any]]) -> set[str]:
    names = set()
    for obj in objects:
        if obj["kind"] in ("ConfigMap", "Secret"):
            names.update(obj.get("data") or {})
            names.update(obj.get("stringData") or {})
    for _where, pod in pods(objects):
        for container in pod["containers"]:
            names.update(e["name"] for e in container.get("env") or [])
    return {n for n in names if n.startswith("BOREAS_")}


def test_compose_sets_only_real_settings() -> None:
    compose = load_compose()
    assert "BOREAS_SECRET_KEY" in compose_variables(compose)
    unknown = compose_variables(compose) - real_settings()
    assert not unknown, f"deploy/compose.yaml sets {sorted(unknown)}, which no code reads"

    broken = copy.deepcopy(compose)
    broken["services"]["quota"]["environment"] = {"BOREAS_QUOTA_RECONCILE_EVERY": "60"}
    assert compose_variables(broken) - real_settings() == {"BOREAS_QUOTA_RECONCILE_EVERY"}


def test_kubernetes_sets_only_real_settings(overlay: tuple[str, list[dict]]) -> None:
    name, objects = overlay
    found = kubernetes_variables(objects)
    assert {"BOREAS_ENV", "BOREAS_GATEWAY_HOST"} <= found
    unknown = found - real_settings()
    assert not unknown, f"deploy/k8s overlay {name} sets {sorted(unknown)}, which no code reads"

    broken = copy.deepcopy(objects)
    (configmap,) = by_kind(broken, "ConfigMap").values()
    configmap["data"]["BOREAS_SHUTDOWN_GRACE_SECONDS"] = "8"
    assert kubernetes_variables(broken) - real_settings() == {"BOREAS_SHUTDOWN_GRACE_SECONDS"}


def test_dev_overlay_secret_holds_what_the_services_need() -> None:
    objects = render(K8S / "overlays" / "dev")
    (secret,) = by_kind(objects, "Secret").values()
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {"BOREAS_AMQP_URL", "BOREAS_DATABASE_URL", "BOREAS_SECRET_KEY"}
    # A working key (the services refuse a malformed one), and a well-known one: all zeros.
    assert base64.urlsafe_b64decode(values["BOREAS_SECRET_KEY"] + "=") == bytes(32)
    (configmap,) = by_kind(objects, "ConfigMap").values()
    assert configmap["data"]["BOREAS_ENV"] == "dev"
    assert not by_kind(render(K8S / "overlays" / "prod"), "Secret"), (
        "prod's Secret is created out of band, never kept in the repository"
    )


# --- the image ---------------------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"


def image_user() -> int:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users, "deploy/Dockerfile sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"USER {users[-1]}: numeric, so that runAsNonRoot can check it"
    return int(uid)


def test_image_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "a builder stage and a final one"
    builder = stages[0][1]
    final = text[text.rindex("\nFROM ") :]
    assert re.search(rf"^COPY --from={builder} ", final, flags=re.MULTILINE)
    assert not re.search(r"^RUN .*pip install", final, flags=re.MULTILINE), (
        "installs in the builder"
    )
    assert image_user() != 0


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the last matching line wins)."""
    result = False
    parts = path.split("/")
    for line in patterns:
        negate = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            candidates = [
                "/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))
            ]
            pattern = pattern[3:]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            result = not negate
    return result


def test_build_context_holds_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert copied
    for source in copied:
        assert not ignored(source.rstrip("/"), patterns), f"COPY {source} but it is ignored"
    # Every package pyproject.toml installs is copied in (else `pip install .` leaves it out).
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        assert f"{pattern.rstrip('*')}/" in copied, f"deploy/Dockerfile does not copy {pattern}"
    for kept in ("shared/migrations/0001_outbox_inbox.sql", "services/gateway/app.py"):
        assert not ignored(kept, patterns), kept
    for left_out in (
        "tests/conftest.py",
        ".venv/bin/python",
        "shared/__pycache__/db.cpython-311.pyc",
    ):
        assert ignored(left_out, patterns), left_out
