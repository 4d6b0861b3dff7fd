"""The dashboard's Starlette app: a page, the fragments htmx polls, and basic auth."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sealpool import views
from sealpool.config import Settings
from sealpool.errors import InvalidSectorId, SectorNotFound
from sealpool.store import KINDS, SectorStore

HERE = Path(__file__).parent
REFRESH_S = 2  # how often the page polls for fresh figures


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _utc(at_ms: int | None) -> str:
    if at_ms is None:
        return "-"
    return datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class BasicAuth(BaseHTTPMiddleware):
    """Every request needs HTTP basic auth with ``password`` (any user name)."""

    def __init__(self, app: Any, password: str) -> None:
        super().__init__(app)
        self.password = password.encode()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            _user, _, given = base64.b64decode(encoded).partition(b":")
        except (binascii.Error, ValueError):
            given = b""
        if scheme.lower() == "basic" and hmac.compare_digest(given, self.password):
            return await call_next(request)
        return PlainTextResponse(
            "sealpool: password needed", 401, {"WWW-Authenticate": 'Basic realm="sealpool"'}
        )


def create_app(store: SectorStore, settings: Settings, password: str | None = None) -> Starlette:
    """The dashboard of ``store``'s pool; with ``password``, behind basic auth."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["utc"] = _utc

    def overview_data() -> dict[str, Any]:
        stats = views.pool_stats(store, settings)
        slots = views.slots(store)
        return {
            "pool": settings.key_prefix,
            "kinds": KINDS,
            "stats": stats,
            "slots": slots,
            "pipeline": views.pipeline(stats, slots),
            "ratio": views.ratio(store, settings),
            "failures": views.failures(store),
            "refresh_s": REFRESH_S,
        }

    def index(request: Request) -> Response:
        return templates.TemplateResponse(request, "index.html", overview_data())

    def overview(request: Request) -> Response:
        return templates.TemplateResponse(request, "overview.html", overview_data())

    def sector(request: Request) -> Response:
        sector_id = request.query_params.get("id", "").strip()
        try:
            data: dict[str, Any] = views.sector(store, sector_id)
        except (SectorNotFound, InvalidSectorId) as exc:
            data = {"error": str(exc)}
        return templates.TemplateResponse(request, "sector.html", data)

    routes = [
        Route("/", index),
        Route("/overview", overview),
        Route("/sector", sector),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(BasicAuth, password=password)] if password else []
    return Starlette(routes=routes, middleware=middleware)
