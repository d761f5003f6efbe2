#!/usr/bin/env python3
"""Checks deploy/'s dashboard and alert rules against the code (CI runs it).

* The Grafana dashboard loads: a JSON object with a uid, a title and
  panels, each panel with a unique id, a type, a title and a grid position
  inside the 24-column grid; every non-row panel queries Prometheus.
* Every `keyward_*` metric the dashboard or the alert rules query is one
  the binaries emit (its name, without a histogram's `_bucket`, `_sum` or
  `_count`, is a string in the Rust sources): a renamed metric cannot leave
  a blank panel or an alert that never fires.

promtool checks the rules' syntax and behaviour itself (`promtool check
rules`, `promtool test rules`).
"""

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/keyward-dashboard.json"
RULES = ROOT / "deploy/prometheus/keyward-alerts.yml"
METRIC = re.compile(r"\bkeyward_[a-z0-9_]+")


def fail(message):
    print(f"deploy/check.py: {message}", file=sys.stderr)
    sys.exit(1)


def emitted_names():
    names = set()
    for path in ROOT.glob("*/src/**/*.rs"):
        names.update(re.findall(r'"(keyward_[a-z0-9_]+)"', path.read_text()))
    return names


def base(name):
    return re.sub(r"_(bucket|sum|count)$", "", name)


def check_dashboard():
    dash = json.loads(DASHBOARD.read_text())
    for field in ("uid", "title", "panels", "schemaVersion"):
        if field not in dash:
            fail(f"dashboard has no {field}")
    ids = set()
    exprs = []
    for panel in dash["panels"]:
        pid = panel.get("id")
        if pid in ids:
            fail(f"panel id {pid} twice")
        ids.add(pid)
        if not panel.get("title") or not panel.get("type"):
            fail(f"panel {pid} has no title or type")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            fail(f"panel {pid} has no grid position")
        if grid["x"] + grid["w"] > 24:
            fail(f"panel {pid} is wider than the grid")
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr") for t in targets):
            fail(f"panel {pid} ({panel['title']}) queries nothing")
        if panel.get("datasource", {}).get("type") != "prometheus":
            fail(f"panel {pid} has no Prometheus data source")
        exprs += [t["expr"] for t in targets]
    return exprs


def main():
    emitted = emitted_names()
    queried = {}
    for expr in check_dashboard():
        for name in METRIC.findall(expr):
            queried.setdefault(base(name), "the dashboard")
    for name in METRIC.findall(RULES.read_text()):
        queried.setdefault(base(name), "the alert rules")
    unknown = sorted(f"{n} ({where})" for n, where in queried.items() if n not in emitted)
    if unknown:
        fail("metrics no binary emits: " + ", ".join(unknown))
    print(f"deploy/check.py: dashboard and alert rules query {len(queried)} metrics, all emitted")


main()
