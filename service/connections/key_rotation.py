"""Key rotation: re-encrypt every stored token with the newest key."""

from __future__ import annotations

from sqlalchemy import or_, select

from service.infra.crypto import TokenCipher, TokenDecryptError
from service.infra.db import Database
from service.infra.models import Connection
from service.settings import Settings

BATCH = 500


def rotate_all(settings: Settings) -> tuple[int, list[int]]:
    """Re-encrypt in batches, one transaction per batch. Returns how many connections were
    re-encrypted, and the ids of those no configured key decrypts (left untouched)."""
    cipher = TokenCipher(settings.TOKEN_ENCRYPTION_KEYS)
    db = Database(settings.database_url)
    count = 0
    undecryptable: list[int] = []
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
                    return count, undecryptable
                for connection in batch:
                    try:
                        access = _rotate(cipher, connection.access_token_enc)
                        refresh = _rotate(cipher, connection.refresh_token_enc)
                    except TokenDecryptError:
                        undecryptable.append(connection.id)
                        continue
                    connection.access_token_enc, connection.refresh_token_enc = access, refresh
                    count += 1
                last_id = batch[-1].id
    finally:
        db.dispose()


def _rotate(cipher: TokenCipher, value: str | None) -> str | None:
    return cipher.rotate(value) if value else value
