"""build_app(settings): routes, the edge and the lifespan; nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from redis.asyncio import from_url as redis_from_url
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.oauth.device import ACTIVATE_PATH
from fluxer_oauth.oauth.metadata import DISCOVERY_PATH, metadata
from fluxer_oauth.ops.janitor import run_forever
from fluxer_oauth.ops.logging import configure as configure_logging
from fluxer_oauth.ops.metrics import render as render_metrics
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.settings import Settings
from fluxer_oauth.store.errors import StoreUnavailable
from fluxer_oauth.web import account_pages, device_pages, images, mails, pages, portal
from fluxer_oauth.web import routes as _routes  # noqa: F401  (registers the API routes)
from fluxer_oauth.web.api import openapi_document, router
from fluxer_oauth.web.client_ip import ClientIpResolver
from fluxer_oauth.web import asgi
from fluxer_oauth.web.edge import Edge
from fluxer_oauth.web.ratelimit import RateLimits
from fluxer_oauth.web.templating import is_page_path
from fluxer_oauth.web.responses import (
    api_error_handler, json_response, oauth_error_handler, store_unavailable_handler,
)


STATIC = Path(__file__).parent / "web" / "static"
FAVICON = (STATIC / "favicon.ico").read_bytes()


async def favicon(_request: Request):
    """Browsers ask every site for it: a day's caching, and no 404 in every page's log."""
    return Response(FAVICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})


# Relying parties read discovery once and keep it; it changes only with a new release.
DISCOVERY_CACHE = {"Cache-Control": "public, max-age=3600"}


async def http_error_handler(_request: Request, exc: HTTPException):
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return json_response({"code": code, "message": str(exc.detail)}, exc.status_code, exc.headers)


async def store_unavailable(request: Request, exc: StoreUnavailable):
    """503 for a request that found the database unreachable: a page on page routes, JSON elsewhere."""
    if not is_page_path(request.url.path):
        return await store_unavailable_handler(request, exc)
    return pages.unavailable_page(request)


def build_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Starlette:
    settings = settings or (runtime.settings if runtime else Settings())
    configure_logging(settings.log_level)
    rt = runtime or Runtime.create(settings)
    mails.install(rt)
    openapi = openapi_document(router, settings.issuer)

    server_metadata = metadata(settings)
    limits = RateLimits(settings)
    redis_client = redis_from_url(settings.redis_url, socket_timeout=0.5) if settings.redis_url else None

    async def openapi_json(_request: Request):
        return json_response(openapi)

    async def metadata_json(_request: Request):
        return json_response(server_metadata, headers=DISCOVERY_CACHE)

    async def healthz(_request: Request):
        return json_response({"status": "ok"})

    async def readyz(_request: Request):
        checks = {"database": await rt.db.ping()}
        if redis_client is not None:
            try:
                checks["redis"] = bool(await redis_client.ping())
            except (RedisError, OSError):
                checks["redis"] = False
        ready = all(checks.values())
        return json_response({"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    async def metrics_endpoint(_request: Request):
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    page_routes = [
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login_submit, methods=["POST"]),
        Route("/logout", pages.logout_page, methods=["GET"]),
        Route("/logout", pages.logout_submit, methods=["POST"]),
        Route("/signup", pages.signup_page, methods=["GET"]),
        Route("/signup", pages.signup_submit, methods=["POST"]),
        Route("/login/code", account_pages.login_code_page, methods=["GET"]),
        Route("/login/code", account_pages.login_code_submit, methods=["POST"]),
        Route("/forgot-password", account_pages.forgot_page, methods=["GET"]),
        Route("/forgot-password", account_pages.forgot_submit, methods=["POST"]),
        Route(account_pages.RESET_PAGE, account_pages.reset_page, methods=["GET"]),
        Route(account_pages.RESET_PAGE, account_pages.reset_submit, methods=["POST"]),
        Route(account_pages.VERIFY_PAGE, account_pages.verify_page, methods=["GET"]),
        Route(account_pages.VERIFY_PAGE, account_pages.verify_submit, methods=["POST"]),
        Route(account_pages.ACCOUNT, account_pages.settings_page, methods=["GET"]),
        Route(account_pages.ACCOUNT + "/verification", account_pages.resend_verification_submit, methods=["POST"]),
        Route(account_pages.ACCOUNT + "/email", account_pages.email_submit, methods=["POST"]),
        Route(account_pages.ACCOUNT + "/password", account_pages.password_submit, methods=["POST"]),
        Route(account_pages.TWO_FACTOR, account_pages.two_factor_page, methods=["GET"]),
        Route(account_pages.TWO_FACTOR, account_pages.two_factor_submit, methods=["POST"]),
        Route(account_pages.TWO_FACTOR + "/disable", account_pages.two_factor_disable_submit, methods=["POST"]),
        Route(account_pages.RECOVERY_CODES, account_pages.recovery_codes_page, methods=["GET"]),
        Route(account_pages.RECOVERY_CODES, account_pages.recovery_codes_submit, methods=["POST"]),
        Route("/oauth2/authorize", pages.authorize_page, methods=["GET"]),
        Route("/oauth2/authorize", pages.authorize_submit, methods=["POST"]),
        Route("/oauth2/authorized", pages.bot_added_page, methods=["GET"]),
        Route(ACTIVATE_PATH, device_pages.activate_page, methods=["GET"]),
        Route(ACTIVATE_PATH, device_pages.activate_submit, methods=["POST"]),
        Route("/settings/authorized-apps", pages.authorized_apps_page, methods=["GET"]),
        Route("/settings/authorized-apps/{application_id}/revoke", pages.revoke_app_page, methods=["GET"]),
        Route("/settings/authorized-apps/{application_id}/revoke", pages.revoke_app_submit, methods=["POST"]),
        Route("/", portal.home, methods=["GET"]),
        Route("/developers/applications", portal.list_page, methods=["GET"]),
        Route("/developers/applications", portal.create_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}", portal.app_page, methods=["GET"]),
        Route("/developers/applications/{application_id}", portal.update_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}/oauth2", portal.oauth2_page, methods=["GET"]),
        Route("/developers/applications/{application_id}/oauth2", portal.oauth2_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}/bot", portal.bot_page, methods=["GET"]),
        Route("/developers/applications/{application_id}/bot", portal.bot_submit, methods=["POST"]),
        Route(portal.ICON_PATH, portal.icon_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}/reset-secret", portal.reset_secret_page, methods=["GET"]),
        Route("/developers/applications/{application_id}/reset-secret", portal.reset_secret_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}/reset-token", portal.reset_token_page, methods=["GET"]),
        Route("/developers/applications/{application_id}/reset-token", portal.reset_token_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}/delete", portal.delete_page, methods=["GET"]),
        Route("/developers/applications/{application_id}/delete", portal.delete_submit, methods=["POST"]),
        Route("/developers/applications/{application_id}/url-generator", portal.url_generator_page, methods=["GET"]),
        # Images, CDN-style (web/images.py; docs/api.md "Images"): application and guild ids never meet.
        Route("/avatars/{owner_id}/{file}", images.avatar, methods=["GET"]),
        Route("/icons/{owner_id}/{file}", images.icon, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if settings.dev:
        page_routes.append(Route("/demo/callback", pages.demo_callback, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # collector's way, so full collections stay short (they showed as stalls at p99).
        gc.collect()
        gc.freeze()
        if not rt.mail.available:
            logging.getLogger("fluxer.mail").warning(
                "no FLUXER_SMTP_URL: email verification and password reset are refused (MAIL_UNAVAILABLE) "
                "until mail is configured")
        janitor = None
        if settings.janitor_interval > 0:
            janitor = asyncio.create_task(run_forever(rt, settings.janitor_interval))
        yield
        if janitor is not None:
            janitor.cancel()
        await rt.mail.close()
        if redis_client is not None:
            await redis_client.aclose()
        await limits.close()
        await rt.db.close()

    app = FluxerApp(
        routes=[
            *router.routes,
            Route("/api/v1/openapi.json", openapi_json, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", metadata_json, methods=["GET"]),
            Route(DISCOVERY_PATH, metadata_json, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *page_routes,
        ],
        exception_handlers={
            ApiError: api_error_handler, OAuthError: oauth_error_handler, HTTPException: http_error_handler,
            StoreUnavailable: store_unavailable,
        },
        lifespan=lifespan,
    )
    # Starlette would answer "/path/" with a 307 to "/path" on the host the Host header names
    # (an open redirect); such a path is a plain 404 instead.
    app.router.redirect_slashes = False
    app.state.runtime = rt
    app.state.limits = limits
    app.state.image_variants = images.VariantCache(settings.image_cache_bytes)
    app.runtime, app.limits = rt, limits  # plain attributes for the hot paths (State lookups cost)
    # Metrics label requests by route template; the /api/v1 form wins over the /v1 alias.
    route_names = {route.endpoint: route.path for route in reversed(app.routes) if isinstance(route, Route)}
    app.resolver = ClientIpResolver(settings.trusted_proxies)
    # Every request enters through the edge; the hot routes there are the same functions the
    # router mounts (as_starlette), found by their mark.
    hot_routes = {
        (method, route.path): replace(route.endpoint.hot_route, name=route_names[route.endpoint])
        for route in app.routes if isinstance(route, Route) and hasattr(route.endpoint, "hot_route")
        for method in route.methods - {"HEAD"}
    }
    app.edge = Edge(app, framework=app.framework, hot_routes=hot_routes, route_names=route_names,
                    max_body=settings.max_body_bytes, large_bodies=router.large_bodies() + portal.LARGE_BODIES,
                    large_body=settings.image_body_bytes, session_cookie=pages.SESSION_COOKIE)
    return app


class FluxerApp(Starlette):
    """Starlette, entered through the edge built in ``build_app`` (web/edge.py)."""

    edge = None
    runtime = None
    limits = None
    resolver = None

    async def framework(self, scope, receive, send) -> None:
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        await self.middleware_stack(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await asgi.serve(self.edge, scope, receive, send)
            return
        scope["app"] = self  # the lifespan
        await self.framework(scope, receive, send)


def create_app() -> Starlette:
    """Factory for ASGI servers (``granian --factory fluxer_oauth.app:create_app``); each
    worker process claims its own snowflake worker id."""
    settings = Settings()
    return build_app(settings, Runtime.create(settings, exclusive_worker_id=True))


def create_rsgi_app():
    """Factory for granian's RSGI interface, which ``fluxer-oauth serve`` uses."""
    from fluxer_oauth.web.rsgi import RsgiEntry

    return RsgiEntry(create_app())
