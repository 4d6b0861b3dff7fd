"""Prometheus metrics of a pool, scraped from a real registry."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from sealpool.exporter import PoolCollector
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool

from farm_helpers import wait_for, worker


def scrape(collector: PoolCollector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_of_a_pool(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sealed = store.create("f01000", "deal")
    store.create_many("f01000", "cc", 2)
    with worker(prefix):
        start(store, sealed.id, actor="test")
        wait_for(store, [sealed.id])
    store.count("took_over", 3)
    slots = SlotPool(
        store.client,
        prefix,
        "box",
        [SlotPlan("PreCommit1", i, None, None, {}) for i in range(2)],
        [],
        [],
    )
    slots.register()
    try:
        metrics = scrape(PoolCollector(store))
    finally:
        slots.unregister()
    assert metrics[("sealpool_sectors", (("kind", "cc"), ("state", "Pending")))] == 2
    assert metrics[("sealpool_sectors", (("kind", "deal"), ("state", "Proving")))] == 1
    assert (
        metrics[("sealpool_slots", (("host", "box"), ("phase", "PreCommit1"), ("state", "idle")))]
        == 2
    )
    assert metrics[("sealpool_events_total", (("event", "took_over"),))] == 3
    pc1 = metrics[("sealpool_phase_seconds", (("phase", "PreCommit1"), ("quantile", "0.5")))]
    assert 0 < pc1 < 60
