from flask import Blueprint

bp = Blueprint("web_admin", __name__)
