"""The example alert rules and the Grafana dashboard: ``promtool check rules``, the rules'
``promtool test rules`` unit tests, and every query in both naming only series nodenetd
exports (and parsing as PromQL, checked by promtool through a generated rule file)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import nodenetd.metrics
from nodenetd.config.metrics import MetricsSettings
from tests.unit.test_metrics_collectors import registry_of, snapshot_of

HERE = Path(nodenetd.metrics.__file__).parent
RULES = HERE / "prometheus" / "alerts.yml"
RULE_TESTS = HERE / "prometheus" / "alerts_test.yml"
DASHBOARD = HERE / "grafana" / "nodenetd.json"

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool (Debian package prometheus) is missing")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def exported_names() -> set[str]:
    """Every series name a full scrape of a hand-made busy node has."""
    snap = snapshot_of()
    body = registry_of(lambda: (snap, True), MetricsSettings(include=("*",))).scrape()
    return {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()
            if line and not line.startswith("#")}


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bnodenetd_[a-z0-9_]+", expr))


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    return exprs


def grafana_to_promql(expr: str) -> str:
    for variable, value in (("$__rate_interval", "5m"), ("$__range", "1h"),
                            ("$__interval", "1m")):
        expr = expr.replace(variable, value)
    return re.sub(r"\$[a-z]+", ".*", expr)


@needs_promtool
def test_the_alert_rules_pass_promtool_check():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_the_alert_rules_pass_their_promtool_unit_tests():
    proc = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_alerts_cover_what_operators_asked_for():
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for wanted in ("NodenetdMemberDown", "NodenetdFailoverStorm", "NodenetdMemberSuppressed",
                   "NodenetdDriftNotConverging", "NodenetdProbeLoss", "NodenetdApplyFailed"):
        assert wanted in alerts
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == set(alerts), set(alerts) - tested  # every alert has a firing test


def test_alerts_and_dashboard_use_only_exported_series():
    exported = exported_names()
    rules = yaml.safe_load(RULES.read_text())
    used = {name for g in rules["groups"] for r in g["rules"] for name in names_in(r["expr"])}
    for expr in dashboard_exprs():
        used |= names_in(expr)
    assert used and used <= exported, used - exported


def test_the_dashboard_shows_interfaces_failover_probes_and_drift():
    board = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Failover", "Probes", "Interfaces", "Tuning and drift", "Daemon"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables == ["datasource", "instance", "group", "device"]


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}:check", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
