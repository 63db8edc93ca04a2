"""The request bodies Label Studio sends, declared: FastAPI documents them in its OpenAPI
schema, and anything else is refused with a 400 naming the field.

Only what the backend reads is declared; Label Studio's other fields pass unread.
A webhook is checked in two steps: its `action` first, then the fields that action carries,
since an action we ignore may carry any shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError


class BadRequest(ValueError):
    """A payload the backend refuses with a 400 and a message."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Ref(_Loose):
    id: StrictInt


class ChoiceValue(BaseModel):
    model_config = ConfigDict(extra="allow")
    choices: list[str] | None = None


class Region(_Loose):
    type: str | None = None
    from_name: str | None = None
    to_name: str | None = None
    value: ChoiceValue = Field(default_factory=ChoiceValue)


class AnnotationBody(_Loose):
    id: StrictInt
    result: list[Region] = Field(default_factory=list)
    task: StrictInt | None = None
    was_cancelled: StrictBool | None = False
    updated_at: str | None = None


class TaskBody(_Loose):
    id: StrictInt
    data: dict[str, Any] | None = None


ProjectField = StrictInt | str | Ref | None


def project_id(value: Any) -> int:
    """Label Studio sends `"12.1700000000"` to /setup and /predict, `{"id": 12}` to /webhook."""
    if isinstance(value, Ref):
        return value.id
    if isinstance(value, dict) and isinstance(value.get("id"), int):
        value = value["id"]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.split(".", 1)[0].isdigit():
        return int(value.split(".", 1)[0])
    raise BadRequest(f"missing or malformed 'project': {value!r:.80}")


class WebhookBody(BaseModel):
    """Any webhook: the action names which of the other fields it carries."""

    model_config = ConfigDict(extra="allow")
    action: str
    project: Any = None


class AnnotationEvent(_Loose):  # ANNOTATION_CREATED, ANNOTATION_UPDATED
    annotation: AnnotationBody
    task: TaskBody | None = None


class BulkAnnotationEvent(_Loose):  # ANNOTATIONS_CREATED (an import of annotations)
    annotation: list[AnnotationBody]
    task: list[TaskBody] = Field(default_factory=list)


class AnnotationsDeleted(_Loose):
    annotations: list[Ref]


class TasksEvent(_Loose):  # TASKS_CREATED, TASKS_DELETED
    tasks: list[TaskBody]


class SetupBody(_Loose):
    project: ProjectField = None
    schema_: str = Field(alias="schema")
    extra_params: dict[str, Any] | str | None = None
    hostname: str | None = None
    access_token: str | None = None
    model_version: str | None = None


class PredictBody(_Loose):
    tasks: list[TaskBody]
    project: ProjectField = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class TrainBody(_Loose):
    project: ProjectField = None


def one_line(err: ValidationError) -> str:
    """The first problem of a validation error, as `field.path: message`."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def parse(model: type[BaseModel], payload: Any) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise BadRequest(one_line(e)) from None
