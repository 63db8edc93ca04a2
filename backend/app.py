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
from functools import lru_cache

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from backend import jobs
from backend.metrics import render_metrics
from backend.settings import ConfigError, env, redis_url, resolve
from backend.store import Store, connect
from model.features import with_lexical
from model.rankers import class_probabilities

log = logging.getLogger("rarelabel.app")

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
KNOWN_ACTIONS = ANNOTATION_ACTIONS | {
    "ANNOTATIONS_DELETED", "TASKS_CREATED", "START_TRAINING", "PROJECT_UPDATED"
}  # fmt: skip


class BadRequest(ValueError):
    """A payload the backend refuses with a 400 and a message."""


def project_id(value) -> int:
    """Label Studio sends `"12.1700000000"` to /setup and /predict, `{"id": 12}` to /webhook."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.split(".", 1)[0].isdigit():
        return int(value.split(".", 1)[0])
    raise BadRequest(f"missing or malformed 'project': {value!r}")


def _id(obj, what: str) -> int:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), int):
        raise BadRequest(f"'{what}' must be an object with an integer 'id'")
    return obj["id"]


def validate_event(payload) -> tuple[int, dict] | None:
    """Check a webhook and keep only what the worker needs; None for actions we ignore."""
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise BadRequest("a webhook needs a JSON object with a string 'action'")
    action = payload["action"]
    if action not in KNOWN_ACTIONS:
        return None
    p = project_id(payload.get("project"))
    event: dict = {"action": action, "received_at": time.time()}
    if action in ANNOTATION_ACTIONS:
        ann = payload.get("annotation")
        _id(ann, "annotation")
        task = payload.get("task") if isinstance(payload.get("task"), dict) else {}
        task_id = task.get("id", ann.get("task"))
        if not isinstance(task_id, int):
            raise BadRequest(
                "an annotation event needs the task id ('task.id' or 'annotation.task')"
            )
        if not isinstance(ann.get("result", []), list):
            raise BadRequest("'annotation.result' must be a list")
        event["annotation"] = {k: ann.get(k) for k in ("id", "result", "was_cancelled")}
        event["annotation"]["task"] = task_id
        event["task"] = {"id": task_id, "data": task.get("data")}
    elif action == "ANNOTATIONS_DELETED":
        anns = payload.get("annotations")
        if not isinstance(anns, list):
            raise BadRequest("'annotations' must be a list of {id}")
        event["annotations"] = [{"id": _id(a, "annotations[]")} for a in anns]
    elif action == "TASKS_CREATED":
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list")
        event["tasks"] = [{"id": _id(t, "tasks[]"), "data": t.get("data")} for t in tasks]
    elif action == "PROJECT_UPDATED":
        for key in ("label_config", "sampling", "model_version"):
            if key in payload["project"]:
                event[key] = payload["project"][key]
    return p, event


class RareCategoryBackend:
    """The Label Studio ML backend contract; state lives in the store, never in this object."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def setup(self, payload: dict) -> dict:
        p = project_id(payload.get("project"))
        schema = payload.get("schema")
        if not isinstance(schema, str):
            raise BadRequest("/setup needs the project's label config in 'schema'")
        try:
            cfg = resolve(p, schema, payload.get("extra_params"),
                          payload.get("hostname"), payload.get("access_token"))  # fmt: skip
        except ConfigError as e:
            raise BadRequest(str(e)) from None
        known = self.store.config(p)
        self.store.save_config(cfg)
        if known is None or known.to_json() != cfg.to_json():
            self.fit("SETUP", {"project": {"id": p}})
        return {"model_version": cfg.model_version}

    def predict(self, tasks: list[dict], context: dict) -> list[dict]:
        """Score tasks from the current model; the score is the queue priority (0 = first)."""
        p = context["project"]
        cfg, model = self.store.config(p), self.store.model(p)
        if cfg is None or model is None:
            return [{"result": [], "score": 1.0, "model_version": "none"} for _ in tasks]
        ids = [_id(t, "tasks[]") for t in tasks]
        vecs = self.store.vectors(p, ids)
        vecs.update(jobs.embed_tasks(self.store, cfg, [t for t in tasks if t["id"] not in vecs]))
        W, b = np.asarray(model["W"], np.float32), np.asarray(model["b"], np.float32)
        linear = np.array(model["stages"]) == "linear"
        pushed = self.store.pushed(p)
        lexical = self.store.lexical(p, [t for t in ids if t in vecs])
        out = []
        for task_id in ids:
            if task_id not in vecs:
                out.append({"result": [], "score": 1.0, "model_version": model["model_version"]})
                continue
            x = vecs[task_id]
            if W.shape[1] > len(x):  # the rankers also read the pool's word statistics; a
                # task the worker has not featurised yet gets zeros there (its embedding ranks)
                lex = lexical.get(task_id, np.zeros(W.shape[1] - len(x), np.float32))
                x = with_lexical(x[None], lex[None])[0]
            best = int(np.argmax(class_probabilities(W @ x + b, linear)))
            out.append({
                "result": [{
                    "from_name": cfg.label.from_name, "to_name": cfg.label.to_name,
                    "type": "choices", "value": {"choices": [model["targets"][best]]},
                }],
                "score": pushed.get(task_id, 1.0),
                "model_version": model["model_version"],
            })  # fmt: skip
        return out

    def fit(self, event: str, data: dict) -> None:
        """Record the event durably and make sure one job will apply it; returns at once."""
        p = project_id(data.get("project"))
        if self.store.record_event(p, {"action": event, **{k: v for k, v in data.items()
                                                            if k != "project"}}):  # fmt: skip
            jobs.enqueue(self.store, p)


@lru_cache(maxsize=1)
def _backend() -> RareCategoryBackend:
    return RareCategoryBackend(Store(connect(redis_url())))


def _authorised(request: Request) -> bool:
    user, password = env("BASIC_AUTH_USER"), env("BASIC_AUTH_PASS")
    if not user:
        return True
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        given_user, _, given_pass = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return secrets.compare_digest(given_user, user) and secrets.compare_digest(
        given_pass, password or ""
    )


def create_app() -> FastAPI:
    app = FastAPI(title="rarelabel", description=__doc__)

    @app.middleware("http")
    async def basic_auth(request: Request, call_next):
        if not _authorised(request):
            return JSONResponse({"error": "unauthorised"}, 401, {"WWW-Authenticate": "Basic"})
        return await call_next(request)

    async def body(request: Request) -> dict:
        try:
            payload = await request.json()
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BadRequest("the body must be a JSON object")
        return payload

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        log.warning("%s %s: 400 %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc)}, 400)

    @app.get("/health")
    @app.get("/")
    def health():
        try:
            _backend().store.r.ping()
        except Exception as e:  # noqa: BLE001 - any failure means "down"
            return JSONResponse({"status": "DOWN", "error": f"redis: {e}"}, 503)
        return {"status": "UP", "model_class": "RareCategoryBackend"}

    @app.post("/setup")
    async def setup(request: Request):
        return _backend().setup(await body(request))

    @app.post("/predict")
    async def predict(request: Request):
        payload = await body(request)
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("/predict needs a list of 'tasks'")
        context = {"project": project_id(payload.get("project")), "params": payload.get("params")}
        return {"results": _backend().predict(tasks, context)}

    @app.post("/webhook")
    async def webhook(request: Request):
        checked = validate_event(await body(request))
        if checked is None:
            return {"status": "ignored"}
        p, event = checked
        action = event.pop("action")
        _backend().fit(action, {"project": p, **event})
        return {"status": "ok"}

    @app.post("/train")
    async def train(request: Request):
        """The older protocol's training call: same as START_TRAINING."""
        p = project_id((await body(request)).get("project"))
        _backend().fit("START_TRAINING", {"project": p})
        return {"status": "ok"}

    @app.get("/versions")
    def versions():
        return {"versions": [env("RARELABEL_MODEL_VERSION", "rarelabel")]}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics():
        return render_metrics(_backend().store)

    return app
