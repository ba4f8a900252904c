"""The ops artefacts under infra/ and docker-compose.kafka.yml hold together.

* alert rules parse, carry summary/description/runbook, and every expression
  names only metrics that streamscore exports (the ``Metrics`` class and the
  lag exporter's collector, collected, not copied);
* the dashboard loads and every query names only those metrics;
* the compose file parses and wires the services the design needs;
* the Dockerfile is multi-stage, non-root, health-checked.

Where the tools exist they are used too (each test skips with the reason
otherwise): ``promtool check rules|config``, ``promtool test rules``
(infra/prometheus/alerts.test.yml), ``docker compose config`` (or
``docker-compose config``), and a real Prometheus scraping a real streamscore
metrics endpoint and evaluating the rules and the dashboard's queries. On
Debian/Ubuntu, ``apt-get install prometheus`` provides both binaries.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from schemas.settings import MetricsSettings, Settings, TopicSettings
from streams.ops.lag import GroupLagCollector
from streams.ops.metrics import Health, Metrics, serve

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
ALERTS = INFRA / "prometheus" / "alerts.yml"
ALERT_TESTS = INFRA / "prometheus" / "alerts.test.yml"
PROMETHEUS_CONFIG = INFRA / "prometheus" / "prometheus.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "streamscore.json"
DATASOURCES = INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = INFRA / "grafana" / "provisioning" / "dashboards" / "streamscore.yml"
COMPOSE = REPO / "docker-compose.kafka.yml"
DOCKERFILE = INFRA / "Dockerfile"

#: Series Prometheus itself creates, which rules and panels may use.
PROMETHEUS_BUILTINS = {"up", "ALERTS", "ALERTS_FOR_STATE"}
#: Settings the compose file may set before schemas.settings defines them (they
#: arrive with the MLflow model registry); checked like the others once defined.
PENDING_SETTINGS = {("registry", "tracking_uri"), ("models", "source")}

METRIC_TOKEN = re.compile(
    r"(?<![\w:])(streamscore_[a-zA-Z0-9_:]*|up|ALERTS_FOR_STATE|ALERTS)(?![\w:])"
)


# --------------------------------------------------------------------------- helpers


def exported_names() -> set[str]:
    """Every sample name a streamscore process can expose, from the live collectors."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "info": ("_info",),
        "summary": ("", "_count", "_sum", "_created"),
    }
    families = list(Metrics().registry.collect())
    families += list(GroupLagCollector(["g"], lambda _group: []).collect())
    for family in families:
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def metric_refs(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values and names in by() are not matched)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_strings)
    return set(METRIC_TOKEN.findall(without_groupings))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [
        (panel["title"], target["expr"])
        for panel in panels(dash["panels"])
        for target in panel.get("targets", [])
    ]
    exprs += [
        (f"variable {var['name']}", var["query"]["query"]) for var in dash["templating"]["list"]
    ]
    return exprs


def concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so Prometheus can run it."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
    expr = re.sub(r"\$\w+", ".*", expr)
    match = re.fullmatch(r"label_values\((.*?)(?:,\s*\w+)?\)", expr.strip())
    return match.group(1) if match else expr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def needs(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return path


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


STREAMSCORE_SERVICES = (
    "model-init",
    "processor",
    "processor-gpu",
    "evaluator",
    "autopilot",
    "lag-exporter",
)


# --------------------------------------------------------------------------- metric names


def test_metric_ref_extraction() -> None:
    expr = (
        'sum by (consumer_group, topic) (rate(streamscore_events_total{outcome="up"}[5m])) '
        '> 0 unless up{job="x"} == 0 and histogram_quantile(0.99, sum by (le) '
        "(rate(streamscore_processing_latency_seconds_bucket[1m])))"
    )
    assert metric_refs(expr) == {
        "streamscore_events_total",
        "up",
        "streamscore_processing_latency_seconds_bucket",
    }


def test_exported_names_come_from_the_metrics_class() -> None:
    names = exported_names()
    assert "streamscore_events_consumed_total" in names
    assert "streamscore_processing_latency_seconds_bucket" in names
    assert "streamscore_model_info" in names
    assert "streamscore_group_lag_records" in names
    assert "streamscore_made_up_total" not in names


# --------------------------------------------------------------------------- alert rules


def test_alert_rules_parse_with_severity_and_annotations() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']}: no {key}"


def test_alert_expressions_reference_only_exported_metrics() -> None:
    known = exported_names() | PROMETHEUS_BUILTINS
    for rule in alert_rules():
        refs = metric_refs(rule["expr"])
        assert refs, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert refs <= known, f"{rule['alert']}: unknown metrics {sorted(refs - known)}"


@pytest.mark.parametrize(
    ("signal", "pattern"),
    [
        ("lag growing", r"deriv\(streamscore_group_lag_records\["),
        ("no predictions", r'streamscore_records_produced_total\{role="predictions"\}'),
        ("DLQ rate", r'streamscore_events_total\{outcome="dead_lettered"\}'),
        ("p99 latency", r"histogram_quantile\(0\.99,[\s\S]*streamscore_processing_latency"),
        ("model load failure", r"streamscore_model_load_failures_total"),
        ("drift alert", r'streamscore_drift_events_total\{severity="alert"\}'),
        ("redis down", r'streamscore_dependency_up\{dependency="redis"\}'),
        ("processor down", r'up\{job="streamscore-processor"\} == 0'),
        ("processor stalled", r"time\(\) - streamscore_last_progress_timestamp_seconds"),
    ],
)
def test_alert_rules_cover(signal: str, pattern: str) -> None:
    assert any(re.search(pattern, rule["expr"]) for rule in alert_rules()), signal


def test_promtool_check_rules() -> None:
    promtool = needs("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    promtool = needs("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests(tmp_path: Path) -> None:
    """alerts.test.yml: which alerts fire, when, with which labels (wording not pinned)."""
    promtool = needs("promtool")
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- prometheus.yml


def test_prometheus_config_scrapes_every_streamscore_process() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["alerts.yml", "autopilot-alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["streamscore-autopilot"]["static_configs"][0]["targets"] == ["autopilot:9110"]
    port = MetricsSettings().port
    processor = jobs["streamscore-processor"]["dns_sd_configs"][0]
    assert "processor" in processor["names"] and processor["port"] == port
    # The evaluator serves its metrics on metrics.port + 1 (see run_evaluator).
    evaluator = jobs["streamscore-evaluator"]["static_configs"][0]["targets"]
    assert evaluator == [f"evaluator:{port + 1}"]
    exporter = jobs["streamscore-lag-exporter"]["static_configs"][0]["targets"]
    assert exporter == [f"lag-exporter:{port}"]
    # Job names the alert rules select on exist.
    rule_jobs = set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))
    assert rule_jobs <= set(jobs)


# --------------------------------------------------------------------------- grafana


def test_dashboard_queries_reference_only_exported_metrics() -> None:
    known = exported_names() | PROMETHEUS_BUILTINS
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for title, expr in exprs:
        refs = metric_refs(expr)
        assert refs, f"{title}: no metric in {expr!r}"
        assert refs <= known, f"{title}: unknown metrics {sorted(refs - known)}"


def test_dashboard_has_the_panels_ops_need() -> None:
    joined = "\n".join(expr for _, expr in dashboard_exprs())
    wanted = {
        "lag per partition": r"streamscore_group_lag_records\{",
        "throughput in": r'streamscore_events_consumed_total\{role="events"',
        "throughput out": r"sum by \(role\) \(rate\(streamscore_records_produced_total",
        "latency percentiles": r"histogram_quantile\(0\.99, sum by \(le\) "
        r"\(rate\(streamscore_processing_latency_seconds_bucket",
        "end-to-end latency": r"streamscore_end_to_end_latency_seconds_bucket",
        "DLQ by reason": r"sum by \(stage, reason\) \(rate\(streamscore_dead_letters_total",
        "drift per feature": r"max by \(feature\) \(streamscore_drift_psi",
        "shadow agreement": r"streamscore_shadow_agreement_ratio",
        "model versions": r"streamscore_model_info",
        "dependency up": r"streamscore_dependency_up",
    }
    missing = [name for name, pattern in wanted.items() if not re.search(pattern, joined)]
    assert not missing


def test_dashboard_structure_and_datasource_wiring() -> None:
    dash = json.loads(DASHBOARD.read_text())
    datasource_uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    ids = [panel["id"] for panel in panels(dash["panels"])]
    assert len(ids) == len(set(ids))
    assert dash["uid"] and dash["title"]
    for panel in panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, panel["title"]
    provider = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]
    grafana_volumes = compose()["services"]["grafana"]["volumes"]
    assert f"./infra/grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, variables filled in, as a recording rule that promtool must accept."""
    promtool = needs("promtool")
    rules = [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- compose


def test_compose_has_the_stack() -> None:
    services = compose()["services"]
    required = {
        "kafka",
        "topics",
        "redis",
        "mlflow",
        "prometheus",
        "grafana",
        "processor",
        "processor-gpu",
        "evaluator",
        "lag-exporter",
    }
    assert required <= set(services)

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]

    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in services["mlflow"]["command"]
    assert "./infra/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    grafana_volumes = services["grafana"]["volumes"]
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes
    assert services["evaluator"]["command"] == ["evaluate"]


def test_compose_creates_every_topic_with_its_partitions() -> None:
    script = compose()["services"]["topics"]["command"][0]
    created = dict(re.findall(r"^create (\S+) (\d+)", script, flags=re.MULTILINE))
    assert set(created) == set(TopicSettings().by_role().values())
    assert created["sensor.events"] == "6"
    env = compose()["services"]["processor"]["environment"]
    assert env["STREAMSCORE_TOPICS__PARTITIONS"] == created["sensor.events"]
    replicas = compose()["services"]["processor"]["deploy"]["replicas"]
    default_replicas = int(re.fullmatch(r"\$\{\w+:-(\d+)\}", str(replicas)).group(1))  # type: ignore[union-attr]
    assert 1 < default_replicas <= int(created["sensor.events"])


def test_compose_processors_share_one_group_and_the_gpu_variant_is_opt_in() -> None:
    services = compose()["services"]
    processor, gpu = services["processor"], services["processor-gpu"]
    for service in (processor, gpu):
        env = service["environment"]
        assert env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["STREAMSCORE_REDIS__URL"] == "redis://redis:6379/0"
        assert env["STREAMSCORE_REGISTRY__TRACKING_URI"] == "http://mlflow:5000"
        assert env["STREAMSCORE_MODELS__SOURCE"] == "registry"
        assert service["command"] == ["run"]
    group = processor["environment"]["STREAMSCORE_PROCESSOR__GROUP_ID"]
    assert gpu["environment"]["STREAMSCORE_PROCESSOR__GROUP_ID"] == group
    exporter = services["lag-exporter"]["command"]
    assert exporter[0] == "lag-exporter" and exporter[exporter.index("--group") + 1] == group
    assert "profiles" not in processor
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["ONNXRUNTIME"] == "gpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    providers = json.loads(gpu["environment"]["STREAMSCORE_PROCESSOR__ORT_PROVIDERS"])
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "STREAMSCORE_PROCESSOR__ORT_PROVIDERS" not in processor["environment"]  # CPU default


def settings_field(path: list[str]) -> bool:
    """Whether ``path`` (e.g. ["kafka", "bootstrap_servers"]) names a field of Settings."""
    model: Any = Settings
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_compose_streamscore_containers_are_read_only_and_configured_by_known_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    for name in STREAMSCORE_SERVICES:
        service = services[name]
        assert service["read_only"] is True, name
        assert {"/tmp", "/var/lib/streamscore"} <= set(service["tmpfs"]), name
        assert service["build"]["dockerfile"] == "infra/Dockerfile", name
        with monkeypatch.context() as env:
            for key, value in service["environment"].items():
                assert key.startswith("STREAMSCORE_"), key
                path = key.removeprefix("STREAMSCORE_").lower().split("__")
                if not settings_field(path):
                    assert tuple(path) in PENDING_SETTINGS, f"{name}: {key} is not a setting"
                    continue
                env.setenv(key, str(value))
            # The file interpolates the log level from the environment; read as the container.
            env.setenv("STREAMSCORE_LOG_LEVEL", "INFO")
            settings = Settings()
        assert settings.metrics.host == "0.0.0.0"
        assert not settings.kafka.is_embedded and not settings.redis.is_embedded


def test_compose_config_validates_with_the_docker_client() -> None:
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30
        ).returncode
        == 0
    ):
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "load", "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- compose: secrets

ENV_EXAMPLE = REPO / ".env.example"
#: Environment names that hold a secret.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|USER_INFO|API_KEY", re.IGNORECASE)
#: A compose reference to a variable of the env file, with no default.
VARIABLE = re.compile(r"\$\{(\w+)\}")


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def script(service: dict[str, Any], key: str = "command") -> str:
    value = service.get(key) or []
    return "\n".join(value) if isinstance(value, list) else str(value)


def test_compose_holds_no_literal_password() -> None:
    """Every secret is a ``${VAR}`` of the env file: no literal, no ``${VAR:-default}``."""
    services = compose()["services"]
    secrets = {}
    for name, service in services.items():
        for key, value in service_environment(service).items():
            if SECRET_NAME.search(key) and not key.endswith(("_FILE", "_CREDENTIALS")):
                assert VARIABLE.fullmatch(value), f"{name}: {key} = {value!r} is not ${{VAR}}"
                secrets[(name, key)] = value
    assert secrets[("grafana", "GF_SECURITY_ADMIN_PASSWORD")] == "${GRAFANA_ADMIN_PASSWORD}"
    assert secrets[("processor", "STREAMSCORE_KAFKA__SASL_PASSWORD")] == "${KAFKA_SASL_PASSWORD}"
    text = COMPOSE.read_text()
    for variable in set(VARIABLE.findall(" ".join(secrets.values()))):
        assert f"${{{variable}:-" not in text and f"${{{variable}-" not in text, variable


def test_compose_services_refuse_to_start_without_their_secret() -> None:
    services = compose()["services"]
    assert '-z "$$REDIS_PASSWORD"' in script(services["redis"])
    assert '-z "$$GF_SECURITY_ADMIN_PASSWORD"' in script(services["grafana"], "entrypoint")
    init = script(services["kafka-secrets"])
    assert "KAFKA_TLS_STORE_PASSWORD KAFKA_SASL_PASSWORD" in init and "is not set" in init


def test_compose_redis_requires_a_password_from_a_variable() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert service_environment(redis)["REDIS_PASSWORD"] == "${REDIS_PASSWORD}"
    command = script(redis)
    # requirepass arrives on stdin (config file "-"), never as an argument anyone can list
    assert "redis-server -" in command and "requirepass $$REDIS_PASSWORD" in command
    assert "--requirepass" not in command
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name in STREAMSCORE_SERVICES:
        env = service_environment(services[name])
        assert env["STREAMSCORE_REDIS__PASSWORD"] == "${REDIS_PASSWORD}", name
        assert "@" not in env["STREAMSCORE_REDIS__URL"], name  # no password in the URL


def test_compose_mlflow_is_on_an_internal_network_only() -> None:
    data = compose()
    mlflow = data["services"]["mlflow"]
    assert "ports" not in mlflow
    assert mlflow["networks"] == ["registry"]
    assert data["networks"]["registry"]["internal"] is True
    for name in STREAMSCORE_SERVICES:
        assert "registry" in data["services"][name]["networks"], name


def test_compose_kafka_speaks_sasl_ssl_on_every_advertised_listener() -> None:
    services = compose()["services"]
    kafka = service_environment(services["kafka"])
    protocols = dict(
        pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    advertised = [item.split("://")[0] for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert advertised and all(protocols[name] == "SASL_SSL" for name in advertised)
    assert protocols[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SASL_SSL"
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"
    assert kafka["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert all("9093" not in str(port) for port in services["kafka"].get("ports", []))
    assert "kafka-secrets:/etc/kafka/secrets:ro" in services["kafka"]["volumes"]
    for name in STREAMSCORE_SERVICES:
        service = services[name]
        env = service_environment(service)
        assert env["STREAMSCORE_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["STREAMSCORE_KAFKA__SSL_CA_LOCATION"] == "/etc/streamscore/tls/ca.pem", name
        volumes = service["volumes"]
        assert "kafka-ca:/etc/streamscore/tls:ro" in volumes, name
        assert not any(v.startswith("kafka-secrets:") for v in volumes), name  # no key, no JAAS
    assert "--command-config" in script(services["topics"])


def test_env_example_lists_every_secret_variable_with_no_value() -> None:
    """The env file the user creates: every variable compose needs, none given a value."""
    needed = set(VARIABLE.findall(COMPOSE.read_text()))
    assigned = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert needed == set(assigned), needed ^ set(assigned)
    assert all(value == "" for value in assigned.values()), assigned


def test_dockerfile_bakes_in_no_secret() -> None:
    for op, arg in dockerfile_instructions():
        if op in {"ENV", "ARG", "LABEL"}:
            names = re.findall(r"(\w+)=", arg) or [arg.split()[0]]
            assert not any(SECRET_NAME.search(name) for name in names), (op, arg)


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    instructions = dockerfile_instructions()
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith("AS builder")
    runtime_start = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    runtime = instructions[runtime_start:]
    users = [arg for op, arg in runtime if op == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any(op == "COPY" and "--from=builder" in arg for op, arg in runtime)
    health = [arg for op, arg in runtime if op == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    assert ("ENTRYPOINT", '["streamscore"]') in runtime
    env = " ".join(arg for op, arg in runtime if op == "ENV")
    assert "STREAMSCORE_HOME=/var/lib/streamscore" in env
    assert f"STREAMSCORE_METRICS__PORT={MetricsSettings().port}" in env
    assert "STREAMSCORE_METRICS__HOST=0.0.0.0" in env


# --------------------------------------------------------------------------- real Prometheus


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_real_prometheus_scrapes_a_streamscore_endpoint_and_evaluates_rules_and_panels(
    tmp_path: Path,
) -> None:
    """A real Prometheus scrapes streams.ops.metrics.serve, evaluates alerts.yml (one alert
    fires) and runs every dashboard query without error."""
    prometheus = needs("prometheus")
    metrics, health = Metrics(), Health()
    metrics.consumed.labels(role="events").inc(120)
    metrics.produced.labels(role="predictions").inc(118)
    metrics.outcomes.labels(outcome="scored").inc(118)
    metrics.outcomes.labels(outcome="dead_lettered").inc(2)
    metrics.processing_latency.observe_many(np.array([0.004, 0.02, 0.3]))
    metrics.dependency_up.labels(dependency="redis").set(1)
    metrics.last_progress.set(time.time())
    metrics.model_load_failures.labels(role="challenger").inc()
    metrics_port, web_port = free_port(), free_port()
    server = serve(metrics, health, "127.0.0.1", metrics_port)

    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "streamscore-processor",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{web_port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        value = None
        while time.monotonic() < deadline and value is None:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
            query = urllib.parse.quote('streamscore_events_total{outcome="dead_lettered"}')
            try:
                result = _get_json(f"{api}/query?query={query}")["data"]["result"]
            except OSError:
                continue
            if result:
                value = float(result[0]["value"][1])
        assert value == 2.0

        time.sleep(2.5)  # a few rule evaluations over the scraped data
        groups = _get_json(f"{api}/rules")["data"]["groups"]
        evaluated = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert set(evaluated) == {rule["alert"] for rule in alert_rules()}
        broken = {n: r.get("lastError") for n, r in evaluated.items() if r["health"] != "ok"}
        assert not broken
        # A counter that appears with its first failure fires at once (no `for`).
        firing = {
            (alert["labels"]["alertname"], alert["labels"].get("role"))
            for alert in _get_json(f"{api}/alerts")["data"]["alerts"]
            if alert["state"] == "firing"
        }
        assert ("StreamscoreModelLoadFailed", "challenger") in firing

        for title, expr in dashboard_exprs():
            query = urllib.parse.quote(concrete(expr))
            body = _get_json(f"{api}/query?query={query}")
            assert body["status"] == "success", f"{title}: {body}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        server.shutdown()
