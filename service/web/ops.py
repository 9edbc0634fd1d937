"""Health, readiness and metrics endpoints for the operator and the orchestrator."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text

from service.connections.queries import fleet_counts
from service.infra import heartbeats, metrics
from service.infra.models import ConnectionStatus, LinkState
from service.services import Services
from service.web.context import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if svc.redis is not None:
        try:
            svc.redis.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
    else:
        checks["broker"] = "ok (embedded: database-backed)"
    # Workers are reported always, but only block readiness when asked to: a web process can
    # accept requests (they are durable) while workers restart.
    try:
        checks["workers"] = heartbeats.status(svc.coordinator).describe()
    except Exception as exc:
        checks["workers"] = f"unknown: {type(exc).__name__}"
    blocking = {
        k: v for k, v in checks.items() if k != "workers" or svc.settings.READYZ_REQUIRE_WORKER
    }
    ready = all(value.startswith("ok") for value in blocking.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    if not ready:
        body["reason"] = "; ".join(
            f"{k} {v}" for k, v in blocking.items() if not v.startswith("ok")
        )
    return jsonify(body), 200 if ready else 503


def refresh_gauges(svc: Services) -> None:
    """Gauges computed from the database at scrape time."""
    with svc.db.session() as session:
        by_status, by_state = fleet_counts(session)
    for status in ConnectionStatus:
        metrics.CONNECTIONS.labels(status.value).set(by_status.get(status.value, 0))
    for state in LinkState:
        metrics.LINKS.labels(state.value).set(by_state.get(state.value, 0))
    if svc.redis is not None:
        try:
            metrics.QUEUE_DEPTH.set(float(svc.redis.llen("celery")))  # type: ignore[arg-type]
        except Exception:  # noqa: S110 - a scrape must not fail on the broker
            pass


@bp.get("/metrics")
def metrics_view() -> Response:
    refresh_gauges(services())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
