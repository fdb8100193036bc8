"""Prometheus metrics of the live server, collected from the sessions at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


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
        sessions = GaugeMetricFamily("emotion_stream_sessions", "Live sessions")
        sessions.add_metric([], len(self.server.sessions))
        conns = CounterMetricFamily("emotion_stream_connections", "WebSocket connections accepted")
        conns.add_metric([], self.server.connections_total)
        yield sessions
        yield conns
        yield from fams.values()


def render_metrics(collector: LiveCollector) -> bytes:
    """The Prometheus text exposition of the collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return bytes(generate_latest(registry))
