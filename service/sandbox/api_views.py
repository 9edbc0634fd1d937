"""Close's REST API as this service uses it, under /api/v1: identity (`/me/`, `/user/`,
`/organization/{id}/`), user scheduling links (the OAuth-only integration endpoints and the MANUAL
ones), shared links and their mappings.

Conventions, as close-api.md states them or Close does elsewhere: trailing slashes; lists as
`{"data": [...], "has_more": bool}` with `_skip`/`_limit` (default and max 100); 200 with the
object on create and update; the integration delete answers 204, the other deletes 200 `{}`.
Links that are not MANUAL (THIRD_PARTY, CALENDLY) cannot be changed or deleted through
`/scheduling_link/{id}/`: that is a 400, so an integration can never touch them by id.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from service.sandbox.errors import SandboxError, validation_error
from service.sandbox.state import Grant, SandboxState
from service.sandbox.traffic import admit, hold
from service.sandbox.validation import link_errors

API_PREFIX = "/api/v1"
MAX_PAGE = 100
LINK_OPTIONAL = ("description", "source_type", "duration_in_minutes")
MANUAL_OPTIONAL = ("description", "duration_in_minutes")


def endpoint_group(path: str) -> str:
    """Close's rate-limit endpoint group of an API path (with or without the /api/v1 prefix)."""
    path = path.removeprefix(API_PREFIX)
    if path.startswith("/scheduling_link/integration/"):
        return "scheduling_link_integration"
    if path.startswith("/scheduling_link/"):
        return "scheduling_link"
    if path.startswith("/shared_scheduling_link"):
        return "shared_scheduling_link"
    return "me"  # identity: /me/, /user/, /organization/{id}/


def route_key(rule: str) -> str:
    """The route as `SandboxState.calls` counts it: "/api/v1/scheduling_link/<link_id>/" ->
    "/scheduling_link/{link_id}/"."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.removeprefix(API_PREFIX))


def api_blueprint(state: SandboxState) -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix=API_PREFIX)

    @bp.before_request
    def guard() -> Response | None:
        """Count, delay, authenticate, rate-limit and maybe fail the call (see traffic.py)."""
        assert request.url_rule is not None
        group = endpoint_group(request.path)
        state.count(f"{request.method} {route_key(request.url_rule.rule)}")
        hold(state, group)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SandboxError(401, "Authentication required: send Authorization: Bearer <token>.")
        grant = state.authenticate(token)
        g.grant = grant
        # Who made it, for tests: "by:<user id> <METHOD> <route>" (never a METHOD-first key,
        # so sums over the plain call counters are unchanged).
        state.count(f"by:{grant.user_id} {request.method} {route_key(request.url_rule.rule)}")
        return admit(state, group, token, grant.org_id)

    def caller() -> Grant:
        grant: Grant = g.grant
        return grant

    # Identity ----------------------------------------------------------------------------

    @bp.get("/me/")
    def me() -> Response:
        return jsonify(state.me(caller()))

    @bp.get("/user/")
    def org_users() -> Response:
        return listing(*state.org_users(caller(), *paging()))

    @bp.get("/organization/<org_id>/")
    def organization(org_id: str) -> Response:
        return jsonify(state.organization(caller(), org_id))

    # User scheduling links ---------------------------------------------------------------

    @bp.post("/scheduling_link/integration/")
    def upsert_integration() -> Response:
        body = json_object()
        check(body, required=("source_id", "name", "url"), optional=LINK_OPTIONAL)
        return jsonify(state.upsert_integration(caller(), body))

    # One path segment: `/` never matches inside it, and a `%2F` is decoded before routing, so
    # "a/b" can never be deleted (the upsert refuses such ids for that reason). Werkzeug decodes
    # every other escape (space, ?, #, %, unicode, `%2E`) into the id.
    @bp.delete("/scheduling_link/integration/<source_id>/")
    def delete_integration(source_id: str) -> Response:
        state.delete_integration(caller(), source_id)
        return Response(status=204)

    @bp.get("/scheduling_link/")
    def list_links() -> Response:
        return listing(*state.user_links(caller(), *paging()))

    @bp.post("/scheduling_link/")
    def create_link() -> Response:
        body = json_object()
        check(body, required=("name", "url"), optional=MANUAL_OPTIONAL)
        return jsonify(state.create_manual_link(caller(), body))

    @bp.get("/scheduling_link/<link_id>/")
    def get_link(link_id: str) -> Response:
        return jsonify(state.get_user_link(caller(), link_id))

    @bp.put("/scheduling_link/<link_id>/")
    def update_link(link_id: str) -> Response:
        body = json_object()
        check(body, required=("name", "url"), optional=MANUAL_OPTIONAL, partial=True)
        return jsonify(state.update_manual_link(caller(), link_id, body))

    @bp.delete("/scheduling_link/<link_id>/")
    def delete_link(link_id: str) -> Response:
        state.delete_manual_link(caller(), link_id)
        return jsonify({})

    # Shared scheduling links -------------------------------------------------------------

    @bp.get("/shared_scheduling_link/")
    def list_shared() -> Response:
        return listing(*state.list_shared(caller(), *paging()))

    @bp.post("/shared_scheduling_link/")
    def create_shared() -> Response:
        return jsonify(state.create_shared(caller(), json_object()))

    @bp.get("/shared_scheduling_link/<shared_id>/")
    def get_shared(shared_id: str) -> Response:
        return jsonify(state.get_shared(caller(), shared_id))

    @bp.put("/shared_scheduling_link/<shared_id>/")
    def update_shared(shared_id: str) -> Response:
        return jsonify(state.update_shared(caller(), shared_id, json_object()))

    @bp.delete("/shared_scheduling_link/<shared_id>/")
    def delete_shared(shared_id: str) -> Response:
        state.delete_shared(caller(), shared_id)
        return jsonify({})

    @bp.post("/shared_scheduling_link_association/")
    def map_shared() -> Response:
        return jsonify(state.map_shared(caller(), json_object()))

    @bp.post("/shared_scheduling_link_association/unmap/")
    def unmap_shared() -> Response:
        state.unmap_shared(caller(), json_object())
        return jsonify({})

    return bp


def json_object() -> dict[str, Any]:
    """The request body as a JSON object; SandboxError 400 when it is missing or malformed."""
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise SandboxError(400, "Malformed JSON in the request body.") from None
    if not isinstance(body, dict):
        raise SandboxError(400, "The request body must be a JSON object.")
    return body


def check(
    body: dict[str, Any],
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    partial: bool = False,
) -> None:
    errors = link_errors(body, required=required, optional=optional, partial=partial)
    if errors:
        raise validation_error(errors)


def paging() -> tuple[int, int]:
    """(_skip, _limit) from the query: _limit defaults to and is capped at 100."""
    values: dict[str, int] = {}
    for name, default in (("_skip", 0), ("_limit", MAX_PAGE)):
        raw = request.args.get(name, str(default))
        try:
            values[name] = int(raw)
        except ValueError:
            raise validation_error({name: "Must be a whole number."}) from None
        if values[name] < 0:
            raise validation_error({name: "Must not be negative."})
    return values["_skip"], max(1, min(MAX_PAGE, values["_limit"]))


def listing(data: list[dict[str, Any]], has_more: bool) -> Response:
    return jsonify({"data": data, "has_more": has_more})
