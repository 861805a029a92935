#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus alert rules against the
metrics a real kvtier-server exports.

  KVTIER_SERVER=build/bin/kvtier-server python3 ops/monitoring/monitoring_test.py

- the dashboard is valid JSON, every panel has queries, and every metric a
  query names is one the server exports (scraped from a one-member
  cluster node, so the cluster and replication families are there too);
- the alert rules pass `promtool check rules` (Debian's prometheus package)
  and name only exported metrics;
- the check itself fails on a query that names an unknown metric.
"""
import json
import os
import re
import shutil
import subprocess
import unittest

from metrics_node import MetricsNode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SERVER = os.environ.get("KVTIER_SERVER", os.path.join(ROOT, "build", "bin", "kvtier-server"))
METRIC = re.compile(r"\bkvtier_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def exported_families():
    """Family names from a scrape of a fresh one-member cluster node after
    `kvtierctl demo` (puts, gets, lookups, a pin), so that the families of
    tenants and RPCs have samples."""
    with MetricsNode(SERVER, ram_bytes=8 << 20) as node:
        ctl = os.path.join(os.path.dirname(SERVER), "kvtierctl")
        subprocess.run([ctl, f"--target={node.target}", "demo", "--prompt_tokens=256",
                        "--layers=2"], check=True, capture_output=True)
        body = node.scrape()
    families = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            families.add(name)
            if kind == "histogram":
                families.update(name + s for s in SUFFIXES)
    return families


def unknown_metrics(expr, families):
    return sorted(set(METRIC.findall(expr)) - families)


def dashboard_exprs():
    with open(os.path.join(HERE, "kvtier-dashboard.json")) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        targets = panel.get("targets", [])
        if not targets:
            raise AssertionError(f"panel {panel.get('title')!r} has no queries")
        out.extend((panel["title"], t["expr"]) for t in targets)
    return out


def alert_exprs():
    # The rules file is YAML; its expressions are the `expr:` values (plain
    # or folded with `>-`), read without a YAML library.
    exprs, current = [], None
    for line in open(os.path.join(HERE, "kvtier-alerts.yml")):
        stripped = line.strip()
        if current is not None:
            if stripped and line.startswith(" " * (current[0] + 2)):
                current[1].append(stripped)
                continue
            exprs.append(" ".join(current[1]))
            current = None
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            if m.group(2) in (">-", ">", "|", "|-"):
                current = (len(m.group(1)), [])
            else:
                exprs.append(m.group(2))
    if current is not None:
        exprs.append(" ".join(current[1]))
    return exprs


class MonitoringTest(unittest.TestCase):
    families = None

    @classmethod
    def setUpClass(cls):
        cls.families = exported_families()

    def test_the_scrape_has_the_cluster_and_rpc_families(self):
        for name in ("kvtier_tier_pages", "kvtier_cluster_members", "kvtier_rpcs_total",
                     "kvtier_rpc_duration_seconds_bucket", "kvtier_replication_pages_copied_total"):
            self.assertIn(name, self.families)

    def test_dashboard_queries_name_exported_metrics(self):
        exprs = dashboard_exprs()
        self.assertGreaterEqual(len(exprs), 10)
        for title, expr in exprs:
            self.assertTrue(METRIC.search(expr), f"{title}: no kvtier metric in {expr}")
            self.assertEqual(unknown_metrics(expr, self.families), [], f"{title}: {expr}")

    def test_alert_rules_name_exported_metrics(self):
        exprs = alert_exprs()
        self.assertEqual(len(exprs), 6)
        for expr in exprs:
            self.assertTrue(METRIC.search(expr), expr)
            self.assertEqual(unknown_metrics(expr, self.families), [], expr)

    def test_promtool_accepts_the_rules(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool is absent (Debian: prometheus)")
        result = subprocess.run([promtool, "check", "rules",
                                 os.path.join(HERE, "kvtier-alerts.yml")],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS: 6 rules found", result.stdout)

    def test_an_unknown_metric_is_caught(self):
        self.assertEqual(unknown_metrics("rate(kvtier_tier_hits_total[5m]) + kvtier_nonsense",
                                         self.families), ["kvtier_nonsense"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
