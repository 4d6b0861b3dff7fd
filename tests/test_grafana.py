"""docs/grafana/sealpool.json queries only metrics and labels the exporter exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sealpool.exporter import PoolCollector
from sealpool.store import SectorStore

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "sealpool.json"
METRIC = re.compile(r"\bsealpool_[a-z0-9_]+")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def exported(store: SectorStore) -> dict[str, set[str]]:
    """Each sample name the exporter serves, with its labels (a counter's name gets
    ``_total``, as the exposition format writes it)."""
    names = {}
    for family in PoolCollector(store).collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names[name] = set(family._labelnames)  # the labels it was declared with
    return names


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(query, legend) of every panel target and of the query variables."""
    found = [
        (target["expr"], target.get("legendFormat", ""))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((variable["definition"], ""))
    return found


def test_every_queried_metric_and_label_is_exported(store: SectorStore) -> None:
    metrics = exported(store)
    assert set(metrics) == {
        "sealpool_sectors",
        "sealpool_slots",
        "sealpool_slot_busy_share",
        "sealpool_events_total",
        "sealpool_phase_seconds",
    }
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expr, legend in queries(dashboard):
        names = set(METRIC.findall(expr))
        assert names, f"{expr!r} queries no sealpool metric"
        assert names <= set(metrics), f"{expr!r}: not exported: {names - set(metrics)}"
        labels = set(MATCHER.findall(expr)) | set(LEGEND.findall(legend))
        labels |= {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        labels |= set(re.findall(r"label_values\(\w+,\s*(\w+)\)", expr))
        known = set().union(*(metrics[name] for name in names))
        assert labels <= known, f"{expr!r}: labels {labels - known} not on {sorted(names)}"
        used |= names
    assert used == set(metrics)  # every exported metric has a panel
