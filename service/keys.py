"""Key rotation: re-encrypt every stored token with the newest key."""

from __future__ import annotations

from sqlalchemy import or_, select

from service.crypto import TokenCipher
from service.db import Database
from service.models import Connection
from service.settings import Settings

BATCH = 500


def rotate_all(settings: Settings) -> int:
    """Re-encrypt in batches, one transaction per batch; returns how many connections."""
    cipher = TokenCipher(settings.TOKEN_ENCRYPTION_KEYS)
    db = Database(settings.database_url)
    count = 0
    last_id = 0
    try:
        while True:
            with db.session() as session:
                batch = session.scalars(
                    select(Connection)
                    .where(
                        Connection.id > last_id,
                        or_(
                            Connection.access_token_enc.is_not(None),
                            Connection.refresh_token_enc.is_not(None),
                        ),
                    )
                    .order_by(Connection.id)
                    .limit(BATCH)
                    .with_for_update()
                ).all()
                if not batch:
                    return count
                for connection in batch:
                    if connection.access_token_enc:
                        connection.access_token_enc = cipher.rotate(connection.access_token_enc)
                    if connection.refresh_token_enc:
                        connection.refresh_token_enc = cipher.rotate(connection.refresh_token_enc)
                    count += 1
                last_id = batch[-1].id
    finally:
        db.dispose()
