"""Prometheus metrics. Workers and gunicorn share them through multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set (see README, Operations); otherwise they live in the process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SYNC_RUNS = Counter(
    "linksync_sync_runs_total", "Sync runs finished, by trigger and outcome", ["trigger", "outcome"]
)
SYNC_DURATION = Histogram(
    "linksync_sync_duration_seconds",
    "Wall time of one sync run",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
LINK_OPERATIONS = Counter(
    "linksync_link_operations_total", "Link changes applied in Close", ["operation", "outcome"]
)
CLOSE_CALLS = Counter(
    "linksync_close_calls_total",
    "HTTP calls to Close, by endpoint group and status",
    ["group", "status"],
)
CLOSE_RATE_LIMITED = Counter(
    "linksync_close_rate_limited_total", "429 answers from Close", ["group"]
)
CLOSE_WAIT_SECONDS = Counter(
    "linksync_close_rate_wait_seconds_total",
    "Seconds spent waiting for Close's rate budget",
    ["group"],
)
TOKEN_REFRESHES = Counter(
    "linksync_token_refreshes_total", "Access-token refreshes, by outcome", ["outcome"]
)
ENQUEUE_FAILURES = Counter(
    "linksync_enqueue_failures_total",
    "Sync wake-ups the broker refused (the request is durable; the scheduler re-sends it)",
    ["trigger"],
)
WEBHOOKS = Counter("linksync_webhook_deliveries_total", "Inbound webhooks, by outcome", ["outcome"])
SOURCE_CALLS = Counter(
    "linksync_source_calls_total", "Calls to the integrator's source API", ["status"]
)
CONNECTIONS = Gauge(
    "linksync_connections", "Connections by status", ["status"], multiprocess_mode="mostrecent"
)
LINKS = Gauge("linksync_links", "Synced links by state", ["state"], multiprocess_mode="mostrecent")
QUEUE_DEPTH = Gauge(
    "linksync_queue_depth", "Tasks waiting in the broker queue", multiprocess_mode="mostrecent"
)
EVENT_DELIVERY_ATTEMPTS = Counter(
    "linksync_event_delivery_attempts_total",
    "Deliveries of events to the integrator's webhook, by outcome",
    ["outcome"],  # delivered | failed (a retry follows) | gave_up
)
EVENT_DELIVERY_SECONDS = Histogram(
    "linksync_event_delivery_seconds",
    "Latency of one delivery attempt to the integrator's webhook",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_BACKLOG = Gauge(
    "linksync_event_backlog",
    "Events not yet delivered to the integrator's webhook",
    multiprocess_mode="mostrecent",
)
