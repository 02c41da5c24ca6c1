"""The FastAPI app of ``gigdispatch serve``: ``create_app``, its routes, lifespan and error handlers.

The service answers with the same policy code the simulator and ``gigdispatch evaluate`` run: at
start-up (the FastAPI ``lifespan``, never at import) it builds a ``ServeState`` (scenario, one reset
simulator, one policy); each request is loaded into that simulator and answered by ``answers``.

Every endpoint is a plain ``async def`` that computes inline: requests are served one at a time on the
event loop, so the shared simulator needs no lock (the work is CPU-bound; threads would not help).

Errors (FastAPI exception handlers): a client's error is a 4xx naming the field: the pydantic models
and JSON decoding (422, ``msg`` starting with the field's path; a model validator's ``field_error``
names a field below its model), ``RequestError`` from ``ServeState.load`` (unknown node ids, x/y far
outside the city, a route too long, more declines than offers: 422), the body-size guard (413), the
bearer token (401). A bug of ours (a ``PolicyError``, or any other unexpected exception) is answered 500 with
``{"detail": "internal error", "error_id": ...}``, logged with its traceback under that id on the
``gigdispatch.service`` logger and counted in ``gigdispatch_internal_errors_total`` (a policy's failure
also in ``gigdispatch_policy_errors_total``).
"""

from __future__ import annotations

import gc
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gigdispatch.service import answers
from gigdispatch.service.errors import PolicyError, RequestError, field_path, report_internal_error
from gigdispatch.service.guard import GuardMiddleware, OnError
from gigdispatch.service.metrics import CONTENT_TYPE, Metrics
from gigdispatch.service.schemas import (
    DispatchRequest,
    DispatchResponse,
    InternalErrorResponse,
    QuoteRequest,
    QuoteResponse,
    RepositionRequest,
    RepositionResponse,
)
from gigdispatch.service.state import ServeState

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def bound_for_city(doc: Any, top_node: int, max_stops: int, xy_box: Any = None) -> None:
    """Write the served scenario's limits into an OpenAPI document (in place): ``maximum`` of every integer
    ``node`` property and of ``pending_stops``, ``maxItems`` of ``route`` arrays, and with ``xy_box``
    (``[[x_lo, y_lo], [x_hi, y_hi]]``, ``ServeState.xy_box``) ``minimum`` / ``maximum`` of the ``x`` and
    ``y`` numbers. A limit is only ever tightened."""
    limits: list[tuple[str, str, float, tuple[str, ...]]] = [
        ("node", "maximum", top_node, ("integer",)),
        ("pending_stops", "maximum", max_stops, ("integer",)),
        ("route", "maxItems", max_stops, ("array",)),
    ]
    if xy_box is not None:
        for axis, name in enumerate("xy"):
            limits += [
                (name, "minimum", float(xy_box[0][axis]), ("number",)),
                (name, "maximum", float(xy_box[1][axis]), ("number",)),
            ]
    _tighten(doc, limits)


def _tighten(doc: Any, limits: list[tuple[str, str, float, tuple[str, ...]]]) -> None:
    if isinstance(doc, dict):
        props = doc.get("properties")
        if isinstance(props, dict):
            for name, key, value, types in limits:
                prop = props.get(name)
                if not isinstance(prop, dict):
                    continue
                for sch in [prop, *prop.get("anyOf", [])]:
                    if isinstance(sch, dict) and sch.get("type") in types:
                        tighter = max if key == "minimum" else min
                        sch[key] = tighter(sch.get(key, value), value)
        for v in doc.values():
            _tighten(v, limits)
    elif isinstance(doc, list):
        for v in doc:
            _tighten(v, limits)


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's errors (at most 50), each ``msg`` starting with the field's path."""
    errs = []
    for e in exc.errors()[:50]:
        loc = [x if isinstance(x, int | str) else str(x) for x in e.get("loc", ())]
        msg = e.get("msg", "invalid")
        ctx = e.get("ctx") or {}
        if isinstance(ctx.get("field"), list) and "reason" in ctx:  # schemas.field_error: a field below the model
            loc += [x if isinstance(x, int | str) else str(x) for x in ctx["field"]]
            msg = str(ctx["reason"])
        field = "body" if e.get("type") == "json_invalid" else (field_path(loc[1:]) or "body")
        errs.append({"loc": loc, "msg": f"{field}: {msg}", "type": e.get("type", "value_error")})
    return errs


def _internal_error_reporter(metrics: Metrics) -> OnError:
    """``(exc, method, path) -> 500 body``: logs ``exc`` under a new error id and counts it."""

    def internal_error(exc: BaseException, method: str, path: str) -> dict[str, str]:
        metrics.internal_errors.inc()
        return report_internal_error(exc, method, path)

    return internal_error


def _add_error_handlers(app: FastAPI, metrics: Metrics, internal_error: OnError) -> None:
    """A client's error -> 422 naming the field; a bug of ours -> 500 with an error id (logged, counted)."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        err = {"loc": ["body", *exc.loc], "msg": f"{field_path(exc.loc)}: {exc.msg}", "type": "value_error"}
        return JSONResponse(status_code=422, content={"detail": [err]})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _validation_detail(exc)})

    @app.exception_handler(PolicyError)
    async def _policy_error(request: Request, exc: PolicyError) -> JSONResponse:
        metrics.policy_errors.inc()
        return JSONResponse(status_code=500, content=internal_error(exc, request.method, request.url.path))

    @app.exception_handler(Exception)  # Starlette's outermost handler: any exception no other handler took
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=500, content=internal_error(exc, request.method, request.url.path))


def _bearer_auth(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that answers 401 unless the request carries ``Authorization: Bearer <token>``."""
    bearer = HTTPBearer(auto_error=False)

    # B008 (a call in a default argument) is FastAPI's idiom for a dependency
    async def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if (
            creds is None
            or creds.scheme.lower() != "bearer"
            or not hmac.compare_digest(creds.credentials.encode(), token.encode())
        ):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return auth


def _openapi_for_city(app: FastAPI) -> None:
    """Make ``app.openapi`` carry the served city's node-id range, route length and x/y box (known once started)."""
    base_openapi = app.openapi

    def openapi_for_city() -> dict[str, Any]:
        doc = base_openapi()
        serve = getattr(app.state, "serve", None)
        if serve is not None and not doc.get("x-node-ids-bounded"):
            bound_for_city(doc, serve.n_nodes - 1, serve.sim.S, serve.xy_box.tolist())
            doc["x-node-ids-bounded"] = True
        return doc

    # FastAPI documents replacing app.openapi to customise the schema; mypy sees it as assigning to a method
    app.openapi = openapi_for_city  # type: ignore[method-assign]


def _serve_state(request: Request) -> ServeState:
    return request.app.state.serve


def _add_routes(app: FastAPI, metrics: Metrics, token: str | None) -> None:
    # the bearer requirement (and its OpenAPI security entry) exists only when a token is configured
    guarded = [Depends(_bearer_auth(token))] if token is not None else []
    # every error status the guard layer and FastAPI can answer, so the OpenAPI document lists them
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": "the body is not valid JSON"},
        413: {"description": "the body is larger than --max-body-bytes"},
        500: {"description": "a bug of the service, logged under error_id", "model": InternalErrorResponse},
    }
    if token is not None:
        errors[401] = {"description": "missing or wrong bearer token"}

    @app.post("/v1/dispatch", response_model=DispatchResponse, dependencies=guarded, responses=errors)
    async def dispatch(req: DispatchRequest, request: Request) -> DispatchResponse:
        """Assign pending orders to drivers with the served policy (``policy.act`` on the request's state)."""
        return answers.dispatch(_serve_state(request), req)

    @app.post(
        "/v1/reposition",
        response_model=RepositionResponse,
        dependencies=guarded,
        responses=errors,
        description="Move idle drivers towards zones short of drivers (the served policy's rule, else "
        "``DemandRepositionPolicy``'s).",
    )
    async def reposition(req: RepositionRequest, request: Request) -> RepositionResponse:
        return answers.reposition(_serve_state(request), req)

    @app.post(
        "/v1/quote",
        response_model=QuoteResponse,
        dependencies=guarded,
        responses=errors,
        description="The customer fee (``Simulator.quote_cents``) and the driver payout (``Simulator.payout_cents``) "
        "of one order.",
    )
    async def quote(req: QuoteRequest, request: Request) -> QuoteResponse:
        return answers.quote(_serve_state(request), req)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        s = _serve_state(request)
        out = {"status": "ok", "policy": s.policy_name, "scenario": s.scenario.name}
        return out | {"nodes": s.n_nodes, "zones": int(s.sim.city.n_zones)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def create_app(
    scenario: str,
    policy: str,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    seed: int = 0,
    state: ServeState | None = None,
) -> GuardMiddleware:
    """The ASGI app. The scenario and policy are loaded in the lifespan (at server start-up), unless
    ``state`` (a ``ServeState`` the caller built at its own start-up, e.g. to report bad names as
    one-line CLI errors before the server starts) is given.

    Returns the outer guard (an ASGI app); the FastAPI app is its ``.app``, the metrics its ``.metrics``.
    """
    metrics = Metrics()
    internal_error = _internal_error_reporter(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.serve = state if state is not None else ServeState(scenario, policy, seed=seed)
        # Everything loaded so far (the road network's graph, the policy, the framework) lives as long as
        # the process: move it out of the collector's generations, so that a full collection triggered
        # by a request's temporary objects does not rescan ~100k long-lived objects (a ~45 ms pause,
        # which was the whole p99 tail at 1,000 x 200).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()

    app = FastAPI(
        title="gigdispatch inference service",
        version="1",
        description=(
            "Dispatch, repositioning and pricing answers from a gigdispatch policy (the same code as evaluation)."
        ),
        lifespan=lifespan,
    )
    _openapi_for_city(app)
    _add_error_handlers(app, metrics, internal_error)
    _add_routes(app, metrics, token)
    return GuardMiddleware(app, metrics, max_body_bytes, internal_error)
