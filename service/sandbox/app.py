"""The Close sandbox's HTTP surface, a Flask app of its own: OAuth (oauth_views), the REST API
(api_views) with rate limits and faults (traffic), and /_sandbox/* control (control_views).

Errors look like Close's: JSON `{"error": ...}` (with `field-errors` for validation) under
/api/, /oauth2/token/, /oauth2/revoke/ and /_sandbox/; an HTML page for the browser routes.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from service.sandbox.api_views import api_blueprint
from service.sandbox.control_views import control_blueprint
from service.sandbox.errors import SandboxError
from service.sandbox.oauth_views import oauth_blueprint
from service.sandbox.state import SandboxState
from service.sandbox.traffic import finish

JSON_PATHS = ("/api/", "/oauth2/token", "/oauth2/revoke", "/_sandbox/")
READ_ONLY_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_BODY_BYTES = 1024 * 1024


def create_sandbox_app(state: SandboxState | None = None) -> Flask:
    state = state or SandboxState()
    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["sandbox"] = state
    app.register_blueprint(oauth_blueprint(state))
    app.register_blueprint(api_blueprint(state))
    app.register_blueprint(control_blueprint(state))
    app.after_request(finish)

    if state.persists:

        @app.after_request
        def save_state(response: Response) -> Response:
            """Dev persistence: every request that may have changed the world saves it. A
            failed save is logged, not answered: the world in memory is still right."""
            if request.method not in READ_ONLY_METHODS:
                try:
                    state.save()
                except OSError:
                    app.logger.exception("could not save the sandbox state")
            return response

    @app.errorhandler(SandboxError)
    def close_error(exc: SandboxError) -> Response:
        response = jsonify(exc.body())
        response.status_code = exc.status
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="Close"'
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | tuple[str, int]:
        status = exc.code or 500
        message = exc.description or exc.name
        if not request.path.startswith(JSON_PATHS):
            return render_template("sandbox_error.html", message=message), status
        response = jsonify({"error": message})
        response.status_code = status
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # keeps Allow on a 405
                response.headers[name] = value
        return response

    return app
