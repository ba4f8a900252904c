"""The autopilot's ops artefacts hold together: alert rules and dashboard name only metrics
the controller exports (collected from :class:`AutopilotMetrics`, not copied), carry their
annotations, and pass ``promtool`` (rules, their unit tests, the queries) where installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.settings import MetricsSettings
from streams.autopilot.metrics import AutopilotMetrics

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "infra" / "prometheus" / "autopilot-alerts.yml"
RULE_TESTS = REPO / "infra" / "prometheus" / "autopilot-alerts.test.yml"
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "autopilot.json"
PROMETHEUS = REPO / "infra" / "prometheus" / "prometheus.yml"
TOKEN = re.compile(r"(?<![\w:])(streamscore_[a-zA-Z0-9_:]*)(?![\w:])")
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",)}


def exported() -> set[str]:
    names: set[str] = set()
    for family in AutopilotMetrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def refs(expr: str) -> set[str]:
    return set(TOKEN.findall(re.sub(r'"[^"]*"', '""', expr)))


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return path


def test_rules_name_exported_metrics_and_carry_annotations() -> None:
    known = exported()
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert refs(rule["expr"]) and refs(rule["expr"]) <= known, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"][key].strip(), (rule["alert"], key)
    joined = "\n".join(rule["expr"] for rule in rules())
    assert 'streamscore_autopilot_actions_total{action="rolled_back"}' in joined
    assert 'streamscore_autopilot_retrain_runs_total{outcome="failed"}' in joined
    assert "streamscore_autopilot_estimated_accuracy_ratio" in joined


def test_dashboard_names_exported_metrics_with_unique_ids() -> None:
    known = exported() | {"time"}
    dash = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "streamscore-autopilot"
    for title, expr in dashboard_exprs():
        assert refs(expr) and refs(expr) <= known, title
    joined = "\n".join(expr for _, expr in dashboard_exprs())
    for wanted in (
        "verdict_decision",
        "verdict_e_value",
        "estimated_accuracy_ratio",
        "realised_accuracy_ratio",
        "retrain_runs_total",
        "guard_ok",
    ):
        assert f"streamscore_autopilot_{wanted}" in joined


def test_prometheus_scrapes_the_autopilot_on_metrics_port_plus_two() -> None:
    jobs = {
        job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    }
    targets = jobs["streamscore-autopilot"]["static_configs"][0]["targets"]
    assert targets == [f"autopilot:{MetricsSettings().port + 2}"]


def test_promtool_checks_the_rules_and_their_unit_tests(tmp_path: Path) -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    data = yaml.safe_load(RULES.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = subprocess.run(
        [tool, "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    tool = promtool()
    records = [
        {"record": f"dashboard:autopilot_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": records}]}))
    checked = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
