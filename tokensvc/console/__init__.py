"""The admin console at /console (SPEC §11): server-rendered pages (Jinja2) over the use cases
the API calls, signed-cookie sessions with CSRF tokens (session.py), our own stylesheet and one
small script for the live online count. `routes()` is what the app mounts."""

from .routes import routes
from .web import PREFIX, error_page

__all__ = ["PREFIX", "error_page", "routes"]
