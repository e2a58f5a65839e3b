"""Prometheus metrics. With several worker processes, PROMETHEUS_MULTIPROC_DIR makes every
worker write to a shared directory that /metrics aggregates (``fluxer-oauth serve`` sets it)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("fluxer_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "fluxer_http_request_duration_seconds", "HTTP request latency", ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
TOKENS_ISSUED = Counter("fluxer_tokens_issued_total", "Access tokens issued", ["grant_type"])
RATE_LIMITED = Counter("fluxer_rate_limited_total", "Requests refused by a rate limit", ["bucket"])
DATABASE_ERRORS = Counter("fluxer_database_errors_total", "Requests that found the database unreachable")
ACCESS_LOG_DROPPED = Counter("fluxer_access_log_dropped_total",
                             "Access-log lines dropped because the writer fell behind or could not write")
REFRESH_REUSE = Counter("fluxer_refresh_reuse_total", "Rotated refresh tokens presented again: retries within "
                        "the reuse leeway (answered) and detected reuse (the grant ended)", ["outcome"])
MAIL = Counter("fluxer_mail_total", "Mail handed to the outbox, by kind and outcome "
               "(sent, retried, failed: dropped after the last attempt, logged: dev mode without SMTP)",
               ["kind", "outcome"])
REDIS_ERRORS = Counter("fluxer_redis_errors_total", "Redis operations that failed (rate limits fell open)")


_request_children: dict[tuple, tuple] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count a request; the labelled children are looked up once per combination."""
    key = (route, method, status)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route))
    children[0].inc()
    children[1].observe(seconds)


_issued_children: dict[str, object] = {}


def count_token_issued(grant_type: str) -> None:
    child = _issued_children.get(grant_type)
    if child is None:
        child = _issued_children[grant_type] = TOKENS_ISSUED.labels(grant_type)
    child.inc()


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
