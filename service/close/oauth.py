"""Close's OAuth endpoints through Authlib: authorize URL, code exchange, refresh, revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from requests import RequestException

from service.infra.db import utcnow


class OAuthFailure(Exception):
    """Close's token endpoint refused or could not be reached. `error` is the OAuth code."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error


@dataclass(frozen=True, repr=False)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_at: datetime
    user_id: str | None
    organization_id: str | None

    def __repr__(self) -> str:  # the tokens themselves never reach a log or a traceback
        return (
            f"<TokenSet user={self.user_id} org={self.organization_id} expires={self.expires_at}>"
        )

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> TokenSet:
        try:
            expires_in = float(data.get("expires_in") or 3600)
            return cls(
                access_token=str(data["access_token"]),
                refresh_token=str(data["refresh_token"]),
                expires_at=utcnow() + timedelta(seconds=expires_in),
                user_id=data.get("user_id"),
                organization_id=data.get("organization_id"),
            )
        except KeyError as exc:
            raise OAuthFailure("invalid_response", f"token response lacks {exc.args[0]}") from None


class CloseOAuth:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        authorize_url: str,
        token_url: str,
        revoke_url: str,
        redirect_uri: str,
        timeout: float = 10.0,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.revoke_url = revoke_url
        self.redirect_uri = redirect_uri
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<CloseOAuth client_id={self.client_id}>"

    def _session(self) -> OAuth2Session:
        # Close documents client credentials in the form body.
        return OAuth2Session(
            self.client_id,
            self._client_secret,
            redirect_uri=self.redirect_uri,
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
            # Authlib revokes with HTTP Basic by default; Close documents form fields there too.
            revocation_endpoint_auth_method="client_secret_post",
        )

    def authorization_url(self, state: str) -> str:
        with self._session() as session:
            url, _ = session.create_authorization_url(self.authorize_url, state=state)
        return str(url)

    def exchange_code(self, code: str) -> TokenSet:
        with self._session() as session:
            data = self._call(
                lambda: session.fetch_token(
                    self.token_url,
                    grant_type="authorization_code",
                    code=code,
                    timeout=self.timeout,
                )
            )
        return TokenSet.from_response(data)

    def refresh(self, refresh_token: str) -> TokenSet:
        with self._session() as session:
            data = self._call(
                lambda: session.refresh_token(
                    self.token_url, refresh_token=refresh_token, timeout=self.timeout
                )
            )
        return TokenSet.from_response(data)

    def revoke(self, token: str) -> None:
        with self._session() as session:
            response = self._call(
                lambda: session.revoke_token(
                    self.revoke_url,
                    token=token,
                    token_type_hint="refresh_token",  # noqa: S106 - a hint name
                    timeout=self.timeout,
                )
            )
        if response.status_code >= 400:
            raise OAuthFailure("revoke_failed", f"Close answered {response.status_code}")

    @staticmethod
    def _call(fn):
        try:
            return fn()
        except OAuthError as exc:
            raise OAuthFailure(exc.error or "oauth_error", exc.description or "") from None
        except RequestException as exc:
            raise OAuthFailure("temporarily_unavailable", type(exc).__name__) from None
        except ValueError as exc:  # a non-JSON answer
            raise OAuthFailure("invalid_response", str(exc)[:200]) from None
