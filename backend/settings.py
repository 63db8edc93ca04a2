"""Every setting, declared once: its environment variable, default, parser and meaning.

A project's settings are resolved once (at `/setup`, or on first contact with a project)
and stored with the project, so web processes and workers agree on them: the ML backend's
extra params win over environment variables over defaults. The ranker's parameters keep
their defaults in `model.prioritiser.RankerConfig`, which also validates them (the
simulation builds one without this module); the table below reads those defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from model.estimate import TARGET_RECALL, UNIFORM_SHARE
from model.prioritiser import RankerConfig

OTHER_LIKE = re.compile(r"^(other|others|none|negative|misc|miscellaneous|rest)$", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting or label config the backend cannot work with; the message says why."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _targets(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ConfigError(f"targets must be a list or a comma-separated string, got {value!r}")


def _descriptions(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError("'descriptions' must map a target to a text")
    return {str(k): str(v) for k, v in value.items()}


def _seals_above(value: Any) -> int | None:
    """A pool size (0 = every pool), or "off" / null: every row is ranked at each step, however
    large the pool."""
    if value is None or str(value).strip().lower() in ("off", "none", "null"):
        return None
    return int(value)


def _audit_rate(value: Any) -> float:
    rate = float(value)
    if not 0 <= rate <= 1:
        raise ConfigError(f"need audit_rate in [0, 1], got {rate}")
    return rate


def _audit_uniform_share(value: Any) -> float:
    share = float(value)
    if not 0 < share <= 1:
        raise ConfigError(f"need audit_uniform_share in (0, 1], got {share}")
    return share


def _target_recall(value: Any) -> float:
    recall = float(value)
    if not 0.5 <= recall < 1:
        raise ConfigError(f"need target_recall in [0.5, 1), got {recall}")
    return recall


def _switch(name: str) -> Callable[[Any], bool]:
    """A parser of true/false, 1/0, yes/no, on/off (a JSON boolean, or the environment's
    string) whose error names the setting."""

    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"need {name} true or false, got {value!r}")

    return parse


def _queue_size(value: Any) -> int:
    n = int(value)
    if not 1 <= n <= 10_000:
        raise ConfigError(f"need queue_size in [1, 10000], got {n}")
    return n


@dataclass(frozen=True)
class Setting:
    env: str | None  # the environment variable; None: extra params only
    default: Any
    parse: Callable[[Any], Any]  # a raw value (extra param or env string) -> the setting
    meaning: str
    per_project: bool = True  # whether a project's extra params may set it


_R = RankerConfig  # its field defaults are the ranker settings' defaults
# Per project: extra params > environment > default. The names are the extra params' keys.
PROJECT_SETTINGS: dict[str, Setting] = {
    "targets": Setting(
        "RARE_TARGETS", None, _targets,
        "the rare classes to look for (comma-separated); default: every choice except one "
        "named like *Other*",
    ),
    "descriptions": Setting(
        None, {}, _descriptions, "a text per target, embedded as its zero-shot prototype"
    ),
    "strategy": Setting(
        "RARELABEL_STRATEGY", _R.strategy, str,
        "`positive`, `adaptive` (the paper's), `margin` or `information_density`",
    ),
    "uncertainty": Setting(
        "RARELABEL_UNCERTAINTY", _R.uncertainty, str,
        "what `adaptive` asks for once |Lp| >= |Ln|: `margin` or `information_density`",
    ),
    "f_a": Setting("RARELABEL_F_A", _R.f_a, float, "pseudo-negatives per (|Lp| + 0.1 |Ln|)"),
    "queue_size": Setting(
        "RARELABEL_QUEUE_SIZE", 100, _queue_size, "tasks that carry a prediction (1 to 10,000)"
    ),
    "audit_rate": Setting(
        "RARELABEL_AUDIT_RATE", 0.0, _audit_rate,
        "share of retrains that put a random task at the head of the queue: the audit "
        "sample that checks the estimates, lets the stopping rule fire and feeds the "
        "sample test; 0 = none, 1 = every label (a verification phase)",
    ),
    "audit_uniform_share": Setting(
        "RARELABEL_AUDIT_UNIFORM_SHARE", UNIFORM_SHARE, _audit_uniform_share,
        "share of audit draws made uniformly (the rest by the ranker's probability): only "
        "those count for the sample test; 1 = a purely uniform sample",
    ),
    "target_recall": Setting(
        "RARELABEL_TARGET_RECALL", TARGET_RECALL, _target_recall,
        "the recall the stopping rule and the sample test check for, in [0.5, 1)",
    ),
    "C": Setting("RARELABEL_C", _R.C, float, "inverse regularisation of the logistic regression"),
    "outlier_prior": Setting(
        "RARELABEL_OUTLIER_PRIOR", _R.outlier_prior, float,
        "weight of LOF rarity in the ranking of a class with no positive yet, in [0, 1]",
    ),
    "lexical_dims": Setting(
        "RARELABEL_LEXICAL_DIMS", _R.lexical_dims, int,
        "columns of the pool's own word statistics (TF-IDF -> LSA) beside the embedding, up to "
        "4096; 0 = the embedding alone",
    ),
    "view_choice": Setting(
        "RARELABEL_VIEW_CHOICE", _R.view_choice, _switch("view_choice"),
        "rank on two views, with and without the lexical columns, interleaved, and let the "
        "labels choose between them (model.view_choice); off = the lexical columns always",
    ),
    "seals_above": Setting(
        "RARELABEL_SEALS_ABOVE", _R.seals_above, _seals_above,
        "pool size from which each step ranks a SEALS working set (the labelled items' 100 "
        "nearest neighbours and a tenth of the pool, at most 20,000 rows) instead of every "
        "task; 0 = every pool, `off` = never",
    ),
    "model_version": Setting(
        "RARELABEL_MODEL_VERSION", "rarelabel", str,
        "the `model_version` of our predictions (and the project's)", per_project=False,
    ),
}  # fmt: skip
# The process's own: read from the environment where they are used.
SERVICE_SETTINGS: dict[str, Setting] = {
    "redis_url": Setting(
        "REDIS_URL", None, str,
        "all state and the job queue; unset, `rarelabel serve` runs an embedded store",
    ),
    "label_studio_url": Setting(
        "LABEL_STUDIO_URL", None, str, "the worker's Label Studio (default: what /setup said)"
    ),
    "label_studio_api_key": Setting(
        "LABEL_STUDIO_API_KEY", None, str, "its token (default: what /setup said)"
    ),
    "basic_auth_user": Setting(
        "BASIC_AUTH_USER", None, str, "basic auth on every endpoint but /health (default: off)"
    ),
    "basic_auth_pass": Setting("BASIC_AUTH_PASS", "", str, "its password"),
    "sweep_seconds": Setting(
        "RARELABEL_SWEEP_SECONDS", 15.0, float,
        "how often a worker gives a job to every project with pending events, a retrain owed "
        "or a reconciliation due",
    ),
    "reconcile_seconds": Setting(
        "RARELABEL_RECONCILE_SECONDS", 60.0, float,
        "how often each project is compared with Label Studio",
    ),
    "lock_seconds": Setting(
        "RARELABEL_LOCK_SECONDS", 30.0, float,
        "how soon a killed worker's project lock, or its claim on tasks to embed, frees",
    ),
    "embedded_workers": Setting(
        "RARELABEL_EMBEDDED_WORKERS", None, int,
        "workers `rarelabel serve` runs beside its embedded store (default: one per core)",
    ),
}  # fmt: skip
# what the estimates read, not the ranking: outside the warm state's fingerprint
AUDIT_SETTINGS = ("audit_rate", "audit_uniform_share", "target_recall")
RANKER_SETTINGS = [name for name in PROJECT_SETTINGS if name in {f.name for f in fields(_R)}]
# The embedding's settings (RARELABEL_EMBEDDING_MODEL, _BACKEND, RARELABEL_MODEL_DIR,
# RARELABEL_CACHE_DIR) are read by model/embedding.py, which the simulation shares.


def setting(name: str) -> Any:
    """A process setting: its environment variable, else its default."""
    s = SERVICE_SETTINGS.get(name) or PROJECT_SETTINGS[name]
    raw = env(s.env)
    return s.default if raw is None else s.parse(raw)


def redis_url() -> str:
    """Unset, a local Redis: `rarelabel serve` sets REDIS_URL to its embedded store's."""
    return setting("redis_url") or "redis://127.0.0.1:6379/0"


def lock_seconds() -> float:
    return setting("lock_seconds")


@dataclass
class LabelConfig:
    from_name: str  # the <Choices> tag's name
    to_name: str  # the <Text> tag's name
    text_key: str  # the task data field the <Text> shows ($text -> "text")
    choices: list[str]


def parse_label_config(xml: str) -> LabelConfig:
    """Find the first <Choices> that labels a <Text>."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ConfigError(f"label config is not valid XML: {e}") from None
    texts = {t.get("name"): t.get("value", "") for t in root.iter("Text")}
    for tag in root.iter("Choices"):
        to_name = tag.get("toName")
        if to_name in texts and texts[to_name].startswith("$"):
            choices = [c.get("value") or c.get("alias") for c in tag.iter("Choice")]
            choices = [c for c in choices if c]
            if not choices:
                raise ConfigError(f"<Choices name={tag.get('name')!r}> has no <Choice>")
            return LabelConfig(tag.get("name", ""), to_name, texts[to_name][1:], choices)
    raise ConfigError("label config needs a <Choices> whose toName is a <Text value='$field'>")


@dataclass
class ProjectConfig:
    project_id: int
    label: LabelConfig
    targets: list[str]
    descriptions: dict[str, str]
    ranker: RankerConfig
    queue_size: int
    model_version: str
    audit_rate: float = 0.0
    audit_uniform_share: float = UNIFORM_SHARE
    target_recall: float = TARGET_RECALL
    hostname: str | None = None  # where Label Studio said it lives (at /setup)
    access_token: str | None = None
    extra: dict = field(default_factory=dict)  # the extra params as given, for re-resolving

    def _flat(self) -> dict:
        """The settings side by side, the ranker's among them: the layout stored since
        before the ranker's settings were held whole, which therefore still loads."""
        d = asdict(self)
        ranker = d.pop("ranker")
        for name in RANKER_SETTINGS:
            d[name] = ranker[name]
        return d

    def to_json(self) -> str:
        return json.dumps(self._flat())

    def fingerprint(self) -> str:
        """What the worker's warm state depends on: every setting and the label config, but
        not where Label Studio lives or the token (a new token ranks the same)."""
        d = self._flat()
        for key in ("hostname", "access_token", "extra", *AUDIT_SETTINGS):
            d.pop(key)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, raw: str | bytes) -> ProjectConfig:
        """A missing key (a config stored by an older version) takes its default."""
        d = json.loads(raw)
        ranker = RankerConfig(**{k: d.pop(k) for k in RANKER_SETTINGS if k in d})
        d.setdefault("descriptions", {})
        for name in ("queue_size", "model_version", *AUDIT_SETTINGS):
            d.setdefault(name, PROJECT_SETTINGS[name].default)
        return cls(label=LabelConfig(**d.pop("label")), ranker=ranker, **d)


def _extra_params(extra_params: dict | str | None) -> dict:
    if isinstance(extra_params, str):
        try:
            extra_params = json.loads(extra_params) if extra_params.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"extra params are not JSON: {e}") from None
    if extra_params is None:
        extra_params = {}
    if not isinstance(extra_params, dict):
        raise ConfigError(f"extra params must be a JSON object, got {type(extra_params).__name__}")
    known = sorted(k for k, s in PROJECT_SETTINGS.items() if s.per_project)
    unknown = sorted(set(extra_params) - set(known))
    if unknown:
        raise ConfigError(f"unknown extra params {unknown}; known: {known}")
    return dict(extra_params)


def resolve(
    project_id: int,
    label_config_xml: str,
    extra_params: dict | str | None = None,
    hostname: str | None = None,
    access_token: str | None = None,
) -> ProjectConfig:
    """Settings for a project: extra params win over environment variables over defaults."""
    label = parse_label_config(label_config_xml)
    extra = _extra_params(extra_params)
    values = {}
    for name, s in PROJECT_SETTINGS.items():
        raw = extra[name] if name in extra else env(s.env) if s.env else None
        if name == "targets":  # empty targets in extra params: the environment's
            raw = extra.get(name) or env(s.env)
        try:
            values[name] = s.default if raw is None else s.parse(raw)
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"bad numeric setting: {e}") from None
    targets = values["targets"] or [c for c in label.choices if not OTHER_LIKE.match(c)]
    unknown = [t for t in targets if t not in label.choices]
    if unknown:
        raise ConfigError(f"targets {unknown} are not choices of <{label.from_name}>")
    if not targets:
        raise ConfigError("no rare target classes: set RARE_TARGETS or extra params 'targets'")
    try:
        ranker = RankerConfig(**{name: values[name] for name in RANKER_SETTINGS})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return ProjectConfig(
        project_id=project_id,
        label=label,
        targets=targets,
        descriptions=values["descriptions"],
        ranker=ranker,
        queue_size=values["queue_size"],
        model_version=values["model_version"],
        **{name: values[name] for name in AUDIT_SETTINGS},
        hostname=hostname,
        access_token=access_token,
        extra=extra,
    )
