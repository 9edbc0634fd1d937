"""Health, readiness and metrics endpoints for the operator and the orchestrator."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text

from service.extensions import services

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
    ready = all(value.startswith("ok") for value in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    if not ready:
        body["reason"] = "; ".join(f"{k} {v}" for k, v in checks.items() if not v.startswith("ok"))
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def metrics_view() -> Response:
    from service.gauges import refresh_gauges

    refresh_gauges(services())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
