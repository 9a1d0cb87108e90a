"""The deployment files in deploy/ agree with the code they deploy.

There is no container engine here, so these tests check what can go wrong
without one: every YAML/JSON file parses; every metric an alert or a panel
uses exists (with the labels it filters and groups by); the example
configurations load; the image's command is a real CLI invocation; the ports,
paths and mounts named in Dockerfile, compose and Kubernetes files match each
other and the configs; the image's HEALTHCHECK command really tells a running
sidecar from a stopped one. With `promtool` installed the alert rules, their
unit tests (deploy/prometheus/alerts.test.yml) and every dashboard query are
checked by Prometheus itself, and with `kubernetes-validate` the manifests by
the Kubernetes API schema. CI installs both, and there they never skip.
A real Prometheus scraping a real sidecar: tests/test_observability_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.carrier_sim import CarrierSim, SimConfig
from gateway.cli import _parser as cli_parser
from gateway.config import (
    AccountConfig,
    ConfigError,
    HttpConfig,
    LoggingConfig,
    ProgramConfig,
    SmppConfig,
    StoreConfig,
    TokenConfig,
    UpstreamConfig,
    load_config,
    parse_config,
    parse_hostport,
)
from gateway.server import Sidecar
from metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLE_CONFIG = DEPLOY / "sidecar.example.toml"
COMPOSE_CONFIG = DEPLOY / "compose.sidecar.toml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "optout-sidecar.json"
CONFIG_PATH_IN_IMAGE = "/etc/optout/sidecar.toml"

try:
    import yaml  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - depends on the machine
    yaml = None

needs_yaml = pytest.mark.skipif(yaml is None, reason="PyYAML is not installed")
PROMTOOL = shutil.which("promtool")
# CI (.ci/run, CI=true) installs every tool these checks need, so there a
# missing tool is a failure, not a skip; a developer's machine may skip.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs_tool(present: bool, how: str) -> pytest.MarkDecorator:
    """Skip when a tool is missing on a developer's machine; in CI run anyway
    (the test then fails on the missing tool instead of skipping silently)."""
    return pytest.mark.skipif(not present and not IN_CI, reason=how)


needs_promtool = needs_tool(
    PROMTOOL is not None, "promtool not installed: apt-get install prometheus"
)
try:
    import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - depends on the machine
    kubernetes_validate = None
needs_kubernetes_validate = needs_tool(
    kubernetes_validate is not None,
    "kubernetes-validate not installed: pip install -e '.[test]'",
)
# Kubernetes releases the manifests are validated against: the oldest and the
# newest minor release upstream supports (2026-11), both shipped with the
# kubernetes-validate version the test extra requires. Native sidecars
# (app-with-sidecar.example.yaml) need 1.29+.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")


def load_yaml(path: Path) -> Any:
    assert yaml is not None
    return yaml.safe_load(path.read_text())


def yaml_docs(path: Path) -> list[Any]:
    assert yaml is not None
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- metric names ------------------------------------------------------------

# Labels Prometheus adds or histograms carry, valid on every series.
_TARGET_LABELS = {"job", "instance"}
_METRIC_REF = re.compile(r"\b(optout_[a-z_]+)\b(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def exported_series() -> dict[str, set[str]]:
    """Every series name a `Metrics()` registry can export, with its labels:
    counters as NAME_total, histograms as NAME_bucket/_count/_sum."""
    m = Metrics()
    labels_of: dict[str, set[str]] = {}
    for wrapper in vars(m).values():
        name = getattr(wrapper, "_name", None)
        if name is not None:
            labels_of[name] = set(getattr(wrapper, "_labelnames", ()))
    series: dict[str, set[str]] = {}
    for family in m.registry.collect():
        labels = labels_of[family.name]
        if family.type == "counter":
            series[f"{family.name}_total"] = labels
        elif family.type == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            series[family.name] = labels
    return series


def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(ALERTS)
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def check_metric_use(expr: str, series: dict[str, set[str]]) -> list[str]:
    """Problems with the optout_* metrics `expr` uses: unknown names, and
    label names in matchers or by()/on() clauses that none of them has."""
    problems: list[str] = []
    used = _METRIC_REF.findall(expr)
    known_labels = set(_TARGET_LABELS)
    for name, matchers in used:
        if name not in series:
            problems.append(f"unknown metric {name}")
            continue
        known_labels |= series[name]
        for label in _MATCHER_LABEL.findall(matchers):
            if label not in series[name] | _TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
    for group in _GROUPING.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            if label not in known_labels:
                problems.append(f"grouping by {label!r}, which no metric in the expression has")
    return problems


def test_metric_check_catches_mistakes() -> None:
    """The checker itself: a typo in a name or a label is reported."""
    series = exported_series()
    assert check_metric_use('sum by (side) (rate(optout_pdus_total{side="sender"}[5m]))',
                            series) == []
    assert check_metric_use("rate(optout_decision_seconds_bucket[5m])", series) == []
    assert check_metric_use("optout_submits_total", series) == [
        "unknown metric optout_submits_total"]
    assert check_metric_use('optout_mo_total{phone="x"}', series) == [
        "optout_mo_total has no label 'phone'"]
    assert check_metric_use("sum by (op) (optout_store_errors_total)", series) == [
        "grouping by 'op', which no metric in the expression has"]


@needs_yaml
def test_alert_rules_use_only_exported_metrics() -> None:
    series = exported_series()
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        assert check_metric_use(rule["expr"], series) == [], rule["alert"]


def test_dashboard_uses_only_exported_metrics() -> None:
    series = exported_series()
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        assert check_metric_use(expr, series) == [], expr


@needs_yaml
def test_alerts_cover_what_an_sre_is_paged_for() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for metric in ("optout_upstream_up", "optout_sessions", "optout_store_errors_total",
                   "optout_replies_pending", "optout_response_timeouts_total",
                   "optout_window_full_total", "optout_framing_errors_total",
                   "optout_submit_total", "optout_decision_seconds_bucket"):
        assert metric in exprs
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_has_the_panels_operators_look_for() -> None:
    exprs = " ".join(dashboard_exprs())
    for needle in ("by (app_id, sms_type, decision)", "optout_mo_total", "by (action)",
                   "optout_unsubscribed_numbers", "by (side, bind_type)",
                   "optout_pdus_total", "histogram_quantile(0.5", "histogram_quantile(0.99",
                   "optout_store_errors_total", "optout_replies_total",
                   "optout_replies_pending"):
        assert needle in exprs, needle
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        for target in p.get("targets", []):
            # The datasource is a dashboard variable, so an import elsewhere works.
            assert target["datasource"]["uid"] == "${datasource}"


# --- YAML files ----------------------------------------------------------------


@needs_yaml
def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(files) >= 9
    for path in files:
        assert yaml_docs(path), path


# --- configuration -------------------------------------------------------------


def example_with_real_tokens() -> dict[str, Any]:
    """The example config as an operator would fill it in: placeholders
    replaced by long random tokens."""
    data = tomllib.loads(EXAMPLE_CONFIG.read_text())
    for token in data["http"]["tokens"]:
        token["token"] = secrets.token_urlsafe(24)
    return data


def test_example_config_is_refused_until_its_placeholder_tokens_are_replaced() -> None:
    with pytest.raises(ConfigError, match=r"http.tokens\[0\].token is a documented placeholder"):
        load_config(EXAMPLE_CONFIG)


def test_example_config_loads() -> None:
    config = parse_config(example_with_real_tokens(), source=str(EXAMPLE_CONFIG))
    assert parse_hostport(config.smpp.listen, "") == ("0.0.0.0", 2775)
    assert parse_hostport(config.http.listen, "") == ("0.0.0.0", 8080)
    assert config.store.url == "sqlite:////data/optout.db"
    assert config.http.open_endpoints  # probes and Prometheus need no token
    assert {t.role for t in config.http.tokens} == {"admin", "viewer"}
    assert config.accounts and not config.smpp.allow_unknown_accounts
    assert not config.logging.unmask


def _keys_in_toml_text(text: str) -> set[tuple[str, str]]:
    """(section, key) for every `key = ...` line, commented out or not."""
    found: set[tuple[str, str]] = set()
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[\[?([a-z_.]+)\]\]?\s*$", line)
        if header:
            section = header.group(1)
            found.add(("", section))
            continue
        key = re.match(r"^#?\s*([a-z_]+)\s*=", line)
        if key:
            found.add((section, key.group(1)))
    return found


def test_example_config_documents_every_key() -> None:
    """A key added to gateway/config.py must be added to the example too."""
    found = _keys_in_toml_text(EXAMPLE_CONFIG.read_text())
    sections: dict[str, type[Any]] = {
        "smpp": SmppConfig, "upstream": UpstreamConfig, "http": HttpConfig,
        "http.tokens": TokenConfig, "store": StoreConfig, "program": ProgramConfig,
        "logging": LoggingConfig, "accounts": AccountConfig,
    }
    missing = []
    for section, cls in sections.items():
        for f in fields(cls):
            as_table = f"{section}.{f.name}"
            if (section, f.name) not in found and ("", as_table) not in found:
                missing.append(as_table)
    assert missing == []


def test_compose_config_loads_and_points_at_the_simulator() -> None:
    config = load_config(COMPOSE_CONFIG)
    assert config.upstream.address == "carrier:2776"
    assert config.store.url == "sqlite:////data/optout.db"
    assert parse_hostport(config.http.listen, "")[1] == 8080


# --- Dockerfile ------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_value(instruction: str) -> str:
    values = [rest for word, rest in dockerfile_instructions() if word == instruction]
    assert values, f"no {instruction}"
    return values[-1]  # the final stage's


def test_dockerfile_command_is_a_real_cli_invocation() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entrypoint = json.loads(dockerfile_value("ENTRYPOINT"))
    cmd = json.loads(dockerfile_value("CMD"))
    assert entrypoint == ["optout-sidecar"]
    assert "optout-sidecar" in pyproject["project"]["scripts"]
    args = cli_parser().parse_args(cmd)
    assert args.command == "run"
    assert args.config == CONFIG_PATH_IN_IMAGE


def test_dockerfile_runtime_stage() -> None:
    instructions = dockerfile_instructions()
    bases = [rest for word, rest in instructions if word == "FROM"]
    assert all(b.startswith("python:3.11-slim") for b in bases)
    user = dockerfile_value("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert set(dockerfile_value("EXPOSE").split()) == {"2775", "8080"}
    assert json.loads(dockerfile_value("VOLUME")) == ["/data"]
    assert "/healthz" in dockerfile_value("ENV")
    # Every COPY from the build context names a path in the repository.
    for word, rest in instructions:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def healthcheck_code() -> str:
    check = json.loads(dockerfile_value("HEALTHCHECK").split(" CMD ", 1)[1])
    assert check[:2] == ["python", "-c"]
    code: str = check[2]
    return code


async def run_healthcheck(url: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", healthcheck_code(), env={"OPTOUT_HEALTHCHECK_URL": url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def test_image_healthcheck_and_probe_paths_against_a_running_sidecar(
    tmp_path: Path,
) -> None:
    """The example config, run for real (ports and store moved to the test's):
    the image HEALTHCHECK passes while it runs and fails once it stopped, and
    the probe paths the Kubernetes files use are served."""
    carrier = CarrierSim(SimConfig(port=0))
    await carrier.start()
    data = example_with_real_tokens()
    data["smpp"]["listen"] = "127.0.0.1:0"
    data["http"]["listen"] = "127.0.0.1:0"
    data["upstream"]["address"] = f"127.0.0.1:{carrier.port}"
    data["store"]["url"] = f"sqlite:///{tmp_path / 'optout.db'}"
    sidecar = Sidecar(parse_config(data, source=str(EXAMPLE_CONFIG)), metrics=Metrics())
    try:
        addrs = await sidecar.start()
        base = f"http://{addrs.http[0]}:{addrs.http[1]}"
        assert await run_healthcheck(f"{base}/healthz") == 0
        async with aiohttp.ClientSession() as http:
            for path in probe_paths():
                async with http.get(base + path) as resp:
                    assert resp.status in (200, 503), path  # never 404 or 401
            async with http.get(base + "/metrics") as resp:
                assert resp.status == 200
                assert "optout_submit_total" in await resp.text()
    finally:
        await sidecar.stop()
        await carrier.stop()
    assert await run_healthcheck(f"{base}/healthz") != 0


def probe_paths() -> set[str]:
    paths = {"/healthz", "/readyz"}
    if yaml is not None:
        paths = set()
        for container in statefulset_containers():
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                paths.add(container[probe]["httpGet"]["path"])
    return paths


# --- compose ---------------------------------------------------------------------


@needs_yaml
def test_compose_services_are_wired_together() -> None:
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"carrier", "sidecar", "prometheus", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            assert condition["condition"] == "service_healthy"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        test = service["healthcheck"]["test"]
        if test[1] == "python":
            compile(test[3], f"{name} healthcheck", "exec")
    for name in ("carrier", "sidecar"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / services[name]["build"]["context"] / "pyproject.toml").exists()
    carrier_args = cli_parser().parse_args(services["carrier"]["command"])
    assert carrier_args.command == "carrier-sim"
    assert parse_hostport(carrier_args.listen, "")[1] == 2776  # compose.sidecar.toml's upstream
    assert f"./compose.sidecar.toml:{CONFIG_PATH_IN_IMAGE}:ro" in services["sidecar"]["volumes"]
    assert any(v.endswith(":/data") for v in services["sidecar"]["volumes"])
    assert "deploy" not in services["sidecar"]  # never scaled: one SQLite volume


@needs_yaml
def test_prometheus_scrapes_the_sidecar_and_loads_the_rules() -> None:
    prom = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    compose = load_yaml(DEPLOY / "compose.yaml")
    mounts = dict(
        v.rsplit(":", 2)[:2][::-1] for v in compose["services"]["prometheus"]["volumes"]
        if v.startswith("./")
    )
    for rule_file in prom["rule_files"]:
        assert (DEPLOY / mounts[rule_file]).resolve() == ALERTS.resolve()
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "optout-sidecar")
    assert job["static_configs"][0]["targets"] == ["sidecar:8080"]
    assert any('job="optout-sidecar"' in rule["expr"] for rule in alert_rules())


@needs_yaml
def test_grafana_provisioning_points_at_the_dashboard() -> None:
    compose = load_yaml(DEPLOY / "compose.yaml")
    mounts = dict(
        v.rsplit(":", 2)[:2][::-1] for v in compose["services"]["grafana"]["volumes"]
        if v.startswith("./")
    )
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/optout-sidecar.yml")
    folder = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / mounts[folder] / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


# --- Kubernetes --------------------------------------------------------------------


def k8s_objects(name: str) -> list[dict[str, Any]]:
    return yaml_docs(DEPLOY / "kubernetes" / name)


def statefulset_containers() -> list[dict[str, Any]]:
    (sts,) = k8s_objects("statefulset.yaml")
    containers: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"]
    return containers


@needs_yaml
def test_statefulset_runs_one_non_root_replica_with_its_volume() -> None:
    (sts,) = k8s_objects("statefulset.yaml")
    assert sts["kind"] == "StatefulSet"
    spec = sts["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == json.loads(dockerfile_value("CMD"))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    (claim,) = spec["volumeClaimTemplates"]
    assert mounts["/data"]["name"] == claim["metadata"]["name"]
    assert not mounts["/data"].get("readOnly", False)
    config_dir = str(Path(CONFIG_PATH_IN_IMAGE).parent)
    assert mounts[config_dir]["readOnly"] is True
    config_volume = next(v for v in pod["volumes"] if v["name"] == mounts[config_dir]["name"])
    assert config_volume["secret"]["items"][0]["path"] == Path(CONFIG_PATH_IN_IMAGE).name
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"smpp": 2775, "http": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["serviceName"] in {s["metadata"]["name"] for s in k8s_objects("service.yaml")}


@needs_yaml
def test_services_expose_smpp_and_http() -> None:
    for service in k8s_objects("service.yaml"):
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert ports == {"smpp": (2775, "smpp"), "http": (8080, "http")}
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": "optout-sidecar"}
    kustomization = load_yaml(DEPLOY / "kubernetes" / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).exists()


@needs_yaml
def test_sidecar_container_example_keeps_one_replica() -> None:
    (sts,) = k8s_objects("app-with-sidecar.example.yaml")
    assert sts["spec"]["replicas"] == 1
    (sidecar,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"] == json.loads(dockerfile_value("CMD"))


def kubernetes_manifests() -> list[Path]:
    """Every Kubernetes object file in deploy/kubernetes (the Kustomization
    itself is kustomize's, not an API object with a schema)."""
    return sorted(p for p in (DEPLOY / "kubernetes").glob("*.yaml")
                  if p.name != "kustomization.yaml")


def kubernetes_validate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", *args],
                          capture_output=True, text=True, timeout=120)


@needs_yaml
def test_manifests_are_all_applied_by_the_kustomization() -> None:
    kustomization = load_yaml(DEPLOY / "kubernetes" / "kustomization.yaml")
    examples = {p.name for p in kubernetes_manifests() if ".example." in p.name}
    assert set(kustomization["resources"]) == {p.name for p in kubernetes_manifests()} - examples


@needs_kubernetes_validate
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_api_schema_strictly(version: str) -> None:
    """`kubernetes-validate --strict`: every field is known to that Kubernetes
    release (a typo such as `readinesProbe` is an error, not silently ignored)."""
    files = [str(p) for p in kubernetes_manifests()]
    assert len(files) >= 4
    result = kubernetes_validate_cli("--strict", "-k", version, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout and "WARN" not in result.stdout, result.stdout


@needs_kubernetes_validate
@needs_yaml
def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The check above can fail: the StatefulSet with one misspelt probe key."""
    assert yaml is not None
    (sts,) = k8s_objects("statefulset.yaml")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    bad = tmp_path / "statefulset.yaml"
    bad.write_text(yaml.safe_dump(sts))
    result = kubernetes_validate_cli("--strict", "-k", KUBERNETES_VERSIONS[-1], str(bad))
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


@needs_yaml
def test_disruption_budget_covers_the_sidecar_pods_and_allows_a_drain() -> None:
    """A drain evicts at most one sidecar pod at a time, and never waits
    forever on the single-replica SQLite StatefulSet."""
    (pdb,) = k8s_objects("poddisruptionbudget.yaml")
    assert pdb["kind"] == "PodDisruptionBudget"
    assert pdb["apiVersion"] == "policy/v1"
    (sts,) = k8s_objects("statefulset.yaml")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]


# --- promtool ------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_accepts_rules_and_config() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("check", "config", "--syntax-only",
                      str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    """When each alert fires and when it stays quiet (alerts.test.yml)."""
    result = promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@needs_yaml
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording
    rule: promtool parses every one."""
    assert yaml is not None
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$instance", ".*")
        for e in dashboard_exprs()
    ]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_yaml
def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """alerts.test.yml has, for each rule in alerts.yml, a case where that
    alert is expected to fire with its severity: an alert nobody has seen
    fire may never fire."""
    tests = load_yaml(DEPLOY / "prometheus" / "alerts.test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fired: dict[str, set[str]] = {}
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            for expected in check.get("exp_alerts") or []:
                fired.setdefault(check["alertname"], set()).add(
                    expected["exp_labels"]["severity"])
    for rule in alert_rules():
        assert fired.get(rule["alert"]) == {rule["labels"]["severity"]}, rule["alert"]


# --- the fleet: PostgreSQL and two sidecars ------------------------------------------

FLEET = DEPLOY / "kubernetes" / "fleet"
FLEET_STORE = FLEET / "store.fleet.toml"


def haproxy_servers(backend: str) -> list[tuple[str, int]]:
    """(host, port) of each `server` line of one backend in haproxy.fleet.cfg."""
    servers: list[tuple[str, int]] = []
    current = None
    for line in (DEPLOY / "haproxy.fleet.cfg").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] in ("frontend", "backend", "defaults", "global"):
            current = words[1] if len(words) > 1 else None
        elif words[0] == "server" and current == backend:
            host, port = parse_hostport(words[2], backend)
            servers.append((host, port))
    return servers


@needs_yaml
def test_compose_fleet_shares_one_database_between_two_sidecars_behind_one_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = load_yaml(DEPLOY / "compose.fleet.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", "carrier", "sidecar-a", "sidecar-b", "lb"}
    sidecars = [services["sidecar-a"], services["sidecar-b"]]
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            assert condition["condition"] == "service_healthy"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    # Both sidecars: the same image and configuration, no volume of their own,
    # the same database URL from the environment.
    assert sidecars[0] == sidecars[1]
    (sidecar,) = {json.dumps(s, sort_keys=True) for s in sidecars}
    sidecar_spec = json.loads(sidecar)
    assert sidecar_spec["build"]["dockerfile"] == "deploy/Dockerfile"
    assert sidecar_spec["volumes"] == [f"./compose.fleet.toml:{CONFIG_PATH_IN_IMAGE}:ro"]
    url = sidecar_spec["environment"]["OPTOUT_STORE_URL"]
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    pg_env = services["postgres"]["environment"]
    assert url == (f"postgresql://{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}"
                   f"@postgres:5432/{pg_env['POSTGRES_DB']}")
    # The configuration takes that variable, and listens where HAProxy looks.
    monkeypatch.setenv("OPTOUT_STORE_URL", url)
    config = load_config(DEPLOY / "compose.fleet.toml")
    assert config.store.url == url
    assert parse_hostport(config.upstream.address or "", "") == ("carrier", 2776)
    smpp_port = parse_hostport(config.smpp.listen, "")[1]
    http_port = parse_hostport(config.http.listen, "")[1]
    assert haproxy_servers("sidecars_smpp") == [("sidecar-a", smpp_port), ("sidecar-b", smpp_port)]
    assert haproxy_servers("sidecars_http") == [("sidecar-a", http_port), ("sidecar-b", http_port)]
    # One address: only the balancer publishes the sidecars' ports.
    assert services["lb"]["ports"] == [f"127.0.0.1:{smpp_port}:2775",
                                       f"127.0.0.1:{http_port}:8080"]
    assert all("ports" not in s for s in sidecars)
    assert "./haproxy.fleet.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in services["lb"]["volumes"]


def fleet_objects(name: str) -> list[dict[str, Any]]:
    return yaml_docs(FLEET / name)


@needs_yaml
def test_fleet_deployment_runs_two_replicas_with_the_database_url_from_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (deployment,) = fleet_objects("deployment.yaml")
    assert deployment["kind"] == "Deployment"
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == json.loads(dockerfile_value("CMD"))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (env,) = container["env"]
    secret_ref = env["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": "optout-db", "key": "url"}
    # No data volume: the database holds everything.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/data" not in mounts
    config_dir = str(Path(CONFIG_PATH_IN_IMAGE).parent)
    config_volume = next(v for v in pod["volumes"] if v["name"] == mounts[config_dir]["name"])
    assert config_volume["secret"]["items"][0]["path"] == Path(CONFIG_PATH_IN_IMAGE).name
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The fleet's configuration (the single-host example with the fleet's
    # [store] section) reads the same variable.
    data = example_with_real_tokens()
    data["store"] = tomllib.loads(FLEET_STORE.read_text())["store"]
    assert data["store"]["url_env"] == env["name"]
    monkeypatch.setenv(env["name"], "postgresql://optout:pw@db.example:5432/optout")
    config = parse_config(data, source=str(FLEET_STORE))
    assert config.store.url.startswith("postgresql://")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"smpp": parse_hostport(config.smpp.listen, "")[1],
                     "http": parse_hostport(config.http.listen, "")[1]}


@needs_yaml
def test_fleet_service_and_budget_select_the_replicas() -> None:
    (deployment,) = fleet_objects("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service,) = fleet_objects("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"smpp": (2775, "smpp"), "http": (8080, "http")}
    (pdb,) = fleet_objects("poddisruptionbudget.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    kustomization = load_yaml(FLEET / "kustomization.yaml")
    assert set(kustomization["resources"]) == {
        p.name for p in FLEET.glob("*.yaml") if p.name != "kustomization.yaml"
    }


@needs_kubernetes_validate
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_fleet_manifests_match_the_api_schema_strictly(version: str) -> None:
    files = [str(p) for p in sorted(FLEET.glob("*.yaml")) if p.name != "kustomization.yaml"]
    assert len(files) == 3
    result = kubernetes_validate_cli("--strict", "-k", version, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout and "WARN" not in result.stdout, result.stdout
