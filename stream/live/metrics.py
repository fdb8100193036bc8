"""Prometheus metrics of the live server, collected from the sessions at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream.analysis.budget import TrackBudget


class LiveCollector:
    """Yields per-track metrics of every live session (no global state to clean up)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        labels = ["session", "track"]
        fams: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "fps": GaugeMetricFamily(
                "emotion_stream_analysed_fps", "Analysed frames per second", labels=labels
            ),
            "received": CounterMetricFamily(
                "emotion_stream_frames_received", "Frames received from the peer", labels=labels
            ),
            "dropped": CounterMetricFamily(
                "emotion_stream_frames_dropped",
                "Frames replaced by a newer one before analysis",
                labels=labels,
            ),
            "analysed": CounterMetricFamily(
                "emotion_stream_frames_analysed", "Frames analysed", labels=labels
            ),
            "latency": GaugeMetricFamily(
                "emotion_stream_latency_seconds",
                "Frame received to event sent, last frame",
                labels=labels,
            ),
            "age": GaugeMetricFamily(
                "emotion_stream_queue_age_seconds",
                "Time the analysed frame waited in the mailbox",
                labels=labels,
            ),
            "stage": GaugeMetricFamily(
                "emotion_stream_stage_seconds",
                "Smoothed per-stage time",
                labels=[*labels, "stage"],
            ),
            "budget_fps": GaugeMetricFamily(
                "emotion_stream_budget_fps",
                "Analysed frames per second the track's share of the machine allows",
                labels=labels,
            ),
            "share": GaugeMetricFamily(
                "emotion_stream_budget_share_seconds",
                "Inference seconds per second the track's share holds (its decoding included)",
                labels=labels,
            ),
            "detect_every": GaugeMetricFamily(
                "emotion_stream_detect_every",
                "The detector runs every k-th analysed frame",
                labels=labels,
            ),
        }
        for session in list(self.server.sessions.values()):
            for track, st in list(session.tracks.items()):
                lv = [session.id, track]
                fams["fps"].add_metric(lv, st.analysed_fps)
                fams["received"].add_metric(lv, st.received)
                fams["dropped"].add_metric(lv, st.dropped)
                fams["analysed"].add_metric(lv, st.analysed)
                fams["latency"].add_metric(lv, st.latency_ms / 1e3)
                fams["age"].add_metric(lv, st.queue_age_ms / 1e3)
                for stage, ms in st.stage_ms.items():
                    fams["stage"].add_metric([*lv, stage], ms / 1e3)
                budget = session.analysis.scheduler(track)
                if isinstance(budget, TrackBudget):
                    fams["budget_fps"].add_metric(lv, budget.rate)
                    fams["share"].add_metric(lv, budget.share_ms / 1e3)
                    fams["detect_every"].add_metric(lv, budget.detect_every)
        sessions = GaugeMetricFamily("emotion_stream_sessions", "Live sessions")
        sessions.add_metric([], len(self.server.sessions))
        conns = CounterMetricFamily("emotion_stream_connections", "WebSocket connections accepted")
        conns.add_metric([], self.server.connections_total)
        yield sessions
        yield conns
        yield from fams.values()
        host = getattr(self.server, "host", None)
        if host is not None:
            yield from self._machine(host)

    @staticmethod
    def _machine(host: Any) -> Iterator[Metric]:
        """The process's CPU by part and the machine budget's measurements."""
        cpu = CounterMetricFamily(
            "emotion_stream_cpu_seconds", "Process CPU seconds by part", labels=["part"]
        )
        for part, seconds in host.cpu.read().items():
            cpu.add_metric([part], seconds)
        yield cpu
        budget = host.budget
        for name, help_, value in (
            ("budget_capacity_seconds", "Inference s per s shared", budget.capacity_ms / 1e3),
            ("decode_seconds_per_frame", "Decoder CPU per frame", budget.decode_ms.value / 1e3),
            ("decode_charged_ratio", "Share of decoding charged to inference", budget.charged),
        ):
            g = GaugeMetricFamily(f"emotion_stream_{name}", help_)
            g.add_metric([], value)
            yield g


def render_metrics(collector: LiveCollector) -> bytes:
    """The Prometheus text exposition of the collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return bytes(generate_latest(registry))
