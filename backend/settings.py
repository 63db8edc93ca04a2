"""Configuration without code: environment variables, then the ML backend's extra params.

A project's settings are resolved once (at `/setup`, or on first contact with a project)
and stored with the project, so web processes and workers agree on them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

from model.prioritiser import LARGE_POOL
from model.strategies import STRATEGIES, UNCERTAINTY

OTHER_LIKE = re.compile(r"^(other|others|none|negative|misc|miscellaneous|rest)$", re.IGNORECASE)


# The keys a project's extra params may hold (README, "Settings"); any other is refused.
EXTRA_PARAMS = {
    "targets", "descriptions", "f_a", "strategy", "uncertainty", "outlier_prior",
    "queue_size", "C", "lexical_dims", "seals_above",
}  # fmt: skip


class ConfigError(ValueError):
    """A setting or label config the backend cannot work with; the message says why."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def redis_url() -> str:
    return env("REDIS_URL", "redis://127.0.0.1:6379/0")


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
    descriptions: dict[str, str] = field(default_factory=dict)
    f_a: float = 100.0
    strategy: str = "positive"
    uncertainty: str = "margin"
    outlier_prior: float = 0.05
    queue_size: int = 100
    C: float = 10.0
    lexical_dims: int = 384  # pool-fitted word statistics beside the embedding; 0 = off
    seals_above: int | None = LARGE_POOL  # pool size from which a step ranks a SEALS working set
    model_version: str = "rarelabel"
    hostname: str | None = None  # where Label Studio said it lives (at /setup)
    access_token: str | None = None
    extra: dict = field(default_factory=dict)  # the extra params as given, for re-resolving

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def fingerprint(self) -> str:
        """What the worker's warm state depends on: every setting and the label config, but
        not where Label Studio lives or the token (a new token ranks the same)."""
        d = asdict(self)
        for key in ("hostname", "access_token", "extra"):
            d.pop(key)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, raw: str | bytes) -> ProjectConfig:
        d = json.loads(raw)
        d["label"] = LabelConfig(**d["label"])
        return cls(**d)


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ConfigError(f"targets must be a list or a comma-separated string, got {value!r}")


def _seals_above(value) -> int | None:
    """A pool size (0 = every pool), or "off" / null: every row is ranked at each step, however
    large the pool."""
    if value is None or str(value).strip().lower() in ("off", "none", "null"):
        return None
    n = int(value)
    if n < 0:
        raise ConfigError(f"seals_above must be >= 0 or 'off', got {n}")
    return n


def resolve(
    project_id: int,
    label_config_xml: str,
    extra_params: dict | str | None = None,
    hostname: str | None = None,
    access_token: str | None = None,
) -> ProjectConfig:
    """Settings for a project: extra params win over environment variables over defaults."""
    label = parse_label_config(label_config_xml)
    if isinstance(extra_params, str):
        try:
            extra_params = json.loads(extra_params) if extra_params.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"extra params are not JSON: {e}") from None
    if extra_params is None:
        extra_params = {}
    if not isinstance(extra_params, dict):
        raise ConfigError(f"extra params must be a JSON object, got {type(extra_params).__name__}")
    extra = dict(extra_params)
    unknown_keys = sorted(set(extra) - EXTRA_PARAMS)
    if unknown_keys:
        raise ConfigError(f"unknown extra params {unknown_keys}; known: {sorted(EXTRA_PARAMS)}")

    raw_targets = extra.get("targets") or env("RARE_TARGETS")
    if raw_targets:
        targets = _as_list(raw_targets)
    else:
        targets = [c for c in label.choices if not OTHER_LIKE.match(c)]
    unknown = [t for t in targets if t not in label.choices]
    if unknown:
        raise ConfigError(f"targets {unknown} are not choices of <{label.from_name}>")
    if not targets:
        raise ConfigError("no rare target classes: set RARE_TARGETS or extra params 'targets'")

    descriptions = extra.get("descriptions", {})
    if not isinstance(descriptions, dict):
        raise ConfigError("'descriptions' must map a target to a text")
    try:
        f_a = float(extra.get("f_a", env("RARELABEL_F_A", "100")))
        queue_size = int(extra.get("queue_size", env("RARELABEL_QUEUE_SIZE", "100")))
        C = float(extra.get("C", env("RARELABEL_C", "10")))
        outlier_prior = float(extra.get("outlier_prior", env("RARELABEL_OUTLIER_PRIOR", "0.05")))
        lexical_dims = int(extra.get("lexical_dims", env("RARELABEL_LEXICAL_DIMS", "384")))
        seals_above = _seals_above(
            extra.get("seals_above", env("RARELABEL_SEALS_ABOVE", str(LARGE_POOL)))
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad numeric setting: {e}") from None
    strategy = str(extra.get("strategy", env("RARELABEL_STRATEGY", "positive")))
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    uncertainty = str(extra.get("uncertainty", env("RARELABEL_UNCERTAINTY", "margin")))
    if uncertainty not in UNCERTAINTY:
        raise ConfigError(f"unknown uncertainty {uncertainty!r}; choose from {sorted(UNCERTAINTY)}")
    if not all(math.isfinite(x) for x in (f_a, C, outlier_prior)):
        raise ConfigError("f_a, C and outlier_prior must be finite numbers")
    in_range = f_a >= 0 and 1 <= queue_size <= 10_000 and C > 0
    if not (in_range and 0 <= outlier_prior <= 1 and 0 <= lexical_dims <= 4096):
        raise ConfigError(
            "need f_a >= 0, queue_size in [1, 10000], C > 0, outlier_prior in [0, 1] and "
            "lexical_dims in [0, 4096]"
        )
    return ProjectConfig(
        project_id=project_id,
        label=label,
        targets=targets,
        descriptions={str(k): str(v) for k, v in descriptions.items()},
        f_a=f_a,
        strategy=strategy,
        uncertainty=uncertainty,
        outlier_prior=outlier_prior,
        queue_size=queue_size,
        C=C,
        lexical_dims=lexical_dims,
        seals_above=seals_above,
        model_version=env("RARELABEL_MODEL_VERSION", "rarelabel"),
        hostname=hostname,
        access_token=access_token,
        extra=extra,
    )
