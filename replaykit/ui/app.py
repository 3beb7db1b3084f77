"""The ``replaykit ui`` application: the run list and run pages, a JSON HTTP API with its OpenAPI
document at ``/openapi.json``, and the store's Prometheus metrics at ``/metrics``. Reads (queries
too) need nothing; writes (start, signal, cancel, terminate, pause, resume) need
``Authorization: Bearer <token>`` when the app is given a token (``replaykit ui`` requires one when
it listens beyond localhost). Starting runs and answering queries needs the workflows' code: the
modules ``replaykit ui -m`` imports.
"""

import hmac
import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from .. import control, timeline, views
from ..client import Client
from ..errors import (
    CorruptStoreError,
    IllegalTransitionError,
    NonDeterminismError,
    ReplayKitError,
    ResultTimeoutError,
    StoreError,
    UnknownQueryError,
    UnknownWorkflowError,
    WorkflowConflictError,
    WorkflowNotFoundError,
)
from ..handle import ended_with
from ..metrics import StoreMetrics
from ..store import Store, open_store
from ..store.urls import without_password
from ..terminating import terminate as terminate_run
from ..timeline_html import render
from ..workflow import lookup
from . import pages

StatusName = Literal["pending", "running", "paused", "completed", "failed", "cancelled", "timed_out", "continued"]


class Run(BaseModel):
    workflow_id: str
    name: str
    status: StatusName
    created_at: str
    updated_at: str
    custom_status: Any = None
    queue: str | None = None
    problem: str | None = None


class Described(Run):
    generation: int
    args: Any = None
    kwargs: Any = None
    parent: dict[str, Any] | None = None
    children: list[dict[str, str]] = Field(default_factory=list)
    timeout: float | None = None
    start_at: str | None = None
    driven_by: str | None = None
    events: int
    last_event: dict[str, Any] | None = None
    waiting_at: str | None = None
    waiting_on: list[dict[str, Any]] | None = None
    note: str | None = None
    result: Any = None
    error: dict[str, str] | None = None


class HistoryEvent(BaseModel):
    seq: int
    step: int
    kind: str
    name: str | None
    at: str
    outcome: str
    value: Any = None


class Outcome(BaseModel):
    status: StatusName
    result: Any = None
    error: dict[str, str] | None = None


class SignalBody(BaseModel):
    name: str = Field(min_length=1)
    payload: Any = None


class CancelBody(BaseModel):
    reason: str = "cancelled"


class TerminateBody(BaseModel):
    reason: str = "terminated"


class StartBody(BaseModel):
    workflow: str = Field(min_length=1, description="The workflow's registered name")
    workflow_id: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list, description="JSON arguments")
    queue: str = Field(default="default", min_length=1)
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    key: str | None = None
    delay: float | None = Field(default=None, ge=0, le=10**9, description="Seconds before it may start")


class QueryBody(BaseModel):
    name: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list, description="JSON arguments")


class Problem(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such run"}}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 401: {"model": Problem, "description": "A token is needed"},
    409: {"model": Problem, "description": "Not in a status that allows it"}}
_HANDLER: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The query handler raised on these arguments"}}
_BAD_ARGUMENTS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The workflow cannot take these arguments"}}
_NO_CODE: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such run, or its workflow (or query) is not in the code replaykit ui "
                                           "-m loaded"}}


# What each replaykit error answers, as {"detail": its message}; the most specific class counts. A
# ReplayKitError not named otherwise is a damaged store, say.
_STATUS_OF: dict[type[ReplayKitError], int] = {
    WorkflowNotFoundError: 404, UnknownWorkflowError: 404, IllegalTransitionError: 409, WorkflowConflictError: 409,
    CorruptStoreError: 500, StoreError: 503, ResultTimeoutError: 504, ReplayKitError: 500}


class _Json(JSONResponse):
    """JSON in ASCII: text holding a lone surrogate (an undecodable file name a run recorded) is sent
    escaped, where UTF-8 (and pydantic's serializer) cannot send it at all."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    status = next(_STATUS_OF[c] for c in type(exc).__mro__ if c in _STATUS_OF)
    hint = " (replaykit ui -m MODULE loads a workflow's code)" if isinstance(exc, UnknownWorkflowError) else ""
    return _Json({"detail": f"{exc}{hint}"}, status_code=status)


async def _refused(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer to an ``HTTPException``, in ASCII JSON (its text may quote recorded text)."""
    assert isinstance(exc, HTTPException)
    return _Json({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


_LISTED = 1000  # runs the list page shows, newest first (the API pages through all of them)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _may_write(request: Request) -> None:
    token: str | None = request.app.state.token
    if token is None:
        _not_cross_site(request)
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise HTTPException(401, "writes need the header 'Authorization: Bearer <token>' (replaykit ui --token)")


def _not_cross_site(request: Request) -> None:
    """Without a token, refuse a write a browser makes for a page of another site (a form posted to
    localhost, a fetch in no-cors mode): what it says of where the request comes from must be here.
    Tools (curl, scripts, replaykit's client) send neither header."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if (site is not None and site not in ("same-origin", "none")) or (origin is not None and origin != own):
        raise HTTPException(403, f"a write asked by a web page of another site ({origin or site}) is refused: "
                                 "without a token (replaykit ui --token) only this machine's tools may write")


async def _addressed_to_this_machine(request: Request, call_next: Any) -> Response:
    """Answer only requests addressed to this machine by name (``localhost``) or loopback address: a
    page of another site that rebinds its own name to 127.0.0.1 (DNS rebinding) sends its name, and
    gets nothing."""
    host = request.url.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return JSONResponse({"detail": f"this replaykit ui answers only requests addressed to localhost, not to "
                                       f"{host!r} (listen beyond localhost, with a token, to serve others)"},
                            status_code=403)
    response: Response = await call_next(request)
    return response


StoreDep = Annotated[Store, Depends(_store)]
Writer = Annotated[None, Depends(_may_write)]


def create_app(db: str | Store, *, token: str | None = None, refresh: int = 5,
               local_only: bool | None = None) -> FastAPI:
    """The application for ``db`` (an existing store: a path, a URL or a :class:`Store`); ``token``: what
    writes must present; ``refresh``: seconds between reloads of the pages; ``local_only``: answer only
    requests addressed to this machine (``localhost``, a loopback address), as a server listening there
    should (default: when there is no token)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = db if isinstance(db, Store) else open_store(db, create=False)
        try:
            yield
        finally:
            if not isinstance(db, Store):
                app.state.store.close()

    app = FastAPI(title="replaykit", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The runs of one replaykit store: list, describe, history, result, query, and "
                              "start, signal, cancel, terminate, pause, resume them.")
    app.state.token = token
    if token is None if local_only is None else local_only:
        app.middleware("http")(_addressed_to_this_machine)
    where = without_password(db) if isinstance(db, str) else repr(db)

    for error in _STATUS_OF:
        app.add_exception_handler(error, _problem)
    app.add_exception_handler(HTTPException, _refused)

    def info_of(s: Store, workflow_id: str) -> Any:
        info = s.info(workflow_id)
        if info is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return info

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def run_list(s: StoreDep, status: str = "", workflow: str = "", prefix: str = "") -> str:
        runs = views.listed(s, statuses=[status] if status else (), workflows=[workflow] if workflow else (),
                            prefix=prefix, limit=_LISTED + 1)
        return pages.run_list(where, runs[:_LISTED], status=status, workflow=workflow, prefix=prefix,
                              refresh=refresh, more=len(runs) > _LISTED)

    @app.get("/runs/{workflow_id:path}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(workflow_id: str, s: StoreDep) -> str:
        return render(timeline.build(s, workflow_id), refresh=refresh)

    @app.get("/api/runs", response_model=list[Run], response_class=_Json, summary="List runs, newest first")
    def list_runs(s: StoreDep, status: Annotated[list[StatusName] | None, Query()] = None,
                  workflow: Annotated[list[str] | None, Query()] = None, prefix: str = "",
                  limit: Annotated[int | None, Query(ge=1)] = None) -> Any:
        return [views.info_json(i) for i in views.listed(s, statuses=status or (), workflows=workflow or (),
                                                         prefix=prefix, limit=limit)]

    @app.get("/api/runs/{workflow_id:path}/history", response_model=list[HistoryEvent], response_class=_Json,
             responses=_ERRORS,
             summary="A run's events (its newest generation), checked")
    def history(workflow_id: str, s: StoreDep) -> Any:
        info_of(s, workflow_id)
        return [views.event_json(e) for e in s.events(workflow_id)]

    @app.get("/api/runs/{workflow_id:path}/result", response_model=Outcome, response_class=_Json,
             summary="How a run ended",
             responses={**_ERRORS, 409: {"model": Problem, "description": "It has not ended"}})
    def result(workflow_id: str, s: StoreDep) -> Any:
        info = info_of(s, workflow_id)
        last = ended_with(s, workflow_id) if info.status.is_terminal else None
        if last is None:
            raise HTTPException(409, f"workflow {workflow_id!r} has not ended: it is {info.status.value}")
        return {"status": info.status.value, **views.outcome_json(last)}

    @app.post("/api/runs/{workflow_id:path}/signal", status_code=204, responses=_WRITE_ERRORS,
              summary="Send a run a signal")
    def signal(workflow_id: str, body: SignalBody, s: StoreDep, _: Writer) -> None:
        control.send_signal(s, workflow_id, body.name, body.payload)

    @app.post("/api/runs/{workflow_id:path}/cancel", status_code=204, responses=_WRITE_ERRORS,
              summary="Cancel a run at its current yield")
    def cancel(workflow_id: str, s: StoreDep, _: Writer, body: CancelBody | None = None) -> None:
        control.cancel(s, workflow_id, (body or CancelBody()).reason)

    @app.post("/api/runs/{workflow_id:path}/terminate", status_code=204, responses=_WRITE_ERRORS,
              summary="End a run now, without running more of its code")
    def terminate(workflow_id: str, s: StoreDep, _: Writer, body: TerminateBody | None = None) -> None:
        terminate_run(s, workflow_id, (body or TerminateBody()).reason)

    @app.post("/api/runs", status_code=201, response_model=Run, response_class=_Json,
              responses={**_WRITE_ERRORS, **_NO_CODE, **_BAD_ARGUMENTS},
              summary="Start a run, queued for workers (the same id, workflow and arguments: the same run)")
    def start(body: StartBody, s: StoreDep, _: Writer) -> Any:
        try:
            wf = lookup(body.workflow)
        except UnknownWorkflowError:
            raise HTTPException(404, f"no workflow named {body.workflow!r} is registered: start replaykit ui with "
                                     "-m MODULE, the module that defines it") from None
        try:
            Client(s).start(wf, *body.args, workflow_id=body.workflow_id, queue=body.queue,
                            priority=body.priority, key=body.key, start_delay=body.delay)
        except TypeError as exc:  # arguments it cannot take
            raise HTTPException(400, str(exc)) from None
        return views.info_json(info_of(s, body.workflow_id))

    @app.post("/api/runs/{workflow_id:path}/query", response_class=_Json, responses={**_ERRORS, **_NO_CODE, **_HANDLER},
              summary="Answer a run's query from a replay of its history (nothing runs or changes)")
    def query(workflow_id: str, body: QueryBody, s: StoreDep) -> Any:
        info_of(s, workflow_id)
        try:
            answer = control.query(s, workflow_id, body.name, *body.args)
        except UnknownQueryError as exc:
            raise HTTPException(404, str(exc)) from None
        except (StoreError, NonDeterminismError, UnknownWorkflowError):
            raise  # the store, or a replay the code cannot make: not the handler's doing
        except Exception as exc:  # the handler refused these arguments, or failed on them
            raise HTTPException(400, f"the query handler {body.name!r} raised {type(exc).__name__}: {exc}") from None
        return views.jsonable(answer)

    @app.get("/metrics", include_in_schema=False)
    def metrics(s: StoreDep) -> Response:
        return Response(StoreMetrics(s).text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/api/runs/{workflow_id:path}/pause", status_code=204, responses=_WRITE_ERRORS,
              summary="Pause a run at its next yield")
    def pause(workflow_id: str, s: StoreDep, _: Writer) -> None:
        control.pause(s, workflow_id)

    @app.post("/api/runs/{workflow_id:path}/resume", status_code=204, responses=_WRITE_ERRORS,
              summary="Resume a paused run")
    def resume(workflow_id: str, s: StoreDep, _: Writer) -> None:
        control.resume(s, workflow_id)

    @app.get("/api/runs/{workflow_id:path}", response_model=Described, response_class=_Json, responses=_ERRORS,
             summary="One run: arguments, status, where it stands, how it ended")
    def describe(workflow_id: str, s: StoreDep) -> Any:
        return views.described(s, info_of(s, workflow_id), replay=False)

    return app

