"""Thin Celery tasks: load by id, call one service, let the service own the transactions."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery, Task
from sqlalchemy import delete

from service import logs
from service.container import Services
from service.db import utcnow
from service.models import ConnectSession, OAuthState, WebhookDelivery
from service.sync.runner import SyncBusy, is_dirty, mark_coalesced, run_sync
from service.sync.scheduler import due_connections
from workers.celery_app import TASK_SYNC
from workers.schedule import TASK_CLEANUP, TASK_TICK

log = logging.getLogger(__name__)

BUSY_RETRIES = 20


def register_tasks(celery: Celery, svc: Services) -> None:
    @celery.task(name=TASK_SYNC, bind=True, acks_late=True, max_retries=BUSY_RETRIES)
    def sync_connection(
        self: Task,
        connection_id: int,
        trigger: str,
        run_id: int | None = None,
        reconcile: bool = False,
        skip_if_running: bool = False,
    ) -> None:
        logs.bind(task_id=self.request.id, connection_id=connection_id, trigger=trigger)
        if self.request.retries and not is_dirty(svc, connection_id):
            return  # the lock holder already ran the follow-up this retry was waiting for
        try:
            run_sync(
                svc,
                connection_id,
                trigger=trigger,
                run_id=run_id,
                reconcile=reconcile or trigger == "reconcile",
                skip_if_running=skip_if_running,
            )
        except SyncBusy:
            if skip_if_running:
                return
            if run_id is not None:
                mark_coalesced(svc, run_id, "merged into the run already in progress")
            # The holder will run once more for us; if it dies first, this retry does it.
            ttl = svc.settings.SYNC_LOCK_TTL_SECONDS
            raise self.retry(
                countdown=max(1.0, ttl / 2), args=[connection_id, trigger, None]
            ) from None
        finally:
            logs.clear()

    @celery.task(name=TASK_TICK)
    def schedule_due_syncs() -> int:
        due = due_connections(svc)
        for item in due:
            sync_connection.apply_async(
                args=[item.connection_id, "schedule"],
                kwargs={"reconcile": item.reconcile, "skip_if_running": True},
                countdown=item.countdown,
            )
        if due:
            log.info("scheduled syncs", extra={"count": len(due)})
        return len(due)

    @celery.task(name=TASK_CLEANUP)
    def cleanup() -> None:
        now = utcnow()
        with svc.db.session() as session:
            session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.received_at < now - timedelta(days=7))
            )
            session.execute(delete(OAuthState).where(OAuthState.expires_at < now))
            session.execute(
                delete(ConnectSession).where(ConnectSession.expires_at < now - timedelta(days=30))
            )
