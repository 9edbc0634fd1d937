"""Housekeeping (hourly): forget what no longer matters."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from service.infra import outbox
from service.infra.db import utcnow
from service.infra.models import ConnectSession, OAuthState, WebhookDelivery
from service.services import Services

WEBHOOK_DELIVERIES_KEPT = timedelta(days=7)
CONNECT_SESSIONS_KEPT = timedelta(days=30)


def clean_up(svc: Services) -> None:
    now = utcnow()
    with svc.db.session() as session:
        session.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.received_at < now - WEBHOOK_DELIVERIES_KEPT
            )
        )
        session.execute(delete(OAuthState).where(OAuthState.expires_at < now))
        session.execute(
            delete(ConnectSession).where(ConnectSession.expires_at < now - CONNECT_SESSIONS_KEPT)
        )
        outbox.delete_older_than(
            session, now - timedelta(days=svc.settings.INTEGRATOR_EVENTS_RETENTION_DAYS)
        )
