"""Close's OAuth endpoints through Authlib: authorize URL, code exchange, refresh, revoke."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from requests import RequestException, Response

from service.infra.db import utcnow


class OAuthFailure(Exception):
    """Close's token endpoint refused or could not be reached. `error` is the OAuth code."""

    def __init__(self, error: str, description: str = "", *, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.status = status  # the token endpoint's HTTP status, when it answered

    @property
    def grant_gone(self) -> bool:
        """Close refused the credential itself: `invalid_grant`, or any other 4xx but a 429
        (a 429, a 5xx or no answer at all are worth retrying later)."""
        if self.error == "invalid_grant":
            return True
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


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
    def from_response(cls, data: dict[str, Any], previous_refresh: str | None = None) -> TokenSet:
        """`previous_refresh`: the refresh token just used, kept when the answer carries none
        (RFC 6749 6: the server MAY issue a new one); an exchange without one fails clearly."""
        refresh = data.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            if previous_refresh is None:
                raise OAuthFailure("invalid_response", "token response lacks refresh_token")
            refresh = previous_refresh
        try:
            expires_in = float(data.get("expires_in") or 3600)
            return cls(
                access_token=str(data["access_token"]),
                refresh_token=refresh,
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
                session,
                lambda: session.fetch_token(
                    self.token_url,
                    grant_type="authorization_code",
                    code=code,
                    timeout=self.timeout,
                ),
            )
        return TokenSet.from_response(data)

    def refresh(self, refresh_token: str) -> TokenSet:
        with self._session() as session:
            data = self._call(
                session,
                lambda: session.refresh_token(
                    self.token_url, refresh_token=refresh_token, timeout=self.timeout
                ),
            )
        return TokenSet.from_response(data, previous_refresh=refresh_token)

    def revoke(self, token: str) -> None:
        with self._session() as session:
            response = self._call(
                session,
                lambda: session.revoke_token(
                    self.revoke_url,
                    token=token,
                    token_type_hint="refresh_token",  # noqa: S106 - a hint name
                    timeout=self.timeout,
                ),
            )
        if response.status_code >= 400:
            raise OAuthFailure("revoke_failed", f"Close answered {response.status_code}")

    @staticmethod
    def _call(session: OAuth2Session, fn: Callable[[], Any]) -> Any:
        """Run one token-endpoint call; any failure becomes an OAuthFailure carrying the HTTP
        status Close answered (seen through Authlib's response hooks), if it answered."""
        seen: list[int] = []

        def note(resp: Response) -> Response:
            seen.append(resp.status_code)
            return resp

        session.register_compliance_hook("access_token_response", note)
        session.register_compliance_hook("refresh_token_response", note)
        try:
            return fn()
        except OAuthError as exc:
            raise OAuthFailure(
                exc.error or "oauth_error",
                exc.description or "",
                status=seen[-1] if seen else None,
            ) from None
        except RequestException as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise OAuthFailure(
                "temporarily_unavailable" if status is None else f"http_{status}",
                type(exc).__name__,
                status=status if status is not None else (seen[-1] if seen else None),
            ) from None
        except ValueError as exc:  # a non-JSON answer
            raise OAuthFailure(
                "invalid_response", str(exc)[:200], status=seen[-1] if seen else None
            ) from None
