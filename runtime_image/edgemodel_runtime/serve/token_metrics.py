"""Owns the token-level series of generative serving (docs/architecture.md, "Contracts").

`edgemodel_time_to_first_token_seconds` times a generation from its admission to its first
token (queueing and prefill included: what a user waits for), `edgemodel_inter_token_latency_
seconds` the gap between consecutive tokens of one sequence (what a stream's reader sees), and
`edgemodel_generated_tokens_total` counts tokens handed out. They carry the same model, revision
and target labels as the request series and live in the server's registry beside them; each
histogram has a bucket boundary exactly at its SLO so "fraction within SLO" is exact.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .metrics import LABELS, latency_buckets

DEFAULT_TTFT_SLO_S = 0.5
DEFAULT_ITL_SLO_S = 0.1


class TokenMetrics:
    """The three token series, pre-bound to this process's model/revision/target labels."""

    def __init__(
        self,
        registry: CollectorRegistry,
        values: tuple[str, str, str],
        *,
        ttft_slo_s: float = DEFAULT_TTFT_SLO_S,
        itl_slo_s: float = DEFAULT_ITL_SLO_S,
    ) -> None:
        self.time_to_first_token = Histogram(
            "edgemodel_time_to_first_token_seconds",
            "Time from a generation's admission to its first token (queueing and prefill)",
            LABELS,
            buckets=latency_buckets(ttft_slo_s),
            registry=registry,
        ).labels(*values)
        self.inter_token_latency = Histogram(
            "edgemodel_inter_token_latency_seconds",
            "Time between consecutive tokens of one generated sequence",
            LABELS,
            buckets=latency_buckets(itl_slo_s),
            registry=registry,
        ).labels(*values)
        self.generated_tokens = Counter(
            "edgemodel_generated_tokens",
            "Tokens generated and handed to clients",
            LABELS,
            registry=registry,
        ).labels(*values)
