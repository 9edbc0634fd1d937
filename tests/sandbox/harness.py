"""A small client that drives the Close sandbox over HTTP the way a Close client would, and a
clock the tests can move forward."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from service.sandbox.server import SandboxServer
from service.sandbox.state import SandboxState

CLIENT_ID = "linksync-sandbox"
CLIENT_SECRET = "sandbox-secret"
REDIRECT = "http://127.0.0.1:9/callback"


class ShiftedClock:
    """Monotonic time that a test can jump forward (code expiry without sleeping ten minutes)
    or freeze (rate limits counted exactly, however slow the machine)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        if self.frozen is not None:
            self.frozen += seconds

    def freeze(self) -> None:
        self.frozen = self()

    def thaw(self) -> None:
        if self.frozen is not None:
            self.offset = max(self.offset, self.frozen - time.monotonic())
            self.frozen = None


@dataclass
class Sandbox:
    server: SandboxServer
    clock: ShiftedClock
    http: requests.Session

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self) -> SandboxState:
        return self.server.state

    def authorize_params(self, **overrides: str) -> dict[str, str]:
        params = {
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "state": "s-1",
        }
        params.update(overrides)
        return params

    def consent(
        self,
        decision: str = "approve",
        user: str = "user_jane",
        org: str = "orga_acme",
        **overrides: str,
    ) -> requests.Response:
        """POST the consent form as the browser would (no redirect followed)."""
        return self.http.post(
            f"{self.url}/oauth2/authorize/",
            data={
                **self.authorize_params(**overrides),
                "decision": decision,
                "user_id": user,
                "organization_id": org,
            },
            allow_redirects=False,
            timeout=5,
        )

    def authorize(self, **kwargs: str) -> dict[str, list[str]]:
        """Approve or decline; the query string Close redirected back with."""
        answer = self.consent(**kwargs)
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT)
        return parse_qs(urlsplit(location).query)

    def token(self, **form: str) -> requests.Response:
        data = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
        return self.http.post(f"{self.url}/oauth2/token/", data=data, timeout=5)

    def revoke(self, token: str, **form: str) -> requests.Response:
        data = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token": token, **form}
        return self.http.post(f"{self.url}/oauth2/revoke/", data=data, timeout=5)

    def issue(
        self, user: str = "user_jane", org: str = "orga_acme", client_id: str = CLIENT_ID
    ) -> dict[str, Any]:
        return self.state.issue_tokens(client_id, user, org)

    def api(
        self, method: str, path: str, access: str | None, timeout: float = 10, **kwargs: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {access}"} if access else {}
        return self.http.request(
            method, f"{self.url}/api/v1{path}", headers=headers, timeout=timeout, **kwargs
        )

    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, f"{self.url}/_sandbox/{path}", timeout=5, **kwargs)
