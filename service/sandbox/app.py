"""The Close sandbox's HTTP surface (a Flask app of its own): OAuth, /me/, scheduling links,
rate limits with RateLimit headers, fault injection, and /_sandbox/* inspection endpoints."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from service.sandbox.state import Grant, SandboxState, template_tag

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
LIMITS = {"name": 255, "url": 2048, "description": 5000, "source_id": 255, "source_type": 100}


def group_of(path: str) -> str:
    if path.startswith("/api/v1/scheduling_link/integration/"):
        return "scheduling_link_integration"
    if path.startswith("/api/v1/scheduling_link/"):
        return "scheduling_link"
    if path.startswith("/api/v1/shared_scheduling_link"):
        return "shared_scheduling_link"
    return "me"


def validation_error(errors: dict[str, str]) -> tuple[Response, int]:
    return jsonify({"error": "Validation error", "field-errors": errors}), 400


def validate_link(
    body: dict[str, Any], *, integration: bool, partial: bool = False
) -> dict[str, str]:
    errors: dict[str, str] = {}
    required = ["name", "url"] + (["source_id"] if integration else [])
    for name in required:
        if not partial and (
            body.get(name) is None or (isinstance(body.get(name), str) and not body[name].strip())
        ):
            errors[name] = "This field is required."
    for name, limit in LIMITS.items():
        value = body.get(name)
        if value is None or name in errors:
            continue
        if not isinstance(value, str):
            errors[name] = "Must be a string."
        elif len(value) > limit:
            errors[name] = f"Ensure this field has no more than {limit} characters."
    url = body.get("url")
    if isinstance(url, str) and "url" not in errors:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or " " in url:
            errors["url"] = "Enter a valid URL."
    duration = body.get("duration_in_minutes")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int) or not 0 < duration <= 1440
    ):
        errors["duration_in_minutes"] = "Must be a positive whole number of minutes (at most 1440)."
    return errors


def create_sandbox_app(state: SandboxState | None = None) -> Flask:
    app = Flask(__name__, template_folder="templates")
    state = state or SandboxState()
    app.extensions["sandbox"] = state

    def json_body() -> dict[str, Any] | None:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None

    # OAuth ------------------------------------------------------------------------------

    def authorize_params() -> tuple[dict[str, str], str | None]:
        source = request.values
        params = {
            k: source.get(k, "") for k in ("client_id", "response_type", "redirect_uri", "state")
        }
        if params["client_id"] not in state.config.clients:
            return params, "Unknown client_id: this application is not registered with Close."
        if params["response_type"] != "code":
            return params, "response_type must be 'code'."
        parts = urlsplit(params["redirect_uri"])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return params, "redirect_uri must be an absolute URL."
        if parts.scheme == "http" and parts.hostname not in LOOPBACK:
            return params, "redirect_uri must use https (http is allowed for loopback only)."
        return params, None

    def consent_page(
        params: dict[str, str], error: str | None = None, status: int = 200
    ) -> tuple[str, int]:
        return (
            render_template(
                "consent.html",
                params=params,
                users=list(state.users.values()),
                orgs=state.orgs,
                error=error,
            ),
            status,
        )

    @app.get("/oauth2/authorize/")
    def authorize_page() -> Any:
        params, problem = authorize_params()
        if problem:
            return render_template("sandbox_error.html", message=problem), 400
        return consent_page(params)

    @app.post("/oauth2/authorize/")
    def authorize_decide() -> Any:
        params, problem = authorize_params()
        if problem:
            return render_template("sandbox_error.html", message=problem), 400
        target = params["redirect_uri"]
        sep = "&" if "?" in target else "?"
        if request.form.get("decision") != "approve":
            return Response(
                status=302,
                headers={
                    "Location": target
                    + sep
                    + urlencode({"error": "access_denied", "state": params["state"]})
                },
            )
        user = state.users.get(request.form.get("user_id", ""))
        org_id = request.form.get("organization_id", "")
        if user is None:
            return consent_page(params, "Choose who you are signed in as.", 400)
        if org_id not in user["organizations"]:
            return consent_page(
                params, f"{user['first_name']} is not a member of that organization.", 400
            )
        code = state.create_code(params["client_id"], params["redirect_uri"], user["id"], org_id)
        return Response(
            status=302,
            headers={
                "Location": target + sep + urlencode({"code": code, "state": params["state"]})
            },
        )

    def client_credentials() -> tuple[str | None, str | None]:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                return client_id, secret
            except (ValueError, UnicodeDecodeError):
                return None, None
        return request.form.get("client_id"), request.form.get("client_secret")

    def oauth_error(error: str, status: int = 400, description: str = "") -> tuple[Response, int]:
        return jsonify({"error": error, "error_description": description or error}), status

    @app.post("/oauth2/token/")
    def token() -> Any:
        client_id, secret = client_credentials()
        if not state.client_ok(client_id, secret):
            return oauth_error("invalid_client", 401, "client authentication failed")
        assert client_id is not None
        grant_type = request.form.get("grant_type")
        if grant_type == "authorization_code":
            result = state.exchange_code(
                request.form.get("code", ""), client_id, request.form.get("redirect_uri")
            )
        elif grant_type == "refresh_token":
            result = state.refresh(request.form.get("refresh_token", ""), client_id)
        else:
            return oauth_error("unsupported_grant_type")
        if isinstance(result, str):
            return oauth_error(result, 400, "the grant is invalid, expired, used or revoked")
        response = jsonify(result)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/oauth2/revoke/")
    def revoke() -> Any:
        client_id, secret = client_credentials()
        if not state.client_ok(client_id, secret):
            return oauth_error("invalid_client", 401)
        state.revoke_token(request.form.get("token", ""))
        return Response(status=200)

    # API plumbing -----------------------------------------------------------------------

    Handler = Callable[..., Any]

    def api(route_key: str) -> Callable[[Handler], Handler]:
        """Auth, rate limit, faults and latency around one API endpoint."""

        def decorate(view: Handler) -> Handler:
            @wraps(view)
            def wrapper(**kwargs: Any) -> Any:
                with state.lock:
                    state.calls[f"{request.method} {route_key}"] += 1
                header = request.headers.get("Authorization", "")
                if not header.startswith("Bearer "):
                    return jsonify(
                        error="Authentication required: send Authorization: Bearer <token>"
                    ), 401
                grant = state.authenticate(header[7:])
                if isinstance(grant, str):
                    return jsonify(error=grant), 401
                group = group_of(request.path)
                allowed, headers, wait = state.take(group, header[7:], grant.org_id)
                if not allowed:
                    body = {
                        "error": {
                            "rate_reset": round(wait, 3),
                            "message": "API call count exceeded for this period",
                            "rate_limit": state.config.rate_limit_per_token,
                            "rate_window": 1,
                            "rate_limit_type": "key",
                        }
                    }
                    response = jsonify(body)
                    response.status_code = 429
                    response.headers.update(headers)
                    response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                    return response
                faults = state.faults
                latency = max(state.config.latency_ms, faults.latency_ms)
                if latency:
                    time.sleep(latency / 1000)
                injected = _inject(state, group)
                if injected == "error":
                    status = faults.error_status or random.choice([500, 502, 503])  # noqa: S311
                    return _with(jsonify(error="injected server error"), status, headers)
                if injected == "fail_next":
                    return _with(jsonify(error="injected failure"), faults.fail_status, headers)
                if injected == "timeout":
                    time.sleep(faults.timeout_seconds)
                    if not faults.timeout_applies_write:
                        return _with(jsonify(error="gateway timeout"), 504, headers)
                g.grant = grant
                result = view(**kwargs)
                response = app.make_response(result)
                response.headers.update(headers)
                return response

            return wrapper

        return decorate

    # API endpoints ----------------------------------------------------------------------

    @app.get("/api/v1/me/")
    @api("/me/")
    def me() -> Any:
        grant: Grant = g.grant
        user = state.users[grant.user_id]
        return jsonify(
            {
                "id": user["id"],
                "first_name": user["first_name"],
                "last_name": user["last_name"],
                "email": user["email"],
                "organizations": [state.orgs[o] for o in user["organizations"] if o in state.orgs],
            }
        )

    @app.get("/api/v1/user/")
    @api("/user/")
    def org_users() -> Any:
        grant: Grant = g.grant
        members = [
            {k: u[k] for k in ("id", "first_name", "last_name", "email")}
            for u in state.users.values()
            if grant.org_id in u["organizations"]
        ]
        return jsonify(data=members, has_more=False)

    @app.post("/api/v1/scheduling_link/integration/")
    @api("/scheduling_link/integration/")
    def upsert_integration() -> Any:
        body = json_body()
        if body is None:
            return jsonify(error="Request body must be a JSON object."), 400
        errors = validate_link(body, integration=True)
        if errors:
            return validation_error(errors)
        return jsonify(state.upsert_integration(g.grant, body))

    @app.delete("/api/v1/scheduling_link/integration/<path:source_id>/")
    @api("/scheduling_link/integration/{source_id}/")
    def delete_integration(source_id: str) -> Any:
        if not state.delete_integration(g.grant, source_id):
            return jsonify(error="Not found."), 404
        return Response(status=204)

    @app.get("/api/v1/scheduling_link/")
    @api("/scheduling_link/")
    def list_links() -> Any:
        try:
            skip = max(0, int(request.args.get("_skip", 0)))
            limit = min(100, max(1, int(request.args.get("_limit", 100))))
        except ValueError:
            return validation_error({"_skip": "Must be an integer."})
        grant: Grant = g.grant
        found = state.user_links(grant.user_id, grant.org_id)
        return jsonify(data=found[skip : skip + limit], has_more=skip + limit < len(found))

    @app.post("/api/v1/scheduling_link/")
    @api("/scheduling_link/")
    def create_manual() -> Any:
        body = json_body()
        if body is None:
            return jsonify(error="Request body must be a JSON object."), 400
        errors = validate_link(body, integration=False)
        if errors:
            return validation_error(errors)
        grant: Grant = g.grant
        fields = {k: body[k] for k in ("description", "duration_in_minutes") if k in body}
        return jsonify(
            state.add_manual_link(grant.user_id, grant.org_id, body["name"], body["url"], **fields)
        )

    def own_link(link_id: str) -> dict[str, Any] | tuple[Response, int]:
        grant: Grant = g.grant
        with state.lock:
            link = state._links.get(link_id)
        if (
            link is None
            or link["user_id"] != grant.user_id
            or link["organization_id"] != grant.org_id
        ):
            return jsonify(error="Not found."), 404
        return link

    @app.get("/api/v1/scheduling_link/<link_id>/")
    @api("/scheduling_link/{id}/")
    def get_link(link_id: str) -> Any:
        link = own_link(link_id)
        return link if isinstance(link, tuple) else jsonify(link)

    @app.put("/api/v1/scheduling_link/<link_id>/")
    @api("/scheduling_link/{id}/")
    def update_link(link_id: str) -> Any:
        link = own_link(link_id)
        if isinstance(link, tuple):
            return link
        if link["source"] != "MANUAL":
            return jsonify(
                error="Links created by an integration are managed through that integration."
            ), 400
        body = json_body()
        if body is None:
            return jsonify(error="Request body must be a JSON object."), 400
        errors = validate_link(body, integration=False, partial=True)
        if errors:
            return validation_error(errors)
        with state.lock:
            link.update(
                {
                    k: body[k]
                    for k in ("name", "url", "description", "duration_in_minutes")
                    if k in body
                }
            )
        return jsonify(link)

    @app.delete("/api/v1/scheduling_link/<link_id>/")
    @api("/scheduling_link/{id}/")
    def delete_manual(link_id: str) -> Any:
        link = own_link(link_id)
        if isinstance(link, tuple):
            return link
        if link["source"] != "MANUAL":
            return jsonify(
                error="Links created by an integration are managed through that integration."
            ), 400
        state.delete_link(link_id)
        return Response(status=204)

    # Shared links -----------------------------------------------------------------------

    def can_customize() -> bool:
        return bool(state.users[g.grant.user_id]["can_manage_customizations"])

    @app.get("/api/v1/shared_scheduling_link/")
    @api("/shared_scheduling_link/")
    def list_shared() -> Any:
        with state.lock:
            found = [
                s for s in state.shared_links.values() if s["organization_id"] == g.grant.org_id
            ]
        return jsonify(data=found, has_more=False)

    @app.post("/api/v1/shared_scheduling_link/")
    @api("/shared_scheduling_link/")
    def create_shared() -> Any:
        if not can_customize():
            return jsonify(error="You need the Manage Customizations permission."), 403
        body = json_body()
        if body is None or not isinstance(body.get("name"), str) or not body["name"].strip():
            return validation_error({"name": "This field is required."})
        if len(body["name"]) > 255:
            return validation_error({"name": "Ensure this field has no more than 255 characters."})
        shared = {
            "id": "shsl_" + random.Random().getrandbits(64).to_bytes(8, "big").hex(),  # noqa: S311
            "name": body["name"],
            "description": body.get("description"),
            "template_tag": template_tag(body["name"]),
            "organization_id": g.grant.org_id,
        }
        with state.lock:
            state.shared_links[shared["id"]] = shared
        return jsonify(shared)

    def shared_of_org(shared_id: str) -> dict[str, Any] | None:
        with state.lock:
            shared = state.shared_links.get(shared_id)
        return shared if shared and shared["organization_id"] == g.grant.org_id else None

    @app.get("/api/v1/shared_scheduling_link/<shared_id>/")
    @api("/shared_scheduling_link/{id}/")
    def get_shared(shared_id: str) -> Any:
        shared = shared_of_org(shared_id)
        return jsonify(shared) if shared else (jsonify(error="Not found."), 404)

    @app.put("/api/v1/shared_scheduling_link/<shared_id>/")
    @api("/shared_scheduling_link/{id}/")
    def update_shared(shared_id: str) -> Any:
        if not can_customize():
            return jsonify(error="You need the Manage Customizations permission."), 403
        shared = shared_of_org(shared_id)
        if shared is None:
            return jsonify(error="Not found."), 404
        body = json_body() or {}
        with state.lock:
            if isinstance(body.get("name"), str) and body["name"].strip():
                shared["name"], shared["template_tag"] = body["name"], template_tag(body["name"])
            if "description" in body:
                shared["description"] = body["description"]
        return jsonify(shared)

    @app.delete("/api/v1/shared_scheduling_link/<shared_id>/")
    @api("/shared_scheduling_link/{id}/")
    def delete_shared(shared_id: str) -> Any:
        if not can_customize():
            return jsonify(error="You need the Manage Customizations permission."), 403
        if shared_of_org(shared_id) is None:
            return jsonify(error="Not found."), 404
        with state.lock:
            state.shared_links.pop(shared_id, None)
            for key in [k for k in state.associations if k[1] == shared_id]:
                del state.associations[key]
        return Response(status=204)

    @app.post("/api/v1/shared_scheduling_link_association/")
    @api("/shared_scheduling_link_association/")
    def map_shared() -> Any:
        body = json_body() or {}
        errors = {
            k: "This field is required."
            for k in ("organization_id", "shared_scheduling_link_id", "user_id")
            if not body.get(k)
        }
        targets = [k for k in ("user_scheduling_link_id", "url") if body.get(k)]
        if len(targets) != 1:
            errors["user_scheduling_link_id"] = (
                "Give exactly one of user_scheduling_link_id or url."
            )
        if errors:
            return validation_error(errors)
        if (
            body["organization_id"] != g.grant.org_id
            or shared_of_org(body["shared_scheduling_link_id"]) is None
        ):
            return jsonify(error="Not found."), 404
        owner_ok = False
        if "user_scheduling_link_id" in targets:
            with state.lock:
                link = state._links.get(body["user_scheduling_link_id"])
            if link is None or link["user_id"] != body["user_id"]:
                return validation_error({"user_scheduling_link_id": "Not a link of that user."})
            owner_ok = link["user_id"] == g.grant.user_id
        if not (can_customize() or owner_ok):
            return jsonify(error="You need the Manage Customizations permission."), 403
        association = {
            k: body[k]
            for k in ("organization_id", "shared_scheduling_link_id", "user_id", *targets)
        }
        with state.lock:
            state.associations[
                (body["organization_id"], body["shared_scheduling_link_id"], body["user_id"])
            ] = association
        return jsonify(association)

    @app.post("/api/v1/shared_scheduling_link_association/unmap/")
    @api("/shared_scheduling_link_association/unmap/")
    def unmap_shared() -> Any:
        body = json_body() or {}
        key = (
            body.get("organization_id"),
            body.get("shared_scheduling_link_id"),
            body.get("user_id"),
        )
        if not all(key):
            return validation_error(
                {
                    "shared_scheduling_link_id": "organization_id, shared_scheduling_link_id and user_id are required."
                }
            )
        if not (can_customize() or body.get("user_id") == g.grant.user_id):
            return jsonify(error="You need the Manage Customizations permission."), 403
        with state.lock:
            removed = state.associations.pop(key, None)  # type: ignore[arg-type]
        return (jsonify(ok=True), 200) if removed else (jsonify(error="Not found."), 404)

    # Inspection and control (tests, benchmarks, humans) ---------------------------------

    @app.get("/_sandbox/state")
    def inspect_state() -> Any:
        return jsonify(state.snapshot())

    @app.get("/_sandbox/calls")
    def inspect_calls() -> Any:
        with state.lock:
            return jsonify(dict(state.calls))

    @app.post("/_sandbox/reset")
    def reset() -> Any:
        state.reset()
        return jsonify(ok=True)

    @app.post("/_sandbox/reset-calls")
    def reset_calls() -> Any:
        state.reset_calls()
        return jsonify(ok=True)

    @app.post("/_sandbox/faults")
    def set_faults() -> Any:
        body = json_body() or {}
        try:
            state.set_faults(**body)
        except TypeError as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(ok=True)

    @app.post("/_sandbox/config")
    def set_config() -> Any:
        body = json_body() or {}
        with state.lock:
            for key, value in body.items():
                if not hasattr(state.config, key) or key == "clients":
                    return jsonify(error=f"unknown setting {key!r}"), 400
                setattr(state.config, key, value)
        return jsonify(ok=True)

    @app.post("/_sandbox/revoke-grant")
    def revoke_grant() -> Any:
        body = json_body() or {}
        return jsonify(
            revoked=state.revoke_grant(str(body.get("user_id", "")), body.get("client_id"))
        )

    @app.post("/_sandbox/expire-tokens")
    def expire_tokens() -> Any:
        state.expire_access_tokens()
        return jsonify(ok=True)

    @app.post("/_sandbox/users")
    def add_users() -> Any:
        body = json_body() or {}
        for org in body.get("orgs", []):
            state.add_org(org["id"], org.get("name", org["id"]))
        for user in body.get("users", []):
            state.add_user(
                user["id"],
                user.get("first_name", "Test"),
                user.get("last_name", "User"),
                user.get("email", f"{user['id']}@example.com"),
                list(user.get("organizations", [])),
                bool(user.get("can_manage_customizations", False)),
            )
        return jsonify(ok=True)

    @app.post("/_sandbox/issue-tokens")
    def issue_tokens() -> Any:
        body = json_body() or {}
        client_id = body.get("client_id") or next(iter(state.config.clients))
        return jsonify(state.issue_tokens(client_id, body["user_id"], body["organization_id"]))

    @app.post("/_sandbox/links/<link_id>/delete")
    def human_delete(link_id: str) -> Any:
        return jsonify(deleted=state.delete_link(link_id))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith(("/api/", "/_sandbox/", "/oauth2/token", "/oauth2/revoke")):
            return jsonify(error=exc.description or exc.name), exc.code
        return render_template("sandbox_error.html", message=exc.description or exc.name), exc.code

    return app


def _with(response: Response, status: int, headers: dict[str, str]) -> Response:
    response.status_code = status
    response.headers.update(headers)
    return response


def _inject(state: SandboxState, group: str) -> str | None:
    faults = state.faults
    if not faults.applies_to(group):
        return None
    with state.lock:
        if faults.fail_next > 0:
            faults.fail_next -= 1
            return "fail_next"
        roll = state.rng.random()
    if roll < faults.error_rate:
        return "error"
    if roll < faults.error_rate + faults.timeout_rate:
        return "timeout"
    return None
