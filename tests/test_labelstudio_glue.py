"""backend/labelstudio.py against a real Label Studio 1.23.2 (started by tests/ls_harness.py)."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from backend import labelstudio as ls
from tests.data_paths import DBPEDIA_SAMPLE
from tests.ls_harness import LabelStudioProcess, start_label_studio

ROOT = Path(__file__).resolve().parents[1]
DATA = DBPEDIA_SAMPLE
CLASSES = [
    "Company",
    "EducationalInstitution",
    "Artist",
    "Athlete",
    "OfficeHolder",
    "MeanOfTransportation",
    "Building",
    "NaturalPlace",
    "Village",
    "Animal",
    "Plant",
    "Album",
    "Film",
    "WrittenWork",
]
VERSION = "rarelabel-test-v1"


def test_label_config_lists_the_dbpedia_classes_and_other() -> None:
    root = ET.parse(ROOT / "label_config.xml").getroot()
    choices = root.find("Choices")
    assert root.find("Text").attrib == {"name": "text", "value": "$text"}
    assert choices is not None and choices.attrib["toName"] == "text"
    assert choices.attrib["choice"] == "single"
    assert [c.attrib["value"] for c in choices] == [*CLASSES, "Other"]


def test_choice_of_reads_choices_results() -> None:
    result = ls.choices_result("X", "other", "text") + ls.choices_result("Film", "label", "text")
    assert ls.choice_of(result) == "X"
    assert ls.choice_of(result, "label") == "Film"
    assert ls.choice_of(result, "missing") is None
    assert ls.choice_of([]) is None
    assert ls.choice_of([{"type": "labels", "value": {"labels": ["A"]}}]) is None


# ---------------------------------------------------------------- against a real Label Studio


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioProcess]:
    process = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def client(label_studio: LabelStudioProcess) -> ls.LabelStudio:
    return ls.make_client(label_studio.url, label_studio.token)


@pytest.fixture(scope="session")
def texts() -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with gzip.open(DATA, "rt", newline="", encoding="utf-8") as f:
        return list(itertools.islice(csv.DictReader(f), 200))


@pytest.fixture
def project(client: ls.LabelStudio, texts: list[dict[str, str]]) -> tuple[int, list[int]]:
    """A fresh project of 200 dbpedia texts: (project id, task ids)."""
    created = client.projects.create(
        title="glue test", label_config=(ROOT / "label_config.xml").read_text()
    )
    rows = [{"data": {"text": r["text"], "ref_id": int(r["id"])}} for r in texts]
    imported = client.projects.import_tasks(created.id, request=rows, return_task_ids=True)
    assert imported.task_count == 200
    return created.id, list(imported.task_ids)


def serve(client: ls.LabelStudio, project_id: int) -> int:
    """Act as an annotator: take the next task and annotate it (releasing its lock)."""
    task = ls.next_task(client, project_id)
    assert task is not None
    ls.create_annotation(client, task["id"], "Other", "label", "text")
    return task["id"]


@pytest.mark.e2e
def test_next_task_serves_lowest_score_and_follows_repushed_scores(
    client: ls.LabelStudio, project: tuple[int, list[int]]
) -> None:
    pid, ids = project
    a, b, c = ids[10], ids[20], ids[30]
    items = [(a, "Artist", 0.5), (b, "Company", 0.2), (c, "Film", 0.3)]
    assert ls.push_predictions(client, pid, items, VERSION, "label", "text") == 3
    ls.configure_project(client, pid, VERSION)

    assert serve(client, pid) == b  # lowest score first
    # c becomes less wanted than a: with its old 0.3 still there it would come next.
    assert ls.push_predictions(client, pid, [(c, "Film", 0.9)], VERSION, "label", "text") == 1
    assert [p.score for p in client.predictions.list(task=c)] == [0.9]
    assert serve(client, pid) == a
    assert serve(client, pid) == c


@pytest.mark.e2e
def test_configure_project_sets_sampling_and_one_ordered_tab(
    client: ls.LabelStudio, label_studio: LabelStudioProcess, project: tuple[int, list[int]]
) -> None:
    pid, ids = project
    items = [(ids[5], "Plant", 0.7), (ids[6], "Plant", 0.1), (ids[7], "Album", 0.4)]
    ls.push_predictions(client, pid, items, VERSION, "label", "text")
    view_id = ls.configure_project(client, pid, VERSION, tab_title="Likely rare first")
    assert ls.configure_project(client, pid, VERSION, tab_title="Likely rare first") == view_id
    titles = [(v.data or {}).get("title") for v in client.views.list(project=pid)]
    assert titles.count("Likely rare first") == 1

    settings = ls.check_project(client, pid)
    assert settings["sampling"] == "Uncertainty sampling"
    assert settings["model_version"] == VERSION
    assert settings["show_collab_predictions"] is False

    listed = httpx.get(
        f"{label_studio.url}/api/tasks",
        params={"view": view_id, "page_size": 5},
        headers={"Authorization": f"Token {label_studio.token}"},
    ).json()["tasks"]
    assert [t["id"] for t in listed[:3]] == [ids[6], ids[7], ids[5]]
    assert listed[3]["predictions_score"] is None  # tasks without our prediction come last


@pytest.mark.e2e
def test_annotations_come_back_through_fetch_tasks(
    client: ls.LabelStudio, project: tuple[int, list[int]]
) -> None:
    pid, ids = project
    annotation_id = ls.create_annotation(client, ids[3], "Athlete", "label", "text")

    tasks = {t["id"]: t for t in ls.fetch_tasks(client, pid)}
    assert len(tasks) == 200 and tasks[ids[0]]["data"]["text"]
    [annotation] = tasks[ids[3]]["annotations"]
    assert annotation["id"] == annotation_id and annotation["was_cancelled"] is False
    assert ls.choice_of(annotation["result"], "label") == "Athlete"
    assert [t["id"] for t in ls.fetch_annotated(client, pid)] == [ids[3]]


@pytest.mark.e2e
def test_delete_predictions(client: ls.LabelStudio, project: tuple[int, list[int]]) -> None:
    pid, ids = project
    ls.push_predictions(
        client, pid, [(ids[1], "Film", 0.1), (ids[2], "Film", 0.2)], VERSION, "label", "text"
    )
    assert ls.delete_predictions(client, pid, []) == 0  # no-op, not "every task"
    assert ls.delete_predictions(client, pid, [ids[1]]) == 1
    assert [p.task for p in client.predictions.list(project=pid)] == [ids[2]]


@pytest.mark.e2e
def test_errors_are_label_studio_errors(
    client: ls.LabelStudio, label_studio: LabelStudioProcess, project: tuple[int, list[int]]
) -> None:
    pid, ids = project
    missing = 10**6
    with pytest.raises(ls.LabelStudioError, match="404"):
        ls.next_task(client, missing)
    with pytest.raises(ls.LabelStudioError, match="404"):
        ls.fetch_tasks(client, missing)
    with pytest.raises(ls.LabelStudioError, match="404"):
        ls.configure_project(client, missing, VERSION)
    with pytest.raises(ls.LabelStudioError):
        ls.push_predictions(client, missing, [(ids[0], "Film", 0.1)], VERSION, "label", "text")
    with pytest.raises(ls.LabelStudioError, match="refused"):
        ls.fetch_tasks(ls.make_client(label_studio.url, "not-a-token"), pid)
    with pytest.raises(ls.LabelStudioError, match="cannot reach"):
        ls.fetch_tasks(ls.make_client("http://127.0.0.1:9", label_studio.token), pid)
    # Label Studio refuses a model_version that no prediction carries yet.
    with pytest.raises(ls.LabelStudioError, match="400"):
        ls.configure_project(client, pid, "never-pushed")


class _FakeBackend(BaseHTTPRequestHandler):
    calls: list[str] = []

    def _answer(self, body: dict) -> None:
        self.calls.append(f"{self.command} {self.path}")
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._answer({"status": "UP"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"model_version": VERSION} if self.path == "/setup" else {"results": []})

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.e2e
def test_connect_backend_once_and_webhook(
    client: ls.LabelStudio, project: tuple[int, list[int]]
) -> None:
    pid, _ = project
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeBackend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        backend_id = ls.connect_backend(client, pid, url, extra_params={"targets": "Artist"})
        assert ls.connect_backend(client, pid, url + "/") == backend_id
        assert "POST /setup" in _FakeBackend.calls
        assert [w.url for w in client.webhooks.list(project=str(pid))] == [f"{url}/webhook"]
    finally:
        server.shutdown()
