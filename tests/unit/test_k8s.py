"""The Kubernetes manifests under infra/k8s hold together and match the code.

* every file a kustomization lists exists and parses; components are Components;
* the core objects validate (strictly: no unknown field) against the Kubernetes
  JSON schemas that ``kubernetes-validate`` ships, offline, for the oldest and the
  newest Kubernetes version supported here;
* every container runs non-root (the Dockerfile's user), read-only, without
  capabilities, under RuntimeDefault seccomp, with requests and limits, and the
  paths the image writes to are volumes;
* probes and Prometheus annotations name the paths and ports the code serves
  (``/healthz`` and ``/readyz`` on ``metrics.port``, the evaluator's
  ``metrics.port + 1``, the HTTP server's ``/v2/health/*`` on ``serve.port``);
* the ConfigMap's streamscore.toml is valid settings, and every ``STREAMSCORE_*``
  variable names a setting;
* the KEDA ScaledObject uses only the fields KEDA documents (ScaledObject spec and
  the Kafka scaler's parameters, KEDA 2.16), triggers on the processors' group,
  topic and brokers as the ConfigMap sets them, and never scales past the
  partitions; no overlay has both KEDA and the HPA scaling the processors.

Where ``kubectl`` (``kubectl kustomize``) or ``kustomize`` is installed, every
overlay is also built and its output validated the same way; the tests skip
with the reason otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from schemas.errors import ConfigError
from schemas.settings import (
    MetricsSettings,
    ProcessorSettings,
    ServeSettings,
    check_environment,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
DOCKERFILE = REPO / "infra" / "Dockerfile"
SCALED_OBJECT = K8S / "overlays" / "keda" / "scaledobject.yaml"

#: Oldest and newest Kubernetes versions the manifests must validate against.
K8S_VERSIONS = ("1.27.0", "1.37.0")
CORE_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
}
PROCESSOR = "streamscore-processor"
SECRET = "streamscore-credentials"

#: KEDA 2.16 ScaledObject ``spec`` fields (reference/scaledobject-spec).
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
#: The Kafka scaler's trigger metadata (scalers/apache-kafka), every value a string.
KAFKA_METADATA = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "version",
    "partitionLimitation",
    "sasl",
    "saslTokenProvider",
    "tls",
    "unsafeSsl",
    "awsRegion",
}
KAFKA_REQUIRED = {"bootstrapServers", "consumerGroup"}
#: The Kafka scaler's TriggerAuthentication parameters.
KAFKA_AUTH_PARAMETERS = {
    "sasl",
    "saslTokenProvider",
    "username",
    "password",
    "keytab",
    "realm",
    "kerberosConfig",
    "kerberosServiceName",
    "kerberosDisableFAST",
    "oauthTokenEndpointUri",
    "scopes",
    "oauthExtensions",
    "tls",
    "ca",
    "cert",
    "key",
    "keyPassword",
    "awsRoleArn",
    "awsAccessKeyID",
    "awsSecretAccessKey",
}


# -- reading the tree ---------------------------------------------------------------------------


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def kustomization(folder: Path) -> dict[str, Any]:
    return documents(folder / "kustomization.yaml")[0]


def resources_of(folder: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists, through bases and components (patches not applied)."""
    spec = kustomization(folder)
    found: list[dict[str, Any]] = []
    for entry in [*spec.get("resources", []), *spec.get("components", [])]:
        target = (folder / entry).resolve()
        found += resources_of(target) if target.is_dir() else documents(target)
    return found


def all_objects() -> list[dict[str, Any]]:
    return [
        d
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for d in documents(path)
        if "kind" in d
    ]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in by_kind(resources_of(BASE), "Deployment")}


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(deployment name, pod spec, container) for every container of the base."""
    for name, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield name, pod, container


def config_toml() -> dict[str, Any]:
    (config_map,) = by_kind(resources_of(BASE), "ConfigMap")
    return tomllib.loads(config_map["data"]["streamscore.toml"])


def scaled_object() -> dict[str, Any]:
    (obj,) = by_kind(documents(SCALED_OBJECT), "ScaledObject")
    return obj


def container_port(container: dict[str, Any], port: str | int) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def validate_core(objects: list[dict[str, Any]], version: str) -> list[str]:
    """Validate every core object strictly; returns what was validated (kind/name)."""
    checked = []
    for obj in objects:
        if obj["kind"] in CORE_KINDS:
            kubernetes_validate.validate(obj, version, strict=True)
            checked.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return checked


# -- files and schemas ---------------------------------------------------------------------------


def test_every_file_a_kustomization_lists_exists_and_parses() -> None:
    assert {p.parent.name for p in kustomizations()} >= {
        "base",
        "keda",
        "hpa",
        "keda-sasl",
        "keda-servicemonitor",
        "servicemonitor",
        "kafka-sasl",
    }
    for path in kustomizations():
        spec = kustomization(path.parent)
        assert spec["kind"] in ("Kustomization", "Component"), path
        for entry in spec.get("resources", []):
            target = path.parent / entry
            assert target.exists(), f"{path}: {entry} does not exist"
            if target.is_file():
                assert documents(target), f"{target} holds no object"
        for entry in spec.get("components", []):
            component = path.parent / entry
            assert kustomization(component)["kind"] == "Component", component
        for patch in spec.get("patches", []):
            assert (path.parent / patch["path"]).is_file(), f"{path}: {patch['path']}"
            assert isinstance(documents(path.parent / patch["path"])[0], list | dict)
    listed = {
        (p.parent / e).resolve()
        for p in kustomizations()
        for e in kustomization(p.parent).get("resources", [])
    } | {
        (p.parent / x["path"]).resolve()
        for p in kustomizations()
        for x in kustomization(p.parent).get("patches", [])
    }
    stray = [p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and p not in listed]
    assert not stray, f"files no kustomization lists: {stray}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    checked = validate_core(all_objects(), version)
    assert {c.split("/")[0] for c in checked} == CORE_KINDS - {"Secret"}
    assert len(checked) == 14  # 4 Deployments, 4 Services, 2 budgets, the HPA, 3 more


def test_the_validator_is_strict() -> None:
    """A misspelt field fails: the schemas are really applied, offline."""
    deployment = deployments()[PROCESSOR]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# -- pods: security, resources, probes, ports ---------------------------------------------------


def dockerfile_user() -> tuple[int, int]:
    (user,) = re.findall(r"^USER\s+(\d+):(\d+)", DOCKERFILE.read_text(), re.MULTILINE)
    return int(user[0]), int(user[1])


def test_every_container_runs_non_root_read_only_without_capabilities() -> None:
    uid, gid = dockerfile_user()
    seen = set()
    for name, pod, container in containers():
        seen.add(name)
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == uid, name
        assert ctx["runAsGroup"] == gid and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False, name
        c = container["securityContext"]
        assert c["readOnlyRootFilesystem"] is True, name
        assert c["allowPrivilegeEscalation"] is False and c["privileged"] is False, name
        assert c["capabilities"] == {"drop": ["ALL"]}, name
        assert c["runAsNonRoot"] is True, name
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, (name, kind)
        # What the image writes to (Dockerfile: STREAMSCORE_HOME and /tmp) is a volume.
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"] and "emptyDir" in mounts["/var/lib/streamscore"]
        assert mounts["/etc/streamscore"]["configMap"]["name"] == "streamscore-config"
        assert container["args"][:2] == ["--config", "/etc/streamscore/streamscore.toml"]
        assert container["image"] == "streamscore"
    assert seen == {
        PROCESSOR,
        "streamscore-evaluator",
        "streamscore-serve",
        "streamscore-lag-exporter",
    }


def probe(container: dict[str, Any], kind: str) -> tuple[str, int]:
    get = container[kind]["httpGet"]
    return get["path"], container_port(container, get["port"])


def test_probes_name_the_paths_and_ports_the_code_serves() -> None:
    metrics_port = MetricsSettings().port
    assert f"STREAMSCORE_METRICS__PORT={metrics_port}" in DOCKERFILE.read_text()
    pods = {name: c for name, _, c in containers()}
    processor = pods[PROCESSOR]
    assert probe(processor, "livenessProbe") == ("/healthz", metrics_port)
    assert probe(processor, "startupProbe") == ("/healthz", metrics_port)
    assert probe(processor, "readinessProbe") == ("/readyz", metrics_port)
    assert processor["args"][-1] == "run"
    evaluator = pods["streamscore-evaluator"]
    for kind in ("livenessProbe", "readinessProbe"):
        assert probe(evaluator, kind) == ("/metrics", metrics_port + 1)  # evaluate's default
    assert evaluator["args"][-1] == "evaluate"
    serve = pods["streamscore-serve"]
    assert probe(serve, "livenessProbe") == ("/v2/health/live", ServeSettings().port)
    assert probe(serve, "readinessProbe") == ("/v2/health/ready", ServeSettings().port)
    assert serve["args"][-1] == "serve"
    assert probe(pods["streamscore-lag-exporter"], "livenessProbe") == ("/metrics", metrics_port)
    toml = config_toml()
    assert toml["metrics"]["port"] == metrics_port and toml["serve"]["port"] == ServeSettings().port
    assert toml["metrics"]["host"] == toml["serve"]["host"] == "0.0.0.0"


def test_prometheus_annotations_and_services_reach_the_metrics_ports() -> None:
    base = resources_of(BASE)
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in by_kind(base, "Deployment")}
    services = {s["metadata"]["name"]: s for s in by_kind(base, "Service")}
    assert set(services) == set(pods)
    for name, template in pods.items():
        (container,) = template["spec"]["containers"]
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        port = int(notes["prometheus.io/port"])
        assert port in {p["containerPort"] for p in container["ports"]}, name
        service = services[name]
        assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        labels = template["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        for p in service["spec"]["ports"]:
            assert container_port(container, p["targetPort"]) == p["port"], name
    assert services[PROCESSOR]["spec"]["publishNotReadyAddresses"] is True


def test_disruption_budgets_select_their_pods() -> None:
    base = resources_of(BASE)
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in by_kind(base, "Deployment")
    }
    budgets = {b["metadata"]["name"]: b for b in by_kind(base, "PodDisruptionBudget")}
    assert set(budgets) == {PROCESSOR, "streamscore-serve"}
    assert budgets[PROCESSOR]["spec"]["maxUnavailable"] == 1
    for name, budget in budgets.items():
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels[name].items()
    strategy = deployments()[PROCESSOR]["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}
    assert "replicas" not in deployments()[PROCESSOR]["spec"]  # the autoscaler owns it


# -- settings and secrets -------------------------------------------------------------------------


def test_the_config_map_is_valid_settings(tmp_path: Path) -> None:
    (config_map,) = by_kind(resources_of(BASE), "ConfigMap")
    path = tmp_path / "streamscore.toml"
    path.write_text(config_map["data"]["streamscore.toml"], encoding="utf-8")
    settings = load_settings(path)
    assert settings.kafka.is_embedded is False and settings.redis.is_embedded is False
    assert settings.models.source == "registry" and settings.registry.tracking_uri
    assert str(settings.home) == "/var/lib/streamscore"


def env_entries() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, _, container in containers():
        for entry in container.get("env", []):
            yield name, entry
    patch = K8S / "components" / "kafka-sasl" / "deployment-env.yaml"
    for op in documents(patch)[0]:
        yield "kafka-sasl", op["value"]


def test_every_environment_variable_names_a_setting() -> None:
    names = {entry["name"] for _, entry in env_entries()}
    assert {
        "STREAMSCORE_KAFKA__SASL_PASSWORD",
        "STREAMSCORE_KAFKA__SASL_USERNAME",
        "STREAMSCORE_REDIS__PASSWORD",
        "STREAMSCORE_SERVE__KEYS",
    } <= names
    for name in names:
        assert name.startswith("STREAMSCORE_")
        check_environment({name: "x"})  # raises ConfigError for a name no setting has
    with pytest.raises(ConfigError):
        check_environment({"STREAMSCORE_KAFKA__SASL_PASWORD": "x"})


def test_credentials_come_from_one_secret_and_never_in_clear() -> None:
    keys = set()
    for owner, entry in env_entries():
        if "PASSWORD" in entry["name"] or entry["name"].endswith(("KEYS", "USERNAME")):
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET and "value" not in entry, (owner, entry)
            keys.add(ref["key"])
            if owner != "kafka-sasl":
                assert ref["optional"] is True, (owner, entry)  # pods start without it
    assert keys == {"kafka-sasl-username", "kafka-sasl-password", "redis-password", "serve-keys"}
    assert not by_kind(all_objects(), "Secret"), "a Secret's values do not belong in git"
    (auth,) = by_kind(all_objects(), "TriggerAuthentication")
    refs = auth["spec"]["secretTargetRef"]
    assert {r["parameter"] for r in refs} <= KAFKA_AUTH_PARAMETERS
    assert {r["name"] for r in refs} == {SECRET} and {r["key"] for r in refs} <= keys


# -- KEDA and the HPA -----------------------------------------------------------------------------


def test_the_scaled_object_uses_only_documented_keda_fields() -> None:
    obj = scaled_object()
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    spec = obj["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC
    assert set(spec["scaleTargetRef"]) <= SCALE_TARGET_REF
    assert set(spec["advanced"]) <= ADVANCED
    assert set(spec["advanced"]["horizontalPodAutoscalerConfig"]) <= HPA_CONFIG
    assert set(spec["fallback"]) == {"failureThreshold", "replicas"}
    for number in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(spec[number], int) and spec[number] >= 0, number
    assert 1 <= spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert set(trigger) <= TRIGGER and trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert KAFKA_REQUIRED <= set(metadata) <= KAFKA_METADATA
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata values are strings"
    assert int(metadata["lagThreshold"]) > 0 and int(metadata["activationLagThreshold"]) > 0
    assert metadata["offsetResetPolicy"] in ("earliest", "latest")
    assert metadata["allowIdleConsumers"] == "false"


def test_the_scaled_object_watches_the_processors_group_within_the_partitions() -> None:
    obj, toml = scaled_object(), config_toml()
    spec = obj["spec"]
    metadata = spec["triggers"][0]["metadata"]
    target = spec["scaleTargetRef"]
    assert target["name"] == PROCESSOR in deployments()
    assert target.get("kind", "Deployment") == "Deployment"
    assert metadata["bootstrapServers"] == toml["kafka"]["bootstrap_servers"]
    assert metadata["consumerGroup"] == toml["processor"]["group_id"]
    assert metadata["topic"] == toml["topics"]["events"]
    assert spec["maxReplicaCount"] <= toml["topics"]["partitions"]
    processor = ProcessorSettings(**toml["processor"])
    assert metadata["offsetResetPolicy"] == processor.auto_offset_reset
    lag_exporter = next(c for n, _, c in containers() if n == "streamscore-lag-exporter")
    assert lag_exporter["args"][-4:] == [
        "--group",
        metadata["consumerGroup"],
        "--topic",
        metadata["topic"],
    ]


def test_the_hpa_fallback_scales_on_cpu_within_the_partitions() -> None:
    (hpa,) = by_kind(all_objects(), "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": PROCESSOR,
    }
    assert spec["maxReplicas"] <= config_toml()["topics"]["partitions"]
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"


def scalers_of(objects: list[dict[str, Any]]) -> list[str]:
    """What scales the processor Deployment in a set of objects."""
    return [
        obj["kind"]
        for obj in objects
        if obj["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
        and obj["spec"]["scaleTargetRef"]["name"] == PROCESSOR
    ]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_overlay_has_exactly_one_autoscaler_for_the_processors(overlay: Path) -> None:
    assert len(scalers_of(resources_of(overlay))) == 1


def test_the_service_monitor_scrapes_the_services_named_ports() -> None:
    (monitor,) = by_kind(all_objects(), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s
        for s in by_kind(resources_of(BASE), "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert len(services) == 4
    port_names = {p["name"] for s in services for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == port_names


# -- kustomize, where installed -------------------------------------------------------------------


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_builds_each_overlay_into_valid_objects(overlay: Path) -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is on PATH: overlays not built")
    built = subprocess.run(
        [*command, str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    validate_core(objects, K8S_VERSIONS[-1])
    assert len(scalers_of(objects)) == 1
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "streamscore", obj["metadata"]["name"]
    images = {
        c["image"]
        for d in by_kind(objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"streamscore:0.1.0"}
    if "sasl" in overlay.name:
        (so,) = by_kind(objects, "ScaledObject")
        trigger = so["spec"]["triggers"][0]
        assert trigger["authenticationRef"] == {"name": "streamscore-kafka"}
        assert {trigger["metadata"]["sasl"], trigger["metadata"]["tls"]} == {
            "scram_sha512",
            "enable",
        }
        for d in by_kind(objects, "Deployment"):
            env = {e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert {
                "STREAMSCORE_KAFKA__SECURITY_PROTOCOL",
                "STREAMSCORE_KAFKA__SASL_USERNAME",
            } <= env
