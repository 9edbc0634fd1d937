"""/_sandbox/*: inspect and steer the sandbox over HTTP, for tests and benchmarks that run it in
another process (and for humans with curl). Never rate-limited, delayed or faulted.

| endpoint | body | answer |
|---|---|---|
| GET /_sandbox/state | | orgs, users, memberships, links, shared links, mappings, grant counts, faults, config |
| GET /_sandbox/orgs/{org_id} | | the team: organization, members (user, membership, active_grants, links), shared_links (each with its associations) |
| GET /_sandbox/calls | | the call counter (`SandboxState.calls`) |
| POST /_sandbox/reset | | everything back to the seeded world |
| POST /_sandbox/reset-calls | | the counter back to zero |
| GET, POST /_sandbox/faults | see faults.Faults; `{}` clears | the faults now in force |
| GET, POST /_sandbox/config | access_token_ttl, rate_limit_per_token, rate_limit_per_org, rate_limits_enabled, rate_limit_headers (full, none, retry_after_only, body_only, bare), latency_ms, code_ttl, clients | the config now in force |
| POST /_sandbox/revoke-grant | user_id, client_id?, organization_id? | `{"revoked": n}` |
| POST /_sandbox/expire-tokens | | `{"expired": n}` |
| POST /_sandbox/users | orgs: [{id, name}], users: [{id, first_name?, last_name?, email?, organizations, can_manage_customizations?, permissions_granted?}] | counts |
| DELETE /_sandbox/users/{user_id}[?organization_id=] | | `{"revoked": n}`: the user leaves that org (or Close); their grants there die |
| POST /_sandbox/users/{user_id}/permissions | organization_id, permissions_granted: [...] | the membership |
| POST /_sandbox/issue-tokens | user_id, organization_id, client_id? | a token response |
| POST /_sandbox/manual-links | user_id, organization_id, name, url, description?, duration_in_minutes?, source? | the link |
| DELETE /_sandbox/links/{link_id} | | 204, or 404 (a human deletes a link in Close) |
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.sandbox.directory import UnknownError
from service.sandbox.state import SandboxState


class ControlError(ValueError):
    pass


def control_blueprint(state: SandboxState) -> Blueprint:
    bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")

    @bp.errorhandler(ValueError)
    def bad_input(exc: ValueError) -> tuple[Response, int]:
        return jsonify({"error": str(exc)}), 400

    @bp.errorhandler(UnknownError)
    def unknown(exc: UnknownError) -> tuple[Response, int]:
        return jsonify({"error": str(exc)}), 404

    @bp.get("/state")
    def inspect_state() -> Response:
        return jsonify(state.snapshot())

    @bp.get("/orgs/<org_id>")
    def inspect_team(org_id: str) -> Response:
        return jsonify(state.team(org_id))

    @bp.get("/calls")
    def inspect_calls() -> Response:
        with state.lock:
            return jsonify(dict(state.calls))

    @bp.post("/reset")
    def reset() -> Response:
        state.reset()
        return jsonify({"ok": True})

    @bp.post("/reset-calls")
    def reset_calls() -> Response:
        state.reset_calls()
        return jsonify({"ok": True})

    @bp.route("/faults", methods=["GET", "POST"])
    def faults() -> Response:
        if request.method == "POST":
            state.set_faults(**body())
        return jsonify(state.faults.to_dict())

    @bp.route("/config", methods=["GET", "POST"])
    def config() -> Response:
        if request.method == "POST":
            state.update_config(**body())
        return jsonify(dataclasses.asdict(state.config))

    @bp.post("/revoke-grant")
    def revoke_grant() -> Response:
        data = body()
        revoked = state.revoke_grant(
            text(data, "user_id"),
            optional_text(data, "client_id"),
            optional_text(data, "organization_id"),
        )
        return jsonify({"revoked": revoked})

    @bp.post("/expire-tokens")
    def expire_tokens() -> Response:
        return jsonify({"expired": state.expire_access_tokens()})

    @bp.post("/users")
    def add_users() -> Response:
        data = body()
        orgs, users = data.get("orgs", []), data.get("users", [])
        if not isinstance(orgs, list) or not isinstance(users, list):
            raise ControlError("orgs and users must be lists")
        for org in orgs:
            org_id = text(org, "id")
            state.add_org(org_id, str(org.get("name") or org_id))
        for user in users:
            user_id = text(user, "id")
            memberships = user.get("organizations", [])
            if not isinstance(memberships, list) or not all(
                isinstance(o, str) for o in memberships
            ):
                raise ControlError(f"organizations of {user_id} must be a list of org ids")
            state.add_user(
                user_id,
                str(user.get("first_name") or "Test"),
                str(user.get("last_name") or "User"),
                str(user.get("email") or f"{user_id}@example.com"),
                memberships,
                bool(user.get("can_manage_customizations", False)),
                permissions=user.get("permissions_granted"),
            )
        return jsonify({"orgs": len(orgs), "users": len(users)})

    @bp.delete("/users/<user_id>")
    def remove_user(user_id: str) -> Response:
        org_id = request.args.get("organization_id") or None
        return jsonify({"revoked": state.remove_user(user_id, org_id)})

    @bp.post("/users/<user_id>/permissions")
    def set_permissions(user_id: str) -> Response:
        data = body()
        if "permissions_granted" not in data:
            raise ControlError("permissions_granted is required (a list of permission names)")
        membership = state.set_permissions(
            user_id, text(data, "organization_id"), data["permissions_granted"]
        )
        return jsonify(membership.public())

    @bp.post("/issue-tokens")
    def issue_tokens() -> Response:
        data = body()
        client_id = data.get("client_id") or next(iter(state.config.clients), "")
        return jsonify(
            state.issue_tokens(str(client_id), text(data, "user_id"), text(data, "organization_id"))
        )

    @bp.post("/manual-links")
    def add_manual_link() -> Response:
        data = body()
        extra = {k: data[k] for k in ("description", "duration_in_minutes", "source") if k in data}
        link = state.add_manual_link(
            text(data, "user_id"),
            text(data, "organization_id"),
            text(data, "name"),
            text(data, "url"),
            **extra,
        )
        return jsonify(link)

    @bp.delete("/links/<link_id>")
    def delete_link(link_id: str) -> Response | tuple[Response, int]:
        if not state.delete_link(link_id):
            return jsonify({"error": "Not found."}), 404
        return Response(status=204)

    return bp


def body() -> dict[str, Any]:
    """The JSON object sent, `{}` when nothing was sent."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ControlError("malformed JSON") from None
    if not isinstance(data, dict):
        raise ControlError("the body must be a JSON object")
    return data


def optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ControlError(f"{key} must be a string")
    return value


def text(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ControlError(f"{key} is required (a non-empty string)")
    return value
