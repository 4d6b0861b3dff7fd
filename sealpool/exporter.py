"""Prometheus metrics of a pool, read from Redis at each scrape (prometheus-client).

``sealpool exporter --port 9464`` serves them: sectors per state and kind, slot states and
busy shares per host and phase, the pool's event counters, and phase durations (p50/p90
from the histories of recent Proving sectors).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sealpool.store import SectorStore
from sealpool.supervisor.ratio import measured_runs, phase_times
from sealpool.worker_profiles.slots import slot_reports


class PoolCollector(Collector):
    """Collects one pool's figures on every scrape."""

    def __init__(self, store: SectorStore, history_sectors: int = 200) -> None:
        self.store = store
        self.history_sectors = history_sectors

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        sectors = GaugeMetricFamily(
            "sealpool_sectors", "Sectors per state and kind.", labels=["state", "kind"]
        )
        for state, by_kind in self.store.counts().items():
            for kind, count in by_kind.items():
                sectors.add_metric([state.value, kind], count)
        yield sectors
        slots = GaugeMetricFamily(
            "sealpool_slots", "Slots per host, phase and state.", labels=["host", "phase", "state"]
        )
        busy = GaugeMetricFamily(
            "sealpool_slot_busy_share",
            "Share of the last hour each slot was busy.",
            labels=["host", "phase", "slot"],
        )
        tally: dict[tuple[str, str, str], int] = {}
        for report in slot_reports(self.store.client, self.store.prefix):
            key = (report.host, report.phase, report.state)
            tally[key] = tally.get(key, 0) + 1
            busy.add_metric([report.host, report.phase, str(report.index)], report.busy_share)
        for labels, count in tally.items():
            slots.add_metric(list(labels), count)
        yield slots
        yield busy
        events = CounterMetricFamily(
            "sealpool_events", "Supervisor and recovery events.", labels=["event"]
        )
        for name, count in self.store.counters().items():
            events.add_metric([name], count)
        yield events
        durations = GaugeMetricFamily(
            "sealpool_phase_seconds",
            "Measured phase duration (wall seconds).",
            labels=["phase", "quantile"],
        )
        for phase, measured in phase_times(
            measured_runs(self.store, self.history_sectors), {}
        ).items():
            if measured.samples:
                durations.add_metric([phase, "0.5"], measured.p50_s)
                durations.add_metric([phase, "0.9"], measured.p90_s)
        yield durations
