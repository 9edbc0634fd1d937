"""Request-scoped access to the process's Services and a per-request database session."""

from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from service.services import Services


def services() -> Services:
    svc: Services = current_app.extensions["linksync"]
    return svc


def db_session() -> Session:
    """The request's unit of work. The view commits; teardown closes (rolling back the rest)."""
    if "db_session" not in g:
        g.db_session = services().db.sessionmaker()
    session: Session = g.db_session
    return session


def close_db_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
