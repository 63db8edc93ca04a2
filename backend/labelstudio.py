"""Glue between the backend and Label Studio (open-source 1.23.x, label-studio-sdk 2.x).

Everything the backend asks of Label Studio goes through these functions, so the quirks of its API
live in one place. Facts checked in the Label Studio 1.23.2 source:

* *Label All Tasks* with ``sampling = "Uncertainty sampling"`` serves unlabelled tasks holding a
  prediction whose ``model_version`` equals ``project.model_version``, **lowest score first**
  (``projects/functions/next_task.py``). So we push ``score`` = low for the most wanted tasks.
  A task with several current-version predictions sorts by its lowest one, hence
  ``push_predictions`` deletes a task's old predictions before writing the new one.
* ``project.model_version`` can only be set to a version that already has predictions (or to an
  ML backend's title), so ``configure_project`` must run after the first ``push_predictions``.
* A PATCH with ``show_collab_predictions = false`` (the "use predictions to prelabel" switch)
  blanks ``project.model_version``, which silently turns the ordering into random order unless the
  same PATCH sets ``model_version`` again, as ``configure_project`` does.
* ``GET /api/projects/{id}/next`` locks the served task for that user (24 h by default) and keeps
  serving it until the user annotates it.
* If the project has members (Enterprise teams) and more than one annotator, Label Studio picks at
  random among *all* tasks holding a current-version prediction: predict only the queue's head.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.request_options import RequestOptions

UNCERTAINTY_SAMPLING = "Uncertainty sampling"  # Project.UNCERTAINTY in projects/models.py
_CHUNK = 5000  # items per bulk request: keeps each request well under the client timeout


class LabelStudioError(RuntimeError):
    """Label Studio is unreachable, refused the credentials, or rejected a request.

    `status` is the HTTP status Label Studio answered (None when it could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _base_url(client: LabelStudio) -> str:
    return client._client_wrapper.get_base_url()


def _fail(client: LabelStudio, action: str, code: int | None, body: Any) -> LabelStudioError:
    if code in (401, 403):
        why = "the API key was refused"
    elif code == 404:
        why = "not found (wrong project, task or view id?)"
    else:
        why = str(body)[:300]
    return LabelStudioError(f"{action}: HTTP {code} from {_base_url(client)}: {why}", code)


@contextmanager
def _errors(client: LabelStudio, action: str) -> Iterator[None]:
    """Turn SDK / HTTP failures into one LabelStudioError that says what we were doing."""
    try:
        yield
    except ApiError as e:
        raise _fail(client, action, e.status_code, e.body) from e
    except httpx.HTTPError as e:
        raise LabelStudioError(f"{action}: cannot reach {_base_url(client)}: {e!r}") from e


def _request(
    client: LabelStudio, method: str, path: str, action: str, allow: tuple[int, ...] = (), **kw: Any
) -> httpx.Response:
    """Raw call for what the SDK lacks (``/next``, DM actions), with the SDK's auth and retries.

    Any status >= 300 not in ``allow`` raises LabelStudioError.
    """
    with _errors(client, action):
        response = client._client_wrapper.httpx_client.request(path, method=method, **kw)
    if response.status_code >= 300 and response.status_code not in allow:
        raise _fail(client, action, response.status_code, response.text)
    return response


def make_client(url: str, api_key: str, timeout: float = 300.0) -> LabelStudio:
    """Client for a Label Studio server.

    Accepts a legacy token or a personal access token (a JWT refresh token): the SDK tells them
    apart and exchanges a PAT for short-lived access tokens by itself. The long timeout is for
    ``fetch_tasks`` on big projects (the export is one request).
    """
    try:
        return LabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=timeout)
    except ApiError as e:  # an expired PAT is rejected at construction
        raise LabelStudioError(f"invalid Label Studio API key: {e.body}", e.status_code) from e
    except httpx.HTTPError as e:  # exchanging a PAT is a request
        raise LabelStudioError(f"cannot reach {url}: {e!r}") from e


def list_projects(client: LabelStudio) -> list[int]:
    with _errors(client, "listing projects"):
        return [int(p.id) for p in client.projects.list()]


def check_project(client: LabelStudio, project_id: int) -> dict[str, Any]:
    """The project's settings; raises LabelStudioError if it is unreachable or missing."""
    with _errors(client, f"reading project {project_id}"):
        project = client.projects.get(project_id)
    return project.dict()


ANNOTATION_FIELDS = ("id", "result", "was_cancelled", "updated_at")


def _slim(raw: bytes) -> list[dict[str, Any]]:
    """Tasks as ``{"id", "data", "annotations": [ANNOTATION_FIELDS]}``."""
    return [
        {
            "id": task["id"],
            "data": task["data"],
            "annotations": [
                {k: a.get(k) for k in ANNOTATION_FIELDS} for a in task.get("annotations", [])
            ],
        }
        for task in json.loads(raw)
    ]


def fetch_tasks(client: LabelStudio, project_id: int, timeout: float = 1800.0) -> list[dict]:
    """All tasks of a project, with their annotations (see `_slim`).

    Label Studio serialises tasks at ~1.5 ms each whatever the endpoint, so reading a whole big
    project is slow. Measured on a 20k-task project (2-core machine shared with other jobs,
    SQLite, dev server), A/B in the same minutes: export snapshot (``POST
    /api/projects/{id}/exports/``, then download, used here) 22-43 s; synchronous
    ``GET /api/projects/{id}/export`` 41-54 s;
    ``/api/tasks?fields=task_only`` (no annotations) 46 s; ``/api/tasks?fields=all`` ~60 s.
    """
    exports = client.projects.exports
    slow: RequestOptions = {"timeout": timeout}  # the export may take minutes
    with _errors(client, f"exporting tasks of project {project_id}"):
        options = {"drafts": {"only_id": True}, "predictions": {"only_id": True}}
        snapshot = exports.create(
            project_id, title="rarelabel-fetch", serialization_options=options, request_options=slow
        )
        deadline = time.monotonic() + timeout
        while snapshot.status not in ("completed", "failed"):  # async with an RQ worker
            if time.monotonic() > deadline:
                raise LabelStudioError(f"export of project {project_id} timed out")
            time.sleep(1.0)
            snapshot = exports.get(project_id, snapshot.id)
        try:
            if snapshot.status != "completed":
                raise LabelStudioError(f"export of project {project_id} failed")
            raw = b"".join(
                exports.download(project_id, snapshot.id, export_type="JSON", request_options=slow)
            )
        finally:
            exports.delete(project_id, snapshot.id)
    return _slim(raw)


def fetch_annotated(client: LabelStudio, project_id: int, timeout: float = 600.0) -> list[dict]:
    """Only the tasks that hold an annotation, as `fetch_tasks` gives them.

    The synchronous export with ``download_all_tasks=false`` filters in SQL, so its cost grows
    with the labelled tasks only (20 annotated tasks of 20k: 0.15 s): cheap enough for the
    periodic reconciliation."""
    slow: RequestOptions = {"timeout": timeout}
    with _errors(client, f"exporting the annotated tasks of project {project_id}"):
        raw = b"".join(
            client.projects.exports.download_sync(
                project_id, export_type="JSON", download_all_tasks=False, request_options=slow
            )
        )
    return _slim(raw)


def first_tasks(client: LabelStudio, project_id: int, n: int) -> list[dict[str, Any]]:
    """The project's first `n` tasks, without annotations: one Data Manager page, whose cost
    follows `n` (256 tasks: ~0.3 s), where the export of a big project takes ~1.5 ms a task."""
    action = f"reading the first tasks of project {project_id}"
    params = {"project": project_id, "page": 1, "page_size": n, "fields": "task_only"}
    response = _request(client, "GET", "api/tasks", action, params=params)
    return [
        {"id": t["id"], "data": t.get("data") or {}, "annotations": []}
        for t in response.json().get("tasks", [])
    ]


def existing_tasks(client: LabelStudio, project_id: int, task_ids: Iterable[int]) -> set[int]:
    """Which of these tasks the project still has: one Data Manager page restricted to them
    (``selectedItems``), so its cost follows the ids asked, not the project."""
    ids = sorted({int(t) for t in task_ids})
    found: set[int] = set()
    action = f"checking tasks of project {project_id}"
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        query = json.dumps({"selectedItems": {"all": False, "included": chunk}})
        params = {
            "project": project_id,
            "page_size": len(chunk),
            "query": query,
            "fields": "task_only",
        }
        response = _request(client, "GET", "api/tasks", action, params=params)
        found |= {int(t["id"]) for t in response.json().get("tasks", [])}
    return found


def our_predictions(client: LabelStudio, project_id: int, model_version: str) -> dict[int, float]:
    """Task -> score of every prediction of `model_version` in the project (the lowest per
    task: the one that orders it), read back so a store that lost them can be rebuilt."""
    action = f"listing predictions of project {project_id}"
    response = _request(client, "GET", "api/predictions/", action, params={"project": project_id})
    body = response.json()
    rows = body.get("results", []) if isinstance(body, dict) else body
    out: dict[int, float] = {}
    for p in rows:
        if p.get("model_version") == model_version and p.get("task") is not None:
            score = float(p.get("score") or 0.0)
            out[int(p["task"])] = min(score, out.get(int(p["task"]), score))
    return out


def ml_backends(client: LabelStudio, project_id: int) -> list[dict[str, Any]]:
    """The project's ML backend records (url, title, extra_params, ...)."""
    with _errors(client, f"listing ML backends of project {project_id}"):
        return [b.dict() for b in client.ml.list(project=project_id)]


def set_webhook_headers(
    client: LabelStudio, project_id: int, url: str, headers: dict[str, str]
) -> int:
    """Give the webhook Label Studio made for an ML backend at `url` these headers; returns
    how many webhooks changed.

    Label Studio creates that webhook (``<url>/webhook``, ``ml/models.py``) without headers,
    and an ML backend's basic-auth credentials are used for /setup and /predict only, so a
    backend behind auth would refuse every webhook until they are set here."""
    target = url.rstrip("/") + "/webhook"
    changed = 0
    with _errors(client, f"setting the webhook headers of project {project_id}"):
        for hook in client.webhooks.list(project=str(project_id)):
            if hook.url == target and (hook.headers or {}) != headers:
                client.webhooks.update(id=hook.id, url=hook.url, headers=headers)
                changed += 1
    return changed


def choices_of(annotation_result: list[dict[str, Any]], from_name: str | None = None) -> list[str]:
    """Every label chosen in the ``choices`` results (of control ``from_name`` if given), in
    order: one for a single-choice control, any number for ``choice="multiple"``."""
    out: list[str] = []
    for region in annotation_result or []:
        if region.get("type") != "choices" or (from_name and region.get("from_name") != from_name):
            continue
        for choice in (region.get("value") or {}).get("choices") or []:
            if isinstance(choice, str) and choice not in out:
                out.append(choice)
    return out


def choice_of(annotation_result: list[dict[str, Any]], from_name: str | None = None) -> str | None:
    """The first label chosen in a ``choices`` result (of control ``from_name`` if given)."""
    chosen = choices_of(annotation_result, from_name)
    return chosen[0] if chosen else None


def choices_result(label: str, from_name: str, to_name: str) -> list[dict[str, Any]]:
    """A ``choices`` result selecting ``label``, as annotations and predictions store it."""
    value = {"choices": [label]}
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": value}]


def _view_payload(title: str) -> dict[str, Any]:
    # Ascending score = the order Label All Tasks uses; tasks without a current-version
    # prediction sort last (nulls_last in data_manager/managers.py:apply_ordering).
    return {
        "title": title,
        "ordering": ["tasks:predictions_score"],
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
    }


def configure_project(
    client: LabelStudio,
    project_id: int,
    model_version: str,
    tab_title: str = "Likely rare first",
    prelabel: bool = False,
) -> int:
    """Make *Label All Tasks* follow our scores; returns the id of the Data Manager tab.

    Sets uncertainty sampling and ``model_version`` (must already have predictions, see module
    doc), and ``show_collab_predictions = prelabel``: off by default so annotators are not primed
    by a pre-selected label. Creates, or repairs, one tab ``tab_title`` listing unlabelled tasks by
    ascending prediction score, the same order annotators get. Idempotent; cheap enough to call
    again whenever the project settings may have been edited (``PROJECT_UPDATED``).
    """
    with _errors(client, f"configuring project {project_id}"):
        client.projects.update(
            project_id,
            sampling=UNCERTAINTY_SAMPLING,
            model_version=model_version,
            show_collab_predictions=prelabel,
        )
        payload = _view_payload(tab_title)
        for view in client.views.list(project=project_id):
            if (view.data or {}).get("title") == tab_title:
                client.views.update(str(view.id), data=payload, project=project_id)
                return int(view.id)
        return int(client.views.create(data=payload, project=project_id).id)


def delete_predictions(client: LabelStudio, project_id: int, task_ids: Iterable[int]) -> int:
    """Delete every prediction (of any model) on these tasks; returns how many were deleted.

    One Data Manager action per 5000 tasks. Label Studio deletes predictions one by one with a
    signal each: ~12-15 ms per existing prediction server-side (1000 → 12-15 s), tasks without
    predictions cost nothing. An empty ``task_ids`` is a no-op (an action without selected items
    would hit every task of the project).
    """
    ids = sorted({int(t) for t in task_ids})
    deleted = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        response = _request(
            client,
            "POST",
            "api/dm/actions",
            f"deleting predictions in project {project_id}",
            params={"id": "delete_tasks_predictions", "project": project_id},
            json={"selectedItems": {"all": False, "included": chunk}},
        )
        deleted += int(response.json().get("processed_items", 0))
    return deleted


def push_predictions(
    client: LabelStudio,
    project_id: int,
    items: Iterable[tuple[int, str, float]],
    model_version: str,
    from_name: str,
    to_name: str,
) -> int:
    """Write ``(task_id, label, score)`` as the only prediction of each task; returns the count.

    Old predictions of these tasks are deleted first, so a stale low score cannot keep a task at
    the front (see ``delete_predictions`` for its cost), then all new ones go in one
    ``POST /api/projects/{id}/import/predictions`` per 5000. On a 20k-task project the import
    alone costs ~1.0-1.3 s whatever the count, because Label Studio's default import path
    recounts every task of the project; with
    ``fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short=true`` in Label
    Studio's environment it recounts only the touched tasks (10 → 0.08 s, 1000 → 0.9 s). With
    that flag, whole calls measured on a loaded 2-core machine: 10 tasks 0.18 s (0.31 s when
    replacing), 100 → 0.32 s (1.0 s), 1000 → 1.2 s (7.7 s). Push only tasks whose score changed.

    A task Label Studio no longer has makes the import answer 400 (``data_import/api.py``
    checks every task id). With the flag above it checks and writes in batches of 500, so
    batches before the failing one are written: the caller reads our predictions back after
    a failure (``backend.retrain``).
    """
    latest = {int(task_id): (label, float(score)) for task_id, label, score in items}
    if not latest:
        return 0
    delete_predictions(client, project_id, latest)
    rows = [
        {
            "task": task_id,
            "model_version": model_version,
            "score": score,
            "result": choices_result(label, from_name, to_name),
        }
        for task_id, (label, score) in latest.items()
    ]
    written = 0
    with _errors(client, f"importing predictions into project {project_id}"):
        for start in range(0, len(rows), _CHUNK):
            response = client.projects.import_predictions(
                project_id, request=rows[start : start + _CHUNK]
            )
            written += int(response.created or 0)
    return written


def next_task(client: LabelStudio, project_id: int) -> dict[str, Any] | None:
    """The task *Label All Tasks* would show this user now, or None when nothing is left.

    Same call as the labelling UI (``GET /api/projects/{id}/next``); it locks the task for the
    user until they annotate it, so an annotator loop must annotate each task it receives.
    """
    action = f"asking project {project_id} for the next task"
    response = _request(client, "GET", f"api/projects/{project_id}/next", action, allow=(404,))
    if response.status_code == 404:
        check_project(client, project_id)  # raises if the project itself is missing
        return None
    return response.json()


def create_annotation(
    client: LabelStudio, task_id: int, label: str, from_name: str, to_name: str
) -> int:
    """Annotate a task with one choice, as an annotator submitting it would; returns its id."""
    result = choices_result(label, from_name, to_name)
    with _errors(client, f"annotating task {task_id}"):
        return int(client.annotations.create(task_id, result=result).id)


def connect_backend(
    client: LabelStudio,
    project_id: int,
    url: str,
    title: str = "rarelabel",
    extra_params: dict[str, Any] | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> int:
    """Connect our ML backend to the project (once) and return its ML backend id.

    Label Studio calls ``<url>/health`` and ``<url>/setup`` before accepting it and registers a
    webhook to ``<url>/webhook`` for all actions. With prelabelling on and no ``model_version`` yet,
    the project's ``model_version`` becomes ``title``: ``configure_project`` puts ours back.
    """
    url = url.rstrip("/")
    with _errors(client, f"connecting ML backend {url} to project {project_id}"):
        for backend in client.ml.list(project=project_id):
            if (backend.url or "").rstrip("/") == url:
                return int(backend.id)
        auth = {}
        if basic_auth:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0]}
            auth["basic_auth_pass"] = basic_auth[1]
        backend = client.ml.create(
            project=project_id, url=url, title=title, extra_params=extra_params or {}, **auth
        )
    return int(backend.id)
