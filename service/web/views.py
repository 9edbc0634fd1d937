from flask import Blueprint

bp = Blueprint("web_views", __name__)
