"""The HTTP side of optout-sidecar: the `/api/v1` admin API, the web
console, `/metrics`, `/healthz` and `/readyz`.

Build it with `make_app(service, metrics, tokens)`; see `app.py`.
"""

from gateway.http.app import make_app
from gateway.http.auth import ApiToken

__all__ = ["ApiToken", "make_app"]
