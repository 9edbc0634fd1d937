"""WSGI entry point for gunicorn and `flask run`: `service.wsgi:app`."""

from __future__ import annotations

from service.app import create_app
from service.infra.logs import configure_logging
from service.settings import load_settings_or_exit

settings = load_settings_or_exit()
configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
app = create_app(settings)
