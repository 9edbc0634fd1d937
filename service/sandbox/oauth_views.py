"""OAuth 2.0 as Close does it: the consent page (the user picks an organization), the token
endpoint (authorization code and rotating refresh tokens) and revocation."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, jsonify, render_template, request

from service.sandbox.errors import OAuthError, SandboxError
from service.sandbox.state import SandboxState
from service.sandbox.traffic import admit, hold
from service.sandbox.validation import url_problem

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
GRANT_TYPES = ("authorization_code", "refresh_token")
DEFAULT_CONSENT_USER = "user_jane"  # preselected, so a flow that only clicks Approve is Jane's
AUTHORIZE_PARAMS = ("client_id", "response_type", "redirect_uri", "state")
Answer = Response | tuple[str, int]


def oauth_blueprint(state: SandboxState) -> Blueprint:
    bp = Blueprint("oauth", __name__)

    # Consent page ------------------------------------------------------------------------

    def authorize_request() -> tuple[dict[str, str], str | None]:
        """The authorization request (query or form) and what is wrong with it, if anything."""
        params = {k: request.values.get(k, "") for k in AUTHORIZE_PARAMS}
        if not state.client_known(params["client_id"]):
            return params, "Unknown client_id: this application is not registered with Close."
        if params["response_type"] != "code":
            return params, "response_type must be 'code'."
        return params, redirect_uri_problem(params["redirect_uri"])

    def consent_page(
        params: dict[str, str], error: str | None = None, status: int = 200
    ) -> tuple[str, int]:
        users, orgs = state.directory()
        names = {o.id: o.name for o in orgs}
        page = render_template(
            "consent.html",
            params=params,
            users=users,
            orgs=orgs,
            memberships={
                u.id: ", ".join(names[o] for o in u.organizations if o in names) for u in users
            },
            selected_user=request.form.get("user_id", DEFAULT_CONSENT_USER),
            selected_org=request.form.get("organization_id", ""),
            error=error,
        )
        return page, status

    def bad_request(message: str) -> tuple[str, int]:
        return render_template("sandbox_error.html", message=message), 400

    @bp.get("/oauth2/authorize/")
    def authorize_page() -> Answer:
        params, problem = authorize_request()
        return bad_request(problem) if problem else consent_page(params)

    @bp.post("/oauth2/authorize/")
    def authorize_decision() -> Answer:
        params, problem = authorize_request()
        if problem:
            return bad_request(problem)
        decision = request.form.get("decision")
        if decision == "decline":
            return back_to_client(params, error="access_denied")
        if decision != "approve":
            return consent_page(params, "Choose Approve or Decline.", 400)
        try:
            code = state.create_code(
                params["client_id"],
                params["redirect_uri"],
                request.form.get("user_id", ""),
                request.form.get("organization_id", ""),
            )
        except SandboxError as exc:
            return consent_page(params, exc.message, 400)
        return back_to_client(params, code=code)

    # Token endpoint and revocation -------------------------------------------------------

    @bp.post("/oauth2/token/")
    def token() -> Response:
        grant_type = request.form.get("grant_type", "")
        if grant_type in GRANT_TYPES:
            state.count(f"oauth:{grant_type}")
        hold(state, "oauth")
        client_id = authenticated_client()
        if client_id is None:
            return oauth_error(OAuthError("invalid_client", "Client authentication failed.", 401))
        if grant_type not in GRANT_TYPES:
            return oauth_error(
                OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported.")
            )
        credential_name = "code" if grant_type == "authorization_code" else "refresh_token"
        credential = request.form.get(credential_name, "")
        if not credential:
            return oauth_error(OAuthError("invalid_request", f"{credential_name} is required."))
        refused = admit(state, "oauth", *state.oauth_subject(client_id, grant_type, credential))
        if refused is not None:
            return refused
        try:
            if grant_type == "authorization_code":
                tokens = state.exchange_code(
                    credential, client_id, request.form.get("redirect_uri")
                )
            else:
                tokens = state.refresh(credential, client_id)
        except OAuthError as exc:
            return oauth_error(exc)
        response = jsonify(tokens)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    @bp.post("/oauth2/revoke/")
    def revoke() -> Response:
        state.count("oauth:revoke")
        hold(state, "oauth")
        client_id = form_client()
        if client_id is None:
            return oauth_error(
                OAuthError(
                    "invalid_client",
                    "Client authentication failed: send client_id and client_secret as form "
                    "fields (HTTP Basic is not accepted here).",
                    401,
                )
            )
        token = request.form.get("token", "")
        refused = admit(state, "oauth", *state.oauth_subject(client_id, "revoke", token))
        if refused is not None:
            return refused
        state.revoke_token(token, client_id)
        return Response(status=200)  # RFC 7009: 200 whether or not the token was valid

    # Helpers -----------------------------------------------------------------------------

    def authenticated_client() -> str | None:
        """The client_id, if the form fields or HTTP Basic credentials are right (token
        endpoint)."""
        header = request.headers.get("Authorization", "")
        if header[:6].lower() != "basic ":
            return form_client()
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        return client_id if client_id and state.client_ok(client_id, secret) else None

    def form_client() -> str | None:
        """The client_id, if the `client_id` and `client_secret` form fields are right. Close
        documents revocation with form fields only; an Authorization header is ignored."""
        client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
        return client_id if client_id and state.client_ok(client_id, secret) else None

    return bp


def redirect_uri_problem(uri: str) -> str | None:
    if not uri:
        return "redirect_uri is required."
    problem = url_problem(uri)
    if problem:
        return f"redirect_uri: {problem}"
    parts = urlsplit(uri)
    if parts.fragment:
        return "redirect_uri must not contain a fragment."
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return "redirect_uri must use https (this sandbox allows http on loopback only)."
    return None


def back_to_client(params: dict[str, str], **result: str) -> Response:
    """302 to the client's redirect_uri with `result` and the state it sent (if any)."""
    if params["state"]:
        result["state"] = params["state"]
    parts = urlsplit(params["redirect_uri"])
    query = "&".join(q for q in (parts.query, urlencode(result)) if q)
    return Response(status=302, headers={"Location": urlunsplit(parts._replace(query=query))})


def oauth_error(exc: OAuthError) -> Response:
    response = jsonify({"error": exc.error, "error_description": exc.description})
    response.status_code = exc.status
    response.headers["Cache-Control"] = "no-store"
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Close"'
    return response
