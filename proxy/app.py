"""create_app(settings) → the FastAPI application: routes, lifespan, error envelopes."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi.exceptions import RequestValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import metrics
from .admin.routes import create_admin_app, tenant_usage
from .db.faults import rows_refused
from .errors import BadRequest, Envelope, NotFound, ProxyError, ServiceUnavailable, to_response
from .live import relay as live
from .logs import configure_logging, install_redaction
from .middleware import Deadline, ServerMiddleware
from .native import caches as native_caches
from .native import files as native_files
from .native import routes as native
from .openai import routes as openai
from .openai.errors import unknown_openai_route
from .services import Services, services
from .settings import Settings

__all__ = ["app_from_environment", "create_app", "envelope_for", "tune_gc"]

log = logging.getLogger("gemini_meter")


# OpenAI's own route prefixes (served or not) and Google's OpenAI-compatible base path:
# errors there, an unknown route's 404 included, are in OpenAI's envelope.
OPENAI_PREFIXES = (
    "/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/images/",
    "/v1/audio/", "/v1/moderations", "/v1/assistants", "/v1/threads", "/v1/vector_stores",
    "/v1/fine_tuning/", "/v1/uploads", "/v1/realtime", "/v1/conversations", "/v1/evals",
    "/v1/containers", f"{openai.GOOGLE_BASE}/",
)  # fmt: skip


# Paths both APIs have under /v1 (Gemini's models, files and batches; OpenAI's too): Gemini's
# when the path has a method (":") or the client is Google's (where it puts its key).
SHARED_V1 = ("/v1/models", "/v1/files", "/v1/batches")
# The proxy's own /v1 route (the tenant's usage), answered in OpenAI's envelope.
PROXY_V1 = ("/v1/usage",)


def envelope_for(request: Request) -> Envelope:
    """Which API a request came through, so its errors come back in that API's shape: every
    path under /v1beta, /upload and /download is Gemini's, and so is every /v1 path OpenAI's API
    does not have (an unknown one included, so Google's SDKs can read its 404)."""
    path = request.url.path
    if path.startswith(OPENAI_PREFIXES):
        return "openai"
    if path.startswith(("/v1beta/", "/models/", "/upload/", "/download/")):
        return "gemini"
    if path.startswith(SHARED_V1):
        return "gemini" if ":" in path or is_native_client(request) else "openai"
    if path.startswith("/v1/") and not path.startswith(PROXY_V1):
        # An OpenAI client (a Bearer key, never Google's way) on a route of OpenAI's this list
        # does not name still reads OpenAI's envelope.
        bearer = request.headers.get("authorization", "").lower().startswith("bearer ")
        return "openai" if bearer and not is_native_client(request) else "gemini"
    return "openai"


def unknown_gemini_route(method: str, path: str) -> ProxyError:
    """Gemini's 404 NOT_FOUND naming the route (also for a known path with another method, as
    Google answers), in the envelope Google's SDKs read."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return NotFound(f"The proxy serves no route {method} {shown}.")


def is_native_client(request: Request) -> bool:
    # GET /v1/models is both a Gemini and an OpenAI route; the SDKs tell themselves apart by
    # where they put the key: Google's in x-goog-api-key or ?key=, OpenAI's as a Bearer token.
    return "x-goog-api-key" in request.headers or "key" in request.query_params


async def _models(request: Request) -> Response:
    if is_native_client(request):
        return await native.list_models(request)
    return await openai.list_models(request)


async def _model(request: Request) -> Response:
    if is_native_client(request):
        return await native.get_model(request)
    return await openai.get_model(request)


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        # A hung database is as unready as a down one, and a probe must answer in time.
        async with asyncio.timeout(svc.settings.key_lookup_timeout):
            async with svc.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except TimeoutError:
        checks["database"] = "error: timeout"
    except Exception as exc:  # report, don't raise: this is the health check
        checks["database"] = f"error: {type(exc).__name__}"
    checks["upstream_key"] = "ok" if svc.settings.upstream_keys else "missing"
    checks["quota_policies"] = "ok" if svc.quotas is None or svc.quotas.loaded else "not loaded"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def metrics_endpoint(_: Request) -> Response:
    # Rendering walks every collector (and, under several workers, reads their files): off the
    # event loop, so a scrape never stalls the calls being served.
    body = await run_in_threadpool(metrics.render)
    return Response(body, media_type=metrics.CONTENT_TYPE)


def app_from_environment() -> Starlette:
    """The app factory uvicorn's worker processes call: settings from their environment."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


# Measured with gc.callbacks under the benchmark's load (docs/benchmarks.md, round 4): with
# CPython's defaults a full collection ran every ~2 s and walked every object of the libraries
# for ~100-130 ms, holding the event loop; after a freeze it walks what came later, ~3 ms.
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Move what start-up built (modules, catalog, pools) out of the collector's sight, and
    collect the youngest generation less often: a call's garbage is freed by reference counts,
    so most gen-0 passes over the live requests' objects find nothing."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings, *, svc: Services | None = None) -> Starlette:
    if problem := settings.admin_token_problem:
        raise ValueError(problem)  # `serve` says so and exits before it gets here
    install_redaction()  # no secret in any log line of the process, whoever configured logging
    admin = create_admin_app()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        s = svc or Services.build(settings)
        app.state.services = admin.state.services = s
        await s.start()
        if settings.gc_tuning:
            tune_gc()
        try:
            yield
        finally:
            await s.stop()

    # Plain Starlette: every proxy route is a starlette Route, and FastAPI's per-request
    # layers (telemetry, body-limit and exit-stack middlewares) cost CPU on every call for
    # nothing. The admin API stays a FastAPI sub-application, mounted below.
    app = Starlette(lifespan=lifespan)
    # Model calls first: Starlette tries routes in order, and they are nearly every request.
    app.router.routes.extend(
        [
            *native.routes(),
            # Unversioned native calls, served as v1beta: litellm's gemini/ provider given the
            # bare proxy URL posts to <root>/models/{model}:{method}.
            Route("/models/{target:path}", native.call_model, methods=["POST"]),
            *openai.routes(),
            *native_files.routes(),
            *native_caches.routes(),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/models/{model}", _model, methods=["GET"]),
            Route("/v1/usage", tenant_usage, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *live.routes(),
        ]
    )
    _install_error_handlers(admin)
    app.mount("/admin", Deadline(admin, settings.database_request_timeout))
    if svc is not None:  # known now: usable before (or without) the lifespan
        app.state.services = admin.state.services = svc
    app.add_middleware(ServerMiddleware)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: Starlette) -> None:
    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return to_response(exc, envelope_for(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        envelope = envelope_for(request)
        err = ProxyError(str(exc.detail), status_code=exc.status_code)
        if envelope == "openai" and exc.status_code in (404, 405):
            err = unknown_openai_route(
                request.method, request.url.path, exc.status_code, exc.headers
            )
        elif envelope == "gemini" and exc.status_code in (404, 405):
            err = unknown_gemini_route(request.method, request.url.path)
        return to_response(err, envelope)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return to_response(
            BadRequest(f"{loc}: {first.get('msg', 'invalid')}", param=loc or None),
            envelope_for(request),
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnect):
            # The client left while sending its body: no call was made, nobody to answer.
            log.debug("client disconnected during %s %s", request.method, request.url.path)
            return Response(status_code=499)
        if isinstance(exc, SQLAlchemyError | OSError):
            # The database, not the proxy: refused input is the request's fault (a 400 that
            # validation should have given), anything else an outage (503, retry).
            log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
            err = (
                BadRequest("The database refused a value of this request.")
                if rows_refused(exc)
                else ServiceUnavailable(
                    "The database is unavailable; retry shortly.", headers={"Retry-After": "1"}
                )
            )
            return to_response(err, envelope_for(request))
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return to_response(ProxyError("Internal error in the proxy."), envelope_for(request))

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
