"""The dashboard's web server: an aiohttp app inside the bot's process and event loop.

Off by default. When on it listens on `dashboard.host` (127.0.0.1 unless the config says otherwise) and answers
nothing without the secret: a missing or wrong one gets 401 and the sign-in form (browsers) or a one-line body
(anything else), never data. Pages carry a Content-Security-Policy that allows no script at all, a second wall
behind the templates' escaping.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from bot.config import ConfigError
from bot.dashboard.auth import COOKIE_NAME, SESSION_TTL_S, Authenticator
from bot.dashboard.data import WINDOWS_DAYS
from bot.dashboard.pages import Pages, Sources
from bot.dashboard.render import render_login

log = logging.getLogger(__name__)

FAILED_LOGIN_DELAY_S = 0.5  # each wrong secret costs the guesser this long
MAX_BODY_BYTES = 16 * 1024  # the sign-in form is the only body the server accepts
PUBLIC_PATHS = frozenset({"/login"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _unauthorized(request: web.Request, *, error: str | None = None) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="familiar-dashboard"'}
    if "text/html" in request.headers.get("Accept", "") or request.path == "/login":
        response = _html(render_login(error=error), status=401)
        response.headers.update(headers)
        return response
    return web.Response(text="401: Unauthorized\n", status=401, headers=headers)


class DashboardServer:
    def __init__(
        self, pages: Pages, secret: str, *, failed_login_delay_s: float = FAILED_LOGIN_DELAY_S
    ) -> None:
        self.pages = pages
        self.auth = Authenticator(secret)
        self._delay = failed_login_delay_s
        self.port: int | None = None  # where it listens, once started

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._security_headers, self._require_secret], client_max_size=MAX_BODY_BYTES
        )
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/", self._status)
        app.router.add_get("/models", self._models)
        app.router.add_get("/community", self._community)
        app.router.add_get("/api/status", self._api_status)
        return app

    # ------------------------------------------------------------------------------------------------ middleware
    @web.middleware
    async def _security_headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers.update(SECURITY_HEADERS)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    @web.middleware
    async def _require_secret(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or self.authorized(request):
            return await handler(request)
        return _unauthorized(request)

    def authorized(self, request: web.Request) -> bool:
        return self.auth.check_bearer(request.headers.get("Authorization")) or self.auth.check_session(
            request.cookies.get(COOKIE_NAME)
        )

    # ------------------------------------------------------------------------------------------------ sign-in
    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        if self.authorized(request):
            raise web.HTTPSeeOther("/")
        return _html(render_login())

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        candidate = form.get("secret")
        if not isinstance(candidate, str) or not self.auth.check_secret(candidate):
            log.warning("dashboard: wrong secret from %s", request.remote)
            await asyncio.sleep(self._delay)
            return _unauthorized(request, error="That is not the dashboard secret.")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE_NAME,
            self.auth.new_session(),
            max_age=int(SESSION_TTL_S),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE_NAME, path="/")
        raise response

    # ------------------------------------------------------------------------------------------------ pages
    async def _status(self, request: web.Request) -> web.StreamResponse:
        return _html(await self.pages.status())

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return _html(await self.pages.models())

    async def _community(self, request: web.Request) -> web.StreamResponse:
        default = self.pages.sources.config.dashboard.window_days
        try:
            days = int(request.query.get("days", default))
        except ValueError:
            days = default
        if days not in WINDOWS_DAYS:
            days = min(WINDOWS_DAYS, key=lambda d: abs(d - days))
        return _html(await self.pages.community(days))

    async def _api_status(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = self.pages.live().as_json()
        body["counts"] = await self.pages.data.recent_counts()
        return web.Response(text=json.dumps(body), content_type="application/json")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@asynccontextmanager
async def serve_dashboard(sources: Sources, secret: str | None) -> AsyncIterator[DashboardServer | None]:
    """Serve the dashboard while the block runs; does nothing when it is off (`secret` None).

    Get `secret` with `auth.dashboard_secret(config)` before the slow start-up, so a missing one fails early.
    """
    d = sources.config.dashboard
    if not d.enabled or secret is None:
        yield None
        return
    if not 0 <= d.port <= 65535:
        raise ConfigError(f"{sources.config.source}: 'dashboard.port' must be 0..65535, not {d.port}")
    server = DashboardServer(Pages(sources), secret)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, d.host, d.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"{sources.config.source}: the dashboard cannot listen on {d.host}:{d.port} ({exc.strerror or exc}); "
                "change 'dashboard.port' or 'dashboard.host'"
            ) from None
        port = runner.addresses[0][1] if runner.addresses else d.port  # the real one when the config says 0
        if not _is_loopback(d.host):
            log.warning("dashboard listens on %s, beyond this machine: put it behind TLS", d.host)
        log.info("dashboard on http://%s:%s/ (secret from %s)", d.host, port, d.secret_env)
        server.port = port
        yield server
    finally:
        await runner.cleanup()
