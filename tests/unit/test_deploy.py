"""The deployment files agree with the code and with each other.

Checked without Docker, Kubernetes or a network:

- docker-compose.yml and deploy/k8s/*: every command is a real `inmobi-sync` subcommand, every
  environment variable is a field of `worker.config.Settings` and the values validate, grace
  periods outlast the drain deadline, probes hit /healthz and /readyz on HTTP_PORT, KEDA scales
  to the partition count the compose init creates, selectors match the pods.
- deploy/Dockerfile and .dockerignore: multi-stage, non-root, HEALTHCHECK, no HTTP client binary.
- deploy/prometheus/alerts.yml, deploy/k8s/prometheus-rules.yaml, the Grafana dashboard and the
  runbook name only metrics the worker exports.

The one test that needs the CLI asks it for its subcommands (`python -m worker.cli --help`).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "inmobi-sync.json"
DATASOURCES_FILE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_FILE = DEPLOY / "grafana" / "provisioning" / "dashboards" / "inmobi-sync.yml"
RUNBOOK_FILE = DEPLOY / "RUNBOOK.md"

# What the worker exports (the metrics contract of the observability module).
METRICS = frozenset(
    {
        "inmobi_sync_events_total",
        "inmobi_sync_buffered_ids",
        "inmobi_sync_flushes_total",
        "inmobi_sync_uploads_total",
        "inmobi_sync_upload_duration_seconds",
        "inmobi_sync_dlq_total",
        "inmobi_sync_commit_lag",
        "inmobi_sync_consumer_lag",
        "inmobi_sync_oldest_buffered_age_seconds",
        "inmobi_sync_session_refreshes_total",
        "inmobi_sync_stuck_segments",
        "inmobi_sync_auth_failures_total",
    }
)
HISTOGRAMS = frozenset({"inmobi_sync_upload_duration_seconds"})
# Series that alerts may use without the worker exporting them.
EXTERNAL_METRICS = frozenset(
    {
        "up",  # Prometheus' own scrape health of each target
        "kube_pod_status_ready",  # kube-state-metrics (InmobiSyncWorkerNotReady, Kubernetes only)
    }
)
# The CLI's commands as specified; the CLI test asks the real CLI.
DOCUMENTED_SUBCOMMANDS = frozenset(
    {"run", "sandbox", "produce", "segments", "check-config", "dlq", "status", "verify"}
)
APP_DOCKERFILE = "deploy/Dockerfile"
CONFIG_MAP = "inmobi-audience-sync-config"
SEGMENTS_MAP = "inmobi-audience-sync-segments"
SECRET = "inmobi-audience-sync-secrets"
SECRET_KEYS = frozenset(
    {
        "INMOBI_API_KEY",
        "KAFKA_SASL_PASSWORD",
        "INMOBI_USERNAME",
        "INMOBI_ACCOUNT_ID",
        "INMOBI_PROPERTY_ID",
    }
)
SANDBOX_CREDENTIALS = {
    "INMOBI_USERNAME": "sandbox-user",
    "INMOBI_API_KEY": "sandbox-secret",
    "INMOBI_ACCOUNT_ID": "sandbox-account",
    "INMOBI_PROPERTY_ID": "1234567890",
}
REQUIRED_K8S_ALERTS = frozenset(
    {
        "InmobiSyncStuckSegments",
        "InmobiSyncConsumerLagRising",
        "InmobiSyncDlqGrowing",
        "InmobiSyncAuthFailures",
        "InmobiSyncWorkerNotReady",
    }
)
# Dashboard views: metric -> the label it must be broken down by.
REQUIRED_BREAKDOWNS = {
    "inmobi_sync_events_total": "result",
    "inmobi_sync_buffered_ids": "segment",
    "inmobi_sync_flushes_total": "reason",
    "inmobi_sync_uploads_total": "status",
    "inmobi_sync_dlq_total": "stage",
    "inmobi_sync_commit_lag": "partition",
    "inmobi_sync_consumer_lag": "partition",
}


# --- loading ---------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def app_services() -> dict[str, dict[str, Any]]:
    """Services running this repository's image (built from deploy/Dockerfile)."""
    return {
        name: svc
        for name, svc in services().items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == APP_DOCKERFILE
    }


def run_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in app_services().items() if svc["command"][0] == "run"}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


@cache
def k8s_docs() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return tuple(docs)


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in k8s_docs()
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def config_map() -> dict[str, str]:
    return k8s("ConfigMap", CONFIG_MAP)["data"]


def pod_spec() -> dict[str, Any]:
    return k8s("Deployment")["spec"]["template"]["spec"]


def worker_container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1
    return containers[0]


def settings_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def build_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Validate `env` with the real settings model, isolated from this process' environment."""
    for variable in settings_variables():
        monkeypatch.delenv(variable, raising=False)
    return Settings(_env_file=None, **{key.lower(): value for key, value in env.items()})


def default_shutdown_timeout() -> float:
    return float(Settings.model_fields["shutdown_timeout_seconds"].default)


# --- small parsers (each has a test of its own below) -----------------------------------------


def parse_duration(value: str | float) -> float:
    """A compose duration (`45s`, `1m30s`, `1.5m`) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def parse_subcommands(help_text: str) -> set[str]:
    """Subcommands listed by an argparse or click top-level `--help`.

    argparse prints `{run,sandbox,...}` unless the subparsers have a metavar; then, like click's
    `Commands:` section, it lists one command per line, at the shallowest indentation whose
    first words look like command names (deeper lines continue a description).
    """
    braces = re.search(r"\{([\w,-]+)\}", help_text)
    if braces:
        return set(braces.group(1).split(","))
    section = re.search(
        r"^(?:positional arguments|Commands):\n((?:[ \t]+\S.*\n?)+)", help_text, re.MULTILINE
    )
    if not section:
        return set()
    by_indent: dict[int, set[str]] = {}
    for line in section.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        by_indent.setdefault(indent, set()).add(line.split()[0])
    for indent in sorted(by_indent):
        if all(re.fullmatch(r"[a-z][a-z0-9-]*", word) for word in by_indent[indent]):
            return by_indent[indent]
    return set()


_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PROMQL_WORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def base_metric(name: str) -> str:
    """`x_bucket`, `x_sum`, `x_count` of a histogram `x` are series of `x`."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def unknown_metrics(exprs: list[str], allowed: frozenset[str]) -> set[str]:
    return {base_metric(n) for e in exprs for n in metric_names(e)} - allowed


def host_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            if entry.get("published"):
                ports.append(int(entry["published"]))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2:
            ports.append(int(parts[-2]))
    return ports


def created_topics() -> dict[str, tuple[int, list[str]]]:
    """Topic -> (partitions, --config values) from the `kafka-topics.sh --create` lines."""
    topics = {}
    for service in services().values():
        command = service.get("command") or []
        script = "\n".join(command) if isinstance(command, list) else command
        for line in script.splitlines():
            tokens = shlex.split(line)
            if "--create" not in tokens:
                continue
            values = dict(zip(tokens, [*tokens[1:], ""], strict=True))
            configs = [tokens[i + 1] for i, token in enumerate(tokens) if token == "--config"]
            topics[values["--topic"]] = (int(values["--partitions"]), configs)
    return topics


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def dockerignored(path: str) -> bool:
    """Last matching .dockerignore pattern wins; a pattern also covers what is below it."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        globs = {glob, glob.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, g) for p in prefixes for g in globs):
            ignored = not negate
    return ignored


# --- the parsers themselves -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (result) (rate(inmobi_sync_events_total{instance=~"$instance"}[5m]))',
            {"inmobi_sync_events_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))", {"x_bucket"}),
        ('absent(up{job="a"} == 1) and on (job) typo_metric offset 1e3', {"up", "typo_metric"}),
        ("deriv(sum(max by (partition) (lag_total))[15m:1m]) > 0", {"lag_total"}),
    ],
)
def test_metric_names_finds_metrics_not_functions_labels_or_numbers(
    expr: str, expected: set[str]
) -> None:
    assert metric_names(expr) == expected


def test_unknown_metrics_maps_histogram_series_and_flags_typos() -> None:
    exprs = [
        "rate(inmobi_sync_upload_duration_seconds_bucket[1m])",
        "inmobi_sync_upload_duration_seconds_count",
        "rate(inmobi_sync_event_total[1m])",
    ]
    assert unknown_metrics(exprs, METRICS) == {"inmobi_sync_event_total"}


ARGPARSE_METAVAR_HELP = """usage: inmobi-sync [-h] COMMAND ...

positional arguments:
  COMMAND
    run         run the worker
    check-config
                validate the configuration and print it
    dlq         replay dead letters

options:
  -h, --help    show this help message and exit
"""


@pytest.mark.parametrize(
    ("help_text", "expected"),
    [
        (
            "usage: inmobi-sync [-h] {run,sandbox,check-config} ...\n",
            {"run", "sandbox", "check-config"},
        ),
        (ARGPARSE_METAVAR_HELP, {"run", "check-config", "dlq"}),
        ("Usage: x [OPTIONS] COMMAND\n\nCommands:\n  run    Start\n  dlq    DLQ\n", {"run", "dlq"}),
        ("usage: nothing here\n", set()),
    ],
)
def test_parse_subcommands_reads_argparse_and_click_help(
    help_text: str, expected: set[str]
) -> None:
    assert parse_subcommands(help_text) == expected


def test_parse_duration_reads_compose_durations() -> None:
    assert parse_duration("45s") == 45
    assert parse_duration("1m30s") == 90
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("45 seconds")


# --- commands ---------------------------------------------------------------------------------


def test_compose_runs_documented_subcommands_of_this_image() -> None:
    commands = {name: svc["command"][0] for name, svc in app_services().items()}
    assert set(commands.values()) <= DOCUMENTED_SUBCOMMANDS, commands
    assert {"run", "sandbox", "produce"} <= set(commands.values()), commands


def _cli_help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, f"`inmobi-sync {' '.join(args)} --help`: {result.stderr}"
    return result.stdout


def test_every_container_command_is_a_real_cli_subcommand_with_real_options() -> None:
    subcommands = parse_subcommands(_cli_help())
    assert subcommands, "no subcommands found in `inmobi-sync --help`"
    cmd = next(args for op, args in final_stage() if op == "CMD")
    used = {
        "Dockerfile CMD": json.loads(cmd),
        "k8s Deployment args": worker_container()["args"],
        **{f"compose {name}": svc["command"] for name, svc in app_services().items()},
    }
    for where, argv in used.items():
        assert argv[0] in subcommands, f"{where}: `{argv[0]}` is not in {sorted(subcommands)}"
        options = [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
        if options:
            sub_help = _cli_help(argv[0])
            missing = [option for option in options if option not in sub_help]
            assert not missing, f"{where}: `{argv[0]} --help` does not list {missing}"


# --- compose ----------------------------------------------------------------------------------


def test_compose_builds_this_image_from_the_repository_root() -> None:
    images = {svc["image"] for svc in app_services().values()}
    assert len(images) == 1, images
    for name, svc in app_services().items():
        assert svc["build"]["context"] == ".", name


@pytest.mark.parametrize("service", ["sandbox", "worker", "producer"])
def test_compose_environment_is_settings_fields_with_valid_values(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(app_services()[service])
    unknown = set(env) - settings_variables()
    assert not unknown, f"{service}: not settings of worker/config.py: {sorted(unknown)}"
    build_settings(monkeypatch, env)


def test_compose_host_ports_do_not_clash() -> None:
    published = Counter(p for svc in services().values() for p in host_ports(svc))
    clashes = [port for port, count in published.items() if count > 1]
    assert not clashes, f"host ports published twice: {clashes}"
    for name, svc in services().items():
        replicas = svc.get("deploy", {}).get("replicas", 1)
        fixed = host_ports(svc)
        assert replicas == 1 or not fixed, f"{name}: {replicas} replicas cannot share {fixed}"


def test_compose_workers_are_one_group_of_two_read_only_members() -> None:
    workers = run_services()
    members = sum(svc.get("deploy", {}).get("replicas", 1) for svc in workers.values())
    assert members >= 2
    groups = {env_of(svc).get("KAFKA_GROUP_ID", "inmobi-audience-sync") for svc in workers.values()}
    assert len(groups) == 1, groups
    for name, svc in workers.items():
        env = env_of(svc)
        assert svc.get("read_only") is True, name
        assert "/tmp" in svc.get("tmpfs", []), name
        assert env.get("LOG_FORMAT") == "json", name
        assert {k: env.get(k) for k in SANDBOX_CREDENTIALS} == SANDBOX_CREDENTIALS, name


def test_compose_stop_grace_period_outlasts_the_drain_deadline() -> None:
    for name, svc in run_services().items():
        env = env_of(svc)
        deadline = float(env.get("SHUTDOWN_TIMEOUT_SECONDS", default_shutdown_timeout()))
        assert "stop_grace_period" in svc, name
        assert parse_duration(svc["stop_grace_period"]) > deadline, name


def test_compose_wiring_points_at_the_right_services() -> None:
    svcs = services()
    for name, svc in run_services().items():
        env = env_of(svc)
        kafka_env = env_of(svcs["kafka"])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] in kafka_env["KAFKA_ADVERTISED_LISTENERS"], name
        sandbox_port = svcs["sandbox"]["command"][svcs["sandbox"]["command"].index("--port") + 1]
        for variable in ("INMOBI_BASE_URL", "INMOBI_SESSION_URL"):
            assert env[variable] == f"http://sandbox:{sandbox_port}", (name, variable)
        registry = re.fullmatch(r"http://([\w-]+):(\d+)", env["SCHEMA_REGISTRY_URL"])
        assert registry, env["SCHEMA_REGISTRY_URL"]
        assert registry.group(1) in svcs, registry.group(1)
        listeners = env_of(svcs[registry.group(1)])["SCHEMA_REGISTRY_LISTENERS"]
        assert listeners.endswith(f":{registry.group(2)}"), listeners


def test_compose_starts_in_dependency_order() -> None:
    svcs = services()
    for name, svc in svcs.items():
        for target, spec in (svc.get("depends_on") or {}).items():
            condition = spec["condition"]
            if condition == "service_healthy":
                check = svcs[target].get("healthcheck", {})
                assert check.get("test"), (name, target)
                assert not check.get("disable"), (name, target)
            if condition == "service_completed_successfully":
                assert svcs[target].get("restart") == "no", (name, target)
    assert services()["producer"]["restart"] == "no"
    assert _has_no_cycle({n: set(s.get("depends_on") or {}) for n, s in svcs.items()})


def _has_no_cycle(graph: dict[str, set[str]]) -> bool:
    remaining = {node: set(edges) for node, edges in graph.items()}
    while remaining:
        ready = [node for node, edges in remaining.items() if not edges & remaining.keys()]
        if not ready:
            return False
        for node in ready:
            del remaining[node]
    return True


def test_compose_kafka_is_kraft_with_auto_create_off() -> None:
    kafka = services()["kafka"]
    env = env_of(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    registries = [s for s in services().values() if "cp-schema-registry" in s.get("image", "")]
    assert len(registries) == 1


def test_compose_init_creates_the_settings_topics() -> None:
    topics = created_topics()
    defaults = {name: Settings.model_fields[name].default for name in Settings.model_fields}
    expected = {defaults[k] for k in ("kafka_topic", "kafka_dlq_topic", "segment_registry_topic")}
    assert set(topics) == expected
    assert topics[defaults["kafka_topic"]][0] == 12
    # The segment registry is read from the start by every worker: one partition, compacted.
    assert topics[defaults["segment_registry_topic"]] == (1, ["cleanup.policy=compact"])


def test_compose_worker_healthcheck_probes_healthz_on_http_port() -> None:
    for name, svc in run_services().items():
        port = env_of(svc).get("HTTP_PORT", "9400")
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"]), name


def test_prometheus_scrapes_every_worker_on_http_port() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    targets = {
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    for name, svc in run_services().items():
        assert (name, int(env_of(svc).get("HTTP_PORT", "9400"))) in targets, name
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_FILE.parent / rule_file).is_file(), rule_file
    assert "./deploy/prometheus:/etc/prometheus:ro" in services()["prometheus"]["volumes"]


def test_grafana_provisioning_matches_the_mounts() -> None:
    volumes = services()["grafana"]["volumes"]
    provider = yaml.safe_load(DASHBOARD_PROVIDER_FILE.read_text(encoding="utf-8"))
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards_path}:ro" in volumes
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    datasource = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert re.fullmatch(r"http://prometheus:9090", datasource["url"])


# --- dashboards and alerts --------------------------------------------------------------------


def _walk(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [v for child in node.values() for v in _walk(child, key)]
    if isinstance(node, list):
        return [v for child in node for v in _walk(child, key)]
    return []


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def dashboard_exprs() -> list[str]:
    return [e for e in _walk(dashboard()["panels"], "expr") if isinstance(e, str)]


def test_dashboard_queries_only_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert exprs
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("definition") or ""
        exprs += re.findall(r"label_values\(\s*([\w:]+)", query)
    assert not unknown_metrics(exprs, METRICS)


def test_dashboard_shows_every_required_view() -> None:
    exprs = dashboard_exprs()
    for metric, label in REQUIRED_BREAKDOWNS.items():
        assert any(metric in e and re.search(rf"\bby\s*\([^)]*\b{label}\b", e) for e in exprs), (
            f"no panel shows {metric} by {label}"
        )
    histogram = "inmobi_sync_upload_duration_seconds_bucket"
    assert any("histogram_quantile" in e and histogram in e for e in exprs)


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    board = dashboard()
    provisioned = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))["datasources"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    allowed = {d["uid"] for d in provisioned} | {"${" + n + "}" for n in variables}
    assert variables["datasource"]["type"] == "datasource"
    uids = {ds["uid"] for ds in _walk(board["panels"], "datasource") if isinstance(ds, dict)}
    assert uids
    assert uids <= allowed, uids - allowed
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def alert_rules(path: Path) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    groups = [g for d in docs for g in d.get("spec", d)["groups"]]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


@pytest.mark.parametrize("path", [ALERTS_FILE, K8S / "prometheus-rules.yaml"], ids=lambda p: p.name)
def test_alert_rules_use_only_known_metrics(path: Path) -> None:
    rules = alert_rules(path)
    assert rules
    exprs = [rule["expr"] for rule in rules.values()]
    assert not unknown_metrics(exprs, METRICS | EXTERNAL_METRICS)
    for name, rule in rules.items():
        assert {base_metric(n) for n in metric_names(rule["expr"])}, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name


def test_k8s_alerts_cover_the_required_cases_and_match_compose() -> None:
    k8s_rules = alert_rules(K8S / "prometheus-rules.yaml")
    compose_rules = alert_rules(ALERTS_FILE)
    assert set(k8s_rules) >= REQUIRED_K8S_ALERTS
    assert set(compose_rules) <= set(k8s_rules)
    for name, rule in compose_rules.items():
        assert k8s_rules[name]["expr"] == rule["expr"], name
        assert k8s_rules[name]["for"] == rule["for"], name


def test_runbook_names_only_exported_metrics() -> None:
    named = re.findall(r"\binmobi_sync_\w+", RUNBOOK_FILE.read_text(encoding="utf-8"))
    assert named
    assert {base_metric(n) for n in named} <= METRICS


# --- kubernetes -------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {name for name in on_disk if not name.endswith(".example.yaml")}
    assert "secret.example.yaml" in on_disk
    for name in listed:
        text = (K8S / name).read_text(encoding="utf-8")
        kinds = {d["kind"] for d in yaml.safe_load_all(text) if d}
        assert "Secret" not in kinds, f"{name}: Secrets are referenced, never applied from here"


def test_k8s_environment_is_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = k8s("Secret", SECRET)
    secret_values = secret.get("stringData") or secret.get("data") or {}
    assert set(secret_values) >= SECRET_KEYS
    assert all(value in ("", None) for value in secret_values.values()), "example holds values"
    unknown = (set(config_map()) | set(secret_values)) - settings_variables()
    assert not unknown, f"not settings of worker/config.py: {sorted(unknown)}"
    placeholders = dict.fromkeys(secret_values, "placeholder")
    build_settings(monkeypatch, {**config_map(), **placeholders})


def test_k8s_deployment_loads_the_configmap_and_the_secret() -> None:
    env_from = worker_container()["envFrom"]
    assert {"configMapRef": {"name": CONFIG_MAP}} in env_from
    assert {"secretRef": {"name": SECRET}} in env_from


def test_k8s_grace_period_outlasts_the_drain_deadline() -> None:
    deadline = float(config_map()["SHUTDOWN_TIMEOUT_SECONDS"])
    assert pod_spec()["terminationGracePeriodSeconds"] > deadline


def test_k8s_probes_hit_health_endpoints_on_http_port() -> None:
    container = worker_container()
    http_port = int(config_map()["HTTP_PORT"])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert named.get(get["port"], get["port"]) == http_port, probe


def test_k8s_pod_is_locked_down() -> None:
    spec, container = pod_spec(), worker_container()
    pod_security, security = spec["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod_security["runAsUser"] == int(dockerfile_user().split(":")[0])
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) >= {"cpu", "memory"}, kind


def test_k8s_segments_file_is_mounted_and_valid() -> None:
    from worker.segments import parse_segments_document

    path = Path(config_map()["SEGMENTS_FILE"])
    mount = next(
        m for m in worker_container()["volumeMounts"] if m["mountPath"] == str(path.parent)
    )
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == mount["name"])
    segments = k8s("ConfigMap", volume["configMap"]["name"])["data"][path.name]
    catalog = parse_segments_document(yaml.safe_load(segments))
    assert catalog.segments


def test_keda_scales_up_to_the_partition_count() -> None:
    scaled, config = k8s("ScaledObject"), config_map()
    trigger = next(t for t in scaled["spec"]["triggers"] if t["type"] == "kafka")["metadata"]
    assert trigger["topic"] == config["KAFKA_TOPIC"]
    assert trigger["consumerGroup"] == config["KAFKA_GROUP_ID"]
    assert trigger["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert scaled["spec"]["maxReplicaCount"] == created_topics()[config["KAFKA_TOPIC"]][0]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == k8s("Deployment")["metadata"]["name"]


def test_k8s_selectors_match_the_worker_pods() -> None:
    labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb, service = k8s("PodDisruptionBudget"), k8s("Service")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in worker_container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = k8s("ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports


# --- image ------------------------------------------------------------------------------------


def dockerfile_user() -> str:
    users = [args for op, args in final_stage() if op == "USER"]
    assert users, "the final stage sets no USER"
    return users[-1]


def test_dockerfile_builds_in_stages_from_slim_python_311() -> None:
    instructions = dockerfile_instructions()
    first_from = next(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    args = dict(a.split("=", 1) for op, a in instructions[:first_from] if op == "ARG" and "=" in a)
    bases = [a.split()[0] for op, a in instructions if op == "FROM"]
    assert len(bases) >= 2, "single-stage build"
    for base in bases:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", resolved), resolved


def test_dockerfile_runs_non_root_with_healthcheck_and_no_curl() -> None:
    stage = dict(final_stage())
    uid = dockerfile_user().split(":")[0]
    assert uid.isdigit(), "USER must be numeric for runAsNonRoot"
    assert int(uid) != 0
    assert "/healthz" in stage["HEALTHCHECK"]
    assert "HTTP_PORT" in stage["HEALTHCHECK"]
    assert "urllib" in stage["HEALTHCHECK"]
    assert not re.search(r"\bcurl\b", DOCKERFILE.read_text(encoding="utf-8"), re.IGNORECASE)
    assert json.loads(stage["ENTRYPOINT"]) == ["inmobi-sync"]
    assert json.loads(stage["CMD"]) == ["run"]
    assert "9400" in stage["EXPOSE"].split()
    assert "PYTHONDONTWRITEBYTECODE=1" in stage["ENV"]


def test_dockerignore_keeps_the_sources_and_drops_the_rest() -> None:
    sources = [
        s
        for op, args in dockerfile_instructions()
        if op == "COPY" and "--from" not in args
        for s in args.split()[:-1]
        if not s.startswith("--")
    ]
    kept = [s for s in sources if "*" not in s] + ["README.md", "worker/config.py"]
    for path in kept:
        assert not dockerignored(path), path
    for path in [".git/HEAD", ".venv/bin/python", ".env", "worker/__pycache__/a.pyc", "tests/x"]:
        assert dockerignored(path), path
