"""One Alembic head, and upgrade → downgrade → upgrade round-trips on SQLite and PostgreSQL;
the migrated schema matches the models (no pending autogenerate diff)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.infra import migrate
from service.infra.db import Base
from tests.conftest import PG_ADMIN_URL


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = f"linksync_mig_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_single_head(tmp_path: Path) -> None:
    assert len(migrate.heads(f"sqlite:///{tmp_path / 'x.db'}")) == 1


def test_upgrade_downgrade_upgrade_round_trip(empty_db: str) -> None:
    migrate.upgrade(empty_db)
    engine = create_engine(empty_db)
    try:
        assert "connections" in inspect(engine).get_table_names()
        migrate.downgrade(empty_db, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(empty_db)
        assert migrate.current_revision(engine) in migrate.heads(empty_db)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()
