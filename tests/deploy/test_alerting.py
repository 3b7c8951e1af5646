"""deploy/prometheus and deploy/grafana: the alert rules pass promtool's check and their unit
tests, and every metric the rules or the Grafana dashboard name is exported by a real
coordinator or probe worker (scraped from /metrics of the running processes)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthbus.bus.embedded import EmbeddedNats, free_port
from tests.e2e._stack import Stack, fast_config
from tests.harness._util import require
from tests.helpers import wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "healthbus.rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "healthbus.rules.test.yaml"
GRAFANA = DEPLOY / "grafana" / "healthbus.json"
#: Every healthbus metric name starts so; the rules' own names (alert names) do not.
METRIC_NAME = re.compile(r"\bhealthbus_[a-z0-9_]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool (installed by scripts/install-promtool)."""
    binary = require("promtool", "install it with scripts/install-promtool (Debian package prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def rules_text() -> str:
    """deploy/prometheus/healthbus.rules.yaml without its comments: every word in it counts."""
    return "\n".join(line.split("#", 1)[0] for line in RULES.read_text().splitlines())


def grafana_panels() -> list[dict[str, Any]]:
    """Every panel of the Grafana dashboard (rows included)."""
    panels: list[dict[str, Any]] = json.loads(GRAFANA.read_text())["panels"]
    return panels


def grafana_exprs() -> list[str]:
    """The PromQL of every query of every panel."""
    return [t["expr"] for p in grafana_panels() for t in p.get("targets", [])]


def test_rules_pass_promtool_check() -> None:
    """`promtool check rules`: valid YAML, valid PromQL, valid templates."""
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_unit_tests() -> None:
    """`promtool test rules`: each alert fires when it should and stays quiet when it should not."""
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    # Every alert of the rules file has at least one unit test.
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)$", RULE_TESTS.read_text(), re.MULTILINE))
    assert len(alerts) >= 10
    assert alerts <= tested, alerts - tested


def test_grafana_dashboard_is_well_formed(tmp_path: Path) -> None:
    """Unique panel ids, a Prometheus data source variable, and queries that PromQL accepts."""
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "healthbus"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in grafana_panels()]
    assert len(ids) == len(set(ids))
    for panel in grafana_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    # promtool parses PromQL only inside rules: check each query as a recording rule.
    rules = {
        "groups": [
            {
                "name": "grafana",
                "rules": [
                    {"record": f"healthbus:grafana_query_{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, e in enumerate(grafana_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "grafana-queries.rules.json"  # JSON is YAML
    path.write_text(json.dumps(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page exports, including families with no sample yet
    (a counter family is exported as ``<name>_total``, a histogram as ``_bucket``/``_sum``/``_count``)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.nats
@pytest.mark.e2e
async def test_every_metric_named_is_exported(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """Scrape a real coordinator and probe worker; the rules and the dashboard name nothing else."""
    referenced = {m for e in (rules_text(), *grafana_exprs()) for m in METRIC_NAME.findall(e)}
    assert {"healthbus_leader", "healthbus_outbox_pending", "healthbus_probe_live_workers"} <= referenced
    port = nats_server.url.rsplit(":", 1)[1]
    config = fast_config([("bus", "tcp", f"tcp://127.0.0.1:{port}"), ("gone", "tcp", f"tcp://127.0.0.1:{free_port()}")])
    stack = Stack(nats_server.url, config, tmp_path / "stack", probes=1)
    try:
        await stack.start()

        scraped: list[str] = [""]

        async def decided() -> bool:
            scraped[0] = text = await stack.metrics("coordinator")
            return 'healthbus_target_state{state="unavailable",target="gone"} 1.0' in text

        await wait_until(
            decided,
            30,
            "the coordinator to decide both targets",
            seen=lambda: [line for line in scraped[0].splitlines() if line.startswith("healthbus_target_state")],
        )
        texts = await asyncio.gather(stack.metrics("coordinator"), stack.metrics("w1"))
    except BaseException:
        print(stack.logs())
        raise
    finally:
        await stack.stop()
    exported = set().union(*(exported_names(t) for t in texts))
    missing = sorted(referenced - exported)
    assert not missing, f"named in deploy/ but exported by no process: {missing}"
