"""Serving metrics: counters and latency histograms, written in Prometheus' text exposition format."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds


class Histogram:
    """Observations counted into cumulative `le` buckets, with their sum (Prometheus' histogram)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bucket (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self, name: str) -> list[str]:
        """The `_bucket`, `_sum` and `_count` lines."""
        lines, total = [], 0
        for le, n in zip((*map(_number, self.buckets), "+Inf"), self.counts):
            total += n
            lines.append(f'{name}_bucket{{le="{le}"}} {total}')
        return lines + [f"{name}_sum {_number(self.sum)}", f"{name}_count {self.count}"]


@dataclass
class EngineMetrics:
    """What the engine counts as it runs (read by the server's /metrics)."""

    prompt_tokens: int = 0  # tokens prefilled or found in the prefix cache
    generated_tokens: int = 0
    finished_sequences: int = 0  # samples, one per choice
    preemptions: int = 0
    time_to_first_token: Histogram = field(default_factory=Histogram)
    inter_token_latency: Histogram = field(default_factory=Histogram)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def prometheus_text(families: list[tuple[str, str, str, float | Histogram]]) -> str:
    """The text format for (name, type, help, value) families: HELP and TYPE lines, then the samples."""
    lines = []
    for name, kind, help_text, value in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += value.samples(name) if isinstance(value, Histogram) else [f"{name} {_number(value)}"]
    return "\n".join(lines) + "\n"


def engine_metrics_text(engine: "Engine") -> str:
    """The engine's state and counters as /metrics serves them (read without locking: for monitoring)."""
    m, blocks = engine.metrics, engine.blocks
    return prometheus_text([
        ("hunyuan_requests_running", "gauge", "Sequences (samples) admitted: decoding, or a long prompt in chunks.",
         len(engine.running)),
        ("hunyuan_requests_waiting", "gauge", "Sequences waiting for admission (new or preempted).",
         len(engine.waiting)),
        ("hunyuan_prompt_tokens_total", "counter", "Prompt tokens admitted (computed or found cached).",
         m.prompt_tokens),
        ("hunyuan_generated_tokens_total", "counter", "Tokens generated.", m.generated_tokens),
        ("hunyuan_finished_sequences_total", "counter", "Samples finished (stop, length or abort).",
         m.finished_sequences),
        ("hunyuan_preemptions_total", "counter", "Sequences preempted for lack of cache blocks.", m.preemptions),
        ("hunyuan_cache_blocks_used", "gauge", "KV-cache blocks referenced by sequences.", blocks.used()),
        ("hunyuan_cache_blocks_total", "gauge", "KV-cache blocks.", blocks.num_blocks),
        ("hunyuan_cache_block_size", "gauge", "Tokens per KV-cache block.", blocks.block_size),
        ("hunyuan_prefix_cache_queried_tokens_total", "counter", "Tokens looked up in the prefix cache.",
         blocks.queried_tokens),
        ("hunyuan_prefix_cache_hit_tokens_total", "counter", "Looked-up tokens found in the prefix cache.",
         blocks.hit_tokens),
        ("hunyuan_prefix_cache_hit_rate", "gauge", "Share of looked-up tokens found in the prefix cache.",
         blocks.hit_rate()),
        ("hunyuan_time_to_first_token_seconds", "histogram", "Arrival to first token, per sample.",
         m.time_to_first_token),
        ("hunyuan_inter_token_latency_seconds", "histogram", "Time between a sample's consecutive tokens.",
         m.inter_token_latency),
    ])
