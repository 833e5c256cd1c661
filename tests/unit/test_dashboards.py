"""The Grafana provisioning and dashboard, and every PromQL expression of the dashboard and the
alert rules, checked against the metrics the agents really export
(``model_canary.agents.metrics``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from model_canary.agents import metrics
from tests.unit.test_compose import ROOT, bind_mounts, load_compose, load_yaml

DASHBOARDS = ROOT / "deploy/grafana/dashboards"
PROVISIONING = ROOT / "deploy/grafana/provisioning"
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}
GRAFANA_VARIABLES = frozenset({"__interval", "__rate_interval", "__range", "__all"})

_SELECTOR = re.compile(r"\b(canary_[a-zA-Z0-9_]*)\b\s*(\{[^}]*\})?")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> label names, for every metric object in ``model_canary.agents.metrics``."""
    out: dict[str, frozenset[str]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = frozenset(obj._labelnames)  # no public accessor in prometheus_client
        for family in obj.describe():
            for suffix in SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                out[family.name + suffix] = labels | extra
    return out


def promql_problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """Unknown ``canary_*`` series and unknown label names in their matchers."""
    problems = []
    for name, matchers in _SELECTOR.findall(expr):
        if name not in series:
            problems.append(f"unknown series {name}")
            continue
        for label in _MATCHER.findall(_QUOTED.sub('""', matchers)):
            if label not in series[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    return problems


def dashboards() -> dict[Path, dict[str, Any]]:
    return {p: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, datasource, PromQL) of every panel target, variable and annotation."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target.get("datasource", {}), target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield f"variable {var['name']}", var["datasource"], var["query"]["query"]
    for note in dashboard["annotations"]["list"]:
        yield f"annotation {note['name']!r}", note["datasource"], note["expr"]


def alert_expressions() -> list[tuple[str, str]]:
    rules = load_yaml("deploy/prometheus/alerts.yml")
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def provisioned_datasource() -> dict[str, Any]:
    files = sorted((PROVISIONING / "datasources").glob("*.yml"))
    sources = [s for f in files for s in yaml_list(f, "datasources")]
    assert len(sources) == 1, sources
    return sources[0]


def yaml_list(path: Path, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = load_yaml(str(path.relative_to(ROOT)))[key]
    return items


def test_the_metric_checker_catches_unknown_series_and_labels() -> None:
    series = exported_series()
    assert series["canary_routed_requests_total"] == {"model", "version", "arm"}
    assert "le" in series["canary_inference_duration_seconds_bucket"]
    assert promql_problems('rate(canary_routed_requests_total{model="a{b}"}[1m])', series) == []
    assert promql_problems("rate(canary_routed_request_total[1m])", series) == [
        "unknown series canary_routed_request_total"
    ]
    assert promql_problems('canary_weight_ratio{modle="x", job="j"}', series) == [
        "canary_weight_ratio has no label modle"
    ]
    # A histogram is queried through its _bucket/_count/_sum series, never by its bare name.
    assert promql_problems("canary_inference_duration_seconds", series) != []


def test_dashboard_and_alert_queries_use_only_exported_metrics() -> None:
    series = exported_series()
    checked = 0
    for path, dashboard in dashboards().items():
        for where, _, expr in queries(dashboard):
            assert not promql_problems(expr, series), f"{path.name} {where}: {expr}"
            checked += bool(_SELECTOR.search(expr))
    for alert, expr in alert_expressions():
        assert not promql_problems(expr, series), f"alert {alert}: {expr}"
        checked += bool(_SELECTOR.search(expr))
    assert checked >= 20


def test_dashboards_are_valid_with_unique_uids_and_panel_ids() -> None:
    found = dashboards()
    assert [p.name for p in found] == ["model-canary.json"]
    uids = [d["uid"] for d in found.values()]
    assert len(uids) == len(set(uids))
    for dashboard in found.values():
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids))
        for note in dashboard["annotations"]["list"]:
            assert set(note.get("filter", {}).get("ids", [])) <= set(ids), note["name"]


def test_panels_do_not_overlap() -> None:
    for dashboard in dashboards().values():
        cells: dict[tuple[int, int], str] = {}
        for panel in panels(dashboard):
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24, panel["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_every_query_uses_the_provisioned_datasource() -> None:
    source = provisioned_datasource()
    wanted = {"type": source["type"], "uid": source["uid"]}
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"] == wanted, panel["title"]
        for where, datasource, _ in queries(dashboard):
            assert datasource == wanted, where


def test_dashboard_variables_and_required_panels() -> None:
    dashboard = dashboards()[DASHBOARDS / "model-canary.json"]
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"model", "version"} <= defined
    for where, _, expr in queries(dashboard):
        used = set(re.findall(r"\$(\w+)", expr))
        assert used <= defined | GRAFANA_VARIABLES, f"{where}: undefined {used - defined}"
    exprs = " ".join(expr for _, _, expr in queries(dashboard))
    for name in (
        "canary_rollout_phase",
        "canary_weight_ratio",
        "canary_routed_requests_total",
        "canary_inferences_total",
        "canary_inference_duration_seconds_bucket",
        "canary_bad_events",
        "canary_consumer_lag_messages",
        "canary_decisions_total",
    ):
        assert name in exprs, f"no panel shows {name}"
    assert "histogram_quantile(0.99" in exprs
    stats = [p["title"] for p in panels(dashboard) if p["type"] == "stat"]
    assert {"Phase", "Canary weight"} <= set(stats)
    annotated = {i for n in dashboard["annotations"]["list"] for i in n["filter"]["ids"]}
    weight = [p for p in panels(dashboard) if p["id"] in annotated]
    assert [p["type"] for p in weight] == ["timeseries"]
    assert "canary_weight_ratio" in weight[0]["targets"][0]["expr"]


def test_grafana_provisioning_paths_match_the_compose_mounts() -> None:
    grafana = load_compose()["services"]["grafana"]
    mounts = {target: host for host, target in bind_mounts(grafana)}
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    providers = [
        p
        for f in sorted((PROVISIONING / "dashboards").glob("*.yml"))
        for p in yaml_list(f, "providers")
    ]
    assert providers
    for provider in providers:
        folder = provider["options"]["path"]
        assert mounts[folder] == DASHBOARDS, f"{folder} is not the mounted dashboards folder"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    host_dir = mounts[str(Path(home).parent)]
    assert (host_dir / Path(home).name).is_file()


def test_datasource_points_at_the_compose_prometheus() -> None:
    source = provisioned_datasource()
    assert source["type"] == "prometheus"
    match = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"])
    assert match, source["url"]
    services = load_compose()["services"]
    prometheus = services[match.group(1)]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert f"{match.group(2)}:{match.group(2)}" in prometheus["ports"]
    mounts = {target: host for host, target in bind_mounts(prometheus)}
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    path = Path(config.split("=", 1)[1])
    assert (mounts[str(path.parent)] / path.name).is_file()
    rules = load_yaml("deploy/prometheus/prometheus.yml")["rule_files"]
    assert all((mounts[str(path.parent)] / r).is_file() for r in rules)
