from flask import Blueprint

bp = Blueprint("api_webhooks", __name__)
