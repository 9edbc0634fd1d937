from flask import Blueprint

bp = Blueprint("api_views", __name__)
