"""All backend state, in Redis, so any web process or worker on any machine can serve.

Keys (p = Label Studio project id):
  rl:emb:<sha1>        embedding cache, content-addressed (model id + text)
  rl:p:config          ProjectConfig JSON
  rl:p:events          durable list of webhook events not yet applied
  rl:p:scheduled       set while a processing job is queued (coalesces bursts)
  rl:p:vec             hash task id -> float32 vector bytes (the pool)
  rl:p:text            hash task id -> the task's text (the lexical features are fitted on it)
  rl:p:lex             hash task id -> float16 lexical columns (model.features), for /predict
  rl:p:ann             hash annotation id -> "task id<TAB>label" (human labels)
  rl:p:model           JSON: per-class weights, so /predict needs no worker
  rl:p:pushed          hash task id -> score last written to Label Studio
  rl:p:asked           hash task id -> "class<TAB>logit": the target class that asked for it
                       and its logit then (the class's calibration, model.class_choice)
  rl:p:status          hash of figures for /metrics
Label Studio stays the source of truth: all of this can be rebuilt from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import redis

from backend.settings import ProjectConfig

PREFIX = "rl"


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)


class RedisVectorCache:
    """model.embedding.VectorCache over Redis: shared by every process."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        values = self.r.mget([f"{PREFIX}:emb:{k}" for k in keys])
        return {
            k: np.frombuffer(v, dtype=np.float32) for k, v in zip(keys, values, strict=True) if v
        }

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if items:
            self.r.mset(
                {f"{PREFIX}:emb:{k}": v.astype(np.float32).tobytes() for k, v in items.items()}
            )


class Store:
    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def key(self, project: int, name: str) -> str:
        return f"{PREFIX}:{project}:{name}"

    # --- projects ---
    def save_config(self, cfg: ProjectConfig) -> None:
        self.r.set(self.key(cfg.project_id, "config"), cfg.to_json())
        self.r.sadd(f"{PREFIX}:projects", cfg.project_id)

    def config(self, project: int) -> ProjectConfig | None:
        raw = self.r.get(self.key(project, "config"))
        return ProjectConfig.from_json(raw) if raw else None

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.r.smembers(f"{PREFIX}:projects"))

    # --- events: recorded by the web app, applied by a worker ---
    def record_event(self, project: int, event: dict) -> bool:
        """Append the event; True if the caller should enqueue a job (none is pending)."""
        pipe = self.r.pipeline()
        pipe.rpush(self.key(project, "events"), json.dumps(event))
        pipe.set(self.key(project, "scheduled"), 1, nx=True, ex=3600)
        _, first = pipe.execute()
        return bool(first)

    def unschedule(self, project: int) -> None:
        """Called as a job starts: events arriving from now on will queue one more job."""
        self.r.delete(self.key(project, "scheduled"))

    def pending_events(self, project: int) -> list[dict]:
        return [json.loads(e) for e in self.r.lrange(self.key(project, "events"), 0, -1)]

    def ack_events(self, project: int, n: int) -> None:
        """Drop the first `n` events once they have been applied (nothing lost on a crash)."""
        if n:
            self.r.ltrim(self.key(project, "events"), n, -1)

    def queued_events(self) -> int:
        return sum(self.r.llen(self.key(p, "events")) for p in self.projects())

    # --- the pool ---
    def add_vectors(self, project: int, vectors: dict[int, np.ndarray]) -> None:
        if vectors:
            mapping = {str(t): v.astype(np.float32).tobytes() for t, v in vectors.items()}
            self.r.hset(self.key(project, "vec"), mapping=mapping)

    def has_vectors(self, project: int, tasks: Sequence[int]) -> set[int]:
        """Which of these tasks are in the pool already (one round trip, not the whole hash)."""
        if not tasks:
            return set()
        pipe = self.r.pipeline()
        for t in tasks:
            pipe.hexists(self.key(project, "vec"), str(t))
        return {t for t, known in zip(tasks, pipe.execute(), strict=True) if known}

    def pool_size(self, project: int) -> int:
        return int(self.r.hlen(self.key(project, "vec")))

    def vectors(self, project: int, tasks: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        k = self.key(project, "vec")
        if tasks is None:
            raw = self.r.hgetall(k).items()
        else:
            raw = zip(tasks, self.r.hmget(k, [str(t) for t in tasks]) if tasks else [], strict=True)
        return {int(t): np.frombuffer(v, dtype=np.float32) for t, v in raw if v}

    def add_texts(self, project: int, texts: dict[int, str]) -> None:
        if texts:
            self.r.hset(self.key(project, "text"), mapping={str(t): x for t, x in texts.items()})

    def texts(self, project: int, tasks: Sequence[int]) -> dict[int, str]:
        raw = self.r.hmget(self.key(project, "text"), [str(t) for t in tasks]) if tasks else []
        return {t: v.decode() for t, v in zip(tasks, raw, strict=True) if v is not None}

    def set_lexical(self, project: int, rows: dict[int, np.ndarray], replace: bool) -> None:
        """Each task's lexical columns; `replace` drops rows of an earlier fit first."""
        pipe = self.r.pipeline()
        if replace:
            pipe.delete(self.key(project, "lex"))
        items = [(str(t), v.astype(np.float16).tobytes()) for t, v in rows.items()]
        for start in range(0, len(items), 5000):
            pipe.hset(self.key(project, "lex"), mapping=dict(items[start : start + 5000]))
        pipe.execute()

    def lexical(self, project: int, tasks: Sequence[int]) -> dict[int, np.ndarray]:
        raw = self.r.hmget(self.key(project, "lex"), [str(t) for t in tasks]) if tasks else []
        return {
            t: np.frombuffer(v, dtype=np.float16).astype(np.float32)
            for t, v in zip(tasks, raw, strict=True)
            if v
        }

    # --- human labels, by annotation (deletes arrive as annotation ids) ---
    def set_annotation(self, project: int, annotation: int, task: int, label: str) -> None:
        self.r.hset(self.key(project, "ann"), str(annotation), f"{task}\t{label}")

    def delete_annotation(self, project: int, annotation: int) -> None:
        self.r.hdel(self.key(project, "ann"), str(annotation))

    def replace_annotations(self, project: int, anns: dict[int, tuple[int, str]]) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self.key(project, "ann"))
        if anns:
            mapping = {str(a): f"{t}\t{lab}" for a, (t, lab) in anns.items()}
            pipe.hset(self.key(project, "ann"), mapping=mapping)
        pipe.execute()

    def labels(self, project: int) -> dict[int, str]:
        """Each task's label from its newest annotation, in the order they were annotated."""
        out: dict[int, tuple[int, str]] = {}
        for a, v in self.r.hgetall(self.key(project, "ann")).items():
            task, label = v.decode().split("\t", 1)
            ann, task_id = int(a), int(task)
            if task_id not in out or ann > out[task_id][0]:
                out[task_id] = (ann, label)
        return {t: lab for t, (_, lab) in sorted(out.items(), key=lambda kv: kv[1][0])}

    # --- the model, the pushed queue and status ---
    def save_model(self, project: int, model: dict) -> None:
        self.r.set(self.key(project, "model"), json.dumps(model))

    def model(self, project: int) -> dict | None:
        raw = self.r.get(self.key(project, "model"))
        return json.loads(raw) if raw else None

    def pushed(self, project: int) -> dict[int, float]:
        return {int(t): float(s) for t, s in self.r.hgetall(self.key(project, "pushed")).items()}

    def set_pushed(self, project: int, scores: dict[int, float]) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self.key(project, "pushed"))
        if scores:
            pipe.hset(self.key(project, "pushed"), mapping={str(t): s for t, s in scores.items()})
        pipe.execute()

    def record_asked(self, project: int, asked: dict[int, tuple[str, float]]) -> None:
        if asked:
            mapping = {str(t): f"{c}\t{logit!r}" for t, (c, logit) in asked.items()}
            self.r.hset(self.key(project, "asked"), mapping=mapping)

    def asked(self, project: int) -> dict[int, tuple[str, float | None]]:
        """Task -> (class that asked, its logit then; None if stored before logits were)."""
        out: dict[int, tuple[str, float | None]] = {}
        for t, value in self.r.hgetall(self.key(project, "asked")).items():
            c, _, logit = value.decode().partition("\t")
            out[int(t)] = (c, float(logit) if logit else None)
        return out

    def set_status(self, project: int, **fields: float | str) -> None:
        self.r.hset(self.key(project, "status"), mapping=fields)

    def status(self, project: int) -> dict[str, str]:
        return {
            k.decode(): v.decode() for k, v in self.r.hgetall(self.key(project, "status")).items()
        }
