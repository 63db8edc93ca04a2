"""The ML backend protocol over HTTP (FastAPI): /health, /setup, /predict, /webhook, /metrics.

The class keeps the shape Label Studio users know from label-studio-ml (`setup`,
`predict(tasks, context)`, `fit(event, data)`); the routes only parse, check and answer.
Handlers answer in milliseconds: `fit` records the event in Redis and enqueues a job.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from contextlib import asynccontextmanager
from functools import lru_cache

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.client import MODEL_CLASS, basic_auth
from backend.metrics import render_metrics
from backend.payloads import (
    AnnotationEvent,
    AnnotationsDeleted,
    BadRequest,
    BulkAnnotationEvent,
    PredictBody,
    SetupBody,
    TaskBody,
    TasksEvent,
    TrainBody,
    WebhookBody,
    parse,
    project_id,
)
from backend.queueing import enqueue
from backend.settings import ConfigError, redis_url, resolve, setting
from backend.status import project_status
from backend.status import render as render_status
from backend.store import Store, connect
from model.features import with_lexical

log = logging.getLogger("rarelabel.app")

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
TASK_ACTIONS = {"TASKS_CREATED", "TASKS_DELETED"}
KNOWN_ACTIONS = (
    ANNOTATION_ACTIONS
    | TASK_ACTIONS
    | {
        "ANNOTATIONS_CREATED",
        "ANNOTATIONS_DELETED",
        "START_TRAINING",
        "PROJECT_UPDATED",
    }
)
OPEN_PATHS = {"/health"}  # what Label Studio's connection check calls before any credentials


def _annotation_event(action: str, ann, task: TaskBody | None) -> dict:
    task_id = task.id if task is not None else ann.task
    if task_id is None:
        raise BadRequest("an annotation event needs the task id ('task.id' or 'annotation.task')")
    annotation = ann.model_dump(include={"id", "was_cancelled", "updated_at"})
    annotation["result"] = [r.model_dump(exclude_none=True) for r in ann.result]
    annotation["task"] = task_id
    return {
        "action": action,
        "annotation": annotation,
        "task": {"id": task_id, "data": task and task.data},
    }


def validate_event(payload) -> tuple[int, list[dict]] | None:
    """Check a webhook and keep only what the worker needs; None for actions we ignore."""
    hook = parse(WebhookBody, payload)
    if hook.action not in KNOWN_ACTIONS:
        return None
    p, action = project_id(hook.project), hook.action
    if action in ANNOTATION_ACTIONS:
        body = parse(AnnotationEvent, payload)
        events = [_annotation_event(action, body.annotation, body.task)]
    elif action == "ANNOTATIONS_CREATED":
        body = parse(BulkAnnotationEvent, payload)
        tasks = {t.id: t for t in body.task}
        events = [
            _annotation_event("ANNOTATION_CREATED", a, tasks.get(a.task)) for a in body.annotation
        ]
    elif action == "ANNOTATIONS_DELETED":
        body = parse(AnnotationsDeleted, payload)
        events = [{"action": action, "annotations": [{"id": a.id} for a in body.annotations]}]
    elif action in TASK_ACTIONS:
        body = parse(TasksEvent, payload)
        keep = {"id", "data"} if action == "TASKS_CREATED" else {"id"}
        events = [{"action": action, "tasks": [t.model_dump(include=keep) for t in body.tasks]}]
    elif action == "PROJECT_UPDATED":
        project = payload["project"] if isinstance(payload.get("project"), dict) else {}
        fields = ("label_config", "sampling", "model_version")
        events = [{"action": action, **{k: project[k] for k in fields if k in project}}]
    else:
        events = [{"action": action}]
    return p, [{**e, "received_at": time.time()} for e in events]


class RareCategoryBackend:
    """The Label Studio ML backend contract; state lives in the store, never in this object."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.missed: set[int] = set()  # projects whose webhooks Redis could not take

    def setup(self, body: SetupBody) -> dict:
        p = project_id(body.project)
        try:
            cfg = resolve(p, body.schema_, body.extra_params, body.hostname, body.access_token)
        except ConfigError as e:
            raise BadRequest(str(e)) from None
        known = self.store.config(p)
        self.store.save_config(cfg)
        if known is None or known.to_json() != cfg.to_json():
            self.fit("SETUP", {"project": p})
        return {"model_version": cfg.model_version}

    def predict(self, tasks: list[TaskBody], context: dict) -> list[dict]:
        """Score tasks from the current model; the score is the queue priority (0 = first).

        A task the pool does not hold is embedded to be scored, but never joins the pool:
        only Label Studio's own events and exports say which tasks exist."""
        p = context["project"]
        cfg, model = self.store.config(p), self.store.model(p)
        if cfg is None or model is None:
            return [{"result": [], "score": 1.0, "model_version": "none"} for _ in tasks]
        vecs = self.store.vectors(p, [t.id for t in tasks])
        unknown = [t.model_dump() for t in tasks if t.id not in vecs]
        if unknown:
            from backend.embedder import embedder, texts_of  # loads the model: only if needed

            texts = texts_of(cfg, unknown)
            if texts:
                vecs.update(zip(texts, embedder().encode(list(texts.values())), strict=True))
        pushed = self.store.pushed(p)
        lexical = self.store.lexical(p, [t.id for t in tasks if t.id in vecs])
        out = []
        for task in tasks:
            x = vecs.get(task.id)
            if x is None:
                out.append({"result": [], "score": 1.0, "model_version": model.model_version})
                continue
            if model.width > len(x):  # the rankers also read the pool's word statistics; a
                # task the worker has not featurised yet gets zeros there (its embedding ranks)
                lex = lexical.get(task.id, np.zeros(model.width - len(x), np.float32))
                x = with_lexical(x[None], lex[None])[0]
            if model.width != len(x):  # another embedding model than the rankers': no score
                out.append({"result": [], "score": 1.0, "model_version": model.model_version})
                continue
            best = int(np.argmax(model.probabilities(x)[0]))
            choice = {"choices": [model.targets[best]]}
            result = {"from_name": cfg.label.from_name, "to_name": cfg.label.to_name}
            result |= {"type": "choices", "value": choice}
            score = pushed.get(task.id, 1.0)
            out.append({"result": [result], "score": score, "model_version": model.model_version})
        return out

    def fit(self, event: str, data: dict) -> None:
        """Record the event durably and make sure one job will apply it; returns at once.

        An event that cannot be recorded (Redis away) is lost, as Label Studio never sends
        it again: its project is remembered, and reconciled first once Redis is back."""
        p = project_id(data.get("project"))
        fields = {k: v for k, v in data.items() if k != "project"}
        try:
            if self.store.record_event(p, {"action": event, **fields}):
                enqueue(self.store, p)
        except RedisError:
            self.missed.add(p)
            raise
        if self.missed:
            self.store.reconcile_soon(self.missed)
            self.missed.clear()


@lru_cache(maxsize=1)
def _backend() -> RareCategoryBackend:
    return RareCategoryBackend(Store(connect(redis_url())))


def _authorised(request: Request) -> bool:
    creds = basic_auth()
    if creds is None or request.url.path in OPEN_PATHS:
        return True
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        given_user, _, given_pass = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    user_ok = secrets.compare_digest(given_user.encode(), creds[0].encode())
    return secrets.compare_digest(given_pass.encode(), creds[1].encode()) and user_ok


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """A web process that starts may have been down while Label Studio sent webhooks (it
    never sends them again): every project's reconciliation becomes due at once."""
    try:
        store = _backend().store
        store.reconcile_soon(store.projects())
    except RedisError as e:  # the sweep catches up once Redis is back
        log.warning("could not ask for a reconciliation at start: %s", e)
    yield


def create_app() -> FastAPI:
    app = FastAPI(title="rarelabel", description=__doc__, lifespan=_lifespan)

    @app.middleware("http")
    async def basic_auth_middleware(request: Request, call_next):
        if not _authorised(request):
            return JSONResponse({"error": "unauthorised"}, 401, {"WWW-Authenticate": "Basic"})
        return await call_next(request)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        log.warning("%s %s: 400 %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc)}, 400)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        message = f"{where}: {first.get('msg', 'invalid request')}"
        log.warning("%s %s: 400 %s", request.method, request.url.path, message)
        return JSONResponse({"error": message}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, exc.headers)

    @app.exception_handler(RedisError)
    async def store_down(request: Request, exc: RedisError):
        log.error("%s %s: 503, the store is unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": "the backend's store (Redis) is unavailable"}, 503)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError):
        return JSONResponse({"error": "the body is nested too deeply"}, 400)

    @app.get("/health")
    @app.get("/")
    def health():
        try:
            _backend().store.r.ping()
        except Exception as e:  # noqa: BLE001 - any failure means "down"
            return JSONResponse({"status": "DOWN", "error": f"redis: {e}"}, 503)
        return {"status": "UP", "model_class": MODEL_CLASS, "status_page": "/status"}

    @app.post("/setup")
    def setup(body: SetupBody):
        return _backend().setup(body)

    @app.post("/predict")
    def predict(body: PredictBody):
        context = {"project": project_id(body.project), "params": body.params}
        return {"results": _backend().predict(body.tasks, context)}

    @app.post("/webhook")
    def webhook(body: WebhookBody):
        checked = validate_event(body.model_dump())
        if checked is None:
            return {"status": "ignored"}
        p, events = checked
        for event in events:
            action = event.pop("action")
            _backend().fit(action, {"project": p, **event})
        return {"status": "ok"}

    @app.post("/train")
    def train(body: TrainBody):
        """The older protocol's training call: same as START_TRAINING."""
        _backend().fit("START_TRAINING", {"project": project_id(body.project)})
        return {"status": "ok"}

    @app.get("/versions")
    def versions():
        return {"versions": [setting("model_version")]}

    @app.get("/status", response_class=HTMLResponse)
    def status_page():
        store = _backend().store
        return render_status([project_status(store, p) for p in store.projects()])

    @app.get("/status.json")
    def status_json():
        store = _backend().store
        return {"projects": [project_status(store, p) for p in store.projects()]}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics():
        return render_metrics(_backend().store)

    return app
