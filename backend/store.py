"""All backend state, in Redis, so any web process or worker on any machine can serve.

Keys (p = Label Studio project id):
  rl:emb:<sha1>        embedding cache, content-addressed (model id + text)
  rl:projects          set of project ids the backend serves
  rl:initialised       set once the store has been filled; missing after Redis lost its data
  rl:p:config          ProjectConfig JSON
  rl:p:events          durable list of webhook events not yet applied (each with an "id")
  rl:p:fails           hash event id -> failed attempts to apply it
  rl:p:aside           list of events set aside after failing, each with its "error"
  rl:p:scheduled       set while a processing job is queued (coalesces bursts)
  rl:p:dirty           set while the ranking in Label Studio lags the labels (a retrain owed)
  rl:p:lock            the job lock (backend.jobs), renewed while its job lives
  rl:p:deferred        set while a job that found the lock taken waits to run again
  rl:p:tasks           set of every task id Label Studio has (with or without text)
  rl:p:backlog         set of tasks whose text is stored but not yet embedded (first contact
                       with a big project embeds in chunks: backend.reconcile)
  rl:p:claimed         zset task id -> when an embedding job last said it holds it; back on
                       the backlog if that job stops saying so (it died: backend.embedder)
  rl:p:fanout          set while embedding jobs for the backlog are queued or running
  rl:p:vec             hash task id -> float32 vector bytes (the pool)
  rl:p:poolv, :poolx   counters: any change of the pool / a removal from it
  rl:p:text            hash task id -> the task's text (the lexical features are fitted on it)
  rl:p:lex             hash task id -> float16 lexical columns (model.features), for /predict
  rl:p:ann             hash annotation id -> JSON {task, label (null: no usable label), updated}
  rl:p:tomb            hash annotation id -> when it was deleted (late events cannot revive it)
  rl:p:model           StoredModel JSON: per-class weights, so /predict needs no worker
  rl:p:pushed          hash task id -> score of our prediction in Label Studio
  rl:p:asked           hash task id -> "class<TAB>logit": the target class that asked for it
                       and its logit then (the class's calibration, model.class_choice)
  rl:p:view            hash task id -> the view that put it in the queue, or -1: shared
                       (model.view_choice, with the view_choice setting)
  rl:p:status          hash of figures for /metrics and the status of the last job
  rl:p:curve           list of JSON points {labels, found: {class: n}, estimate: {class: ...}},
                       one per label count a retrain saw (the status page's curve)
Label Studio stays the source of truth: all of this can be rebuilt from it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import redis

from backend.settings import ProjectConfig
from model.labels import Label
from model.stored import StoredModel

PREFIX = "rl"
CURVE_POINTS = 20_000  # the status page's curve keeps the last this many label counts
TOMBSTONE_SECONDS = 7 * 86400  # a late duplicate arrives within seconds; keep a week
SCHEDULED_SECONDS = 120  # a lost job stops coalescing new ones after this long


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=30, health_check_interval=30
    )


_CLEAR_IF_SAME = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Annotation:
    task: int
    label: str | list[str] | None  # several: a multi-label annotation; None: a skip
    updated: float  # Label Studio's updated_at, as a Unix time (0 when it sent none)


@dataclass(frozen=True)
class Audit:
    """An audit draw (backend.audit): its draw probability `q`, every class's logit then,
    whether the mixture's uniform half drew it, the unlabelled tasks it was drawn from and
    the tasks in the pool then (None for a draw recorded before these were kept)."""

    q: float
    logits: dict[str, float]
    uniform: bool = False
    population: int | None = None
    pool: int | None = None


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
        pipe = self.r.pipeline()
        pipe.set(self.key(cfg.project_id, "config"), cfg.to_json())
        pipe.sadd(f"{PREFIX}:projects", cfg.project_id)
        pipe.set(f"{PREFIX}:initialised", 1)
        pipe.execute()

    def config(self, project: int) -> ProjectConfig | None:
        raw = self.r.get(self.key(project, "config"))
        return ProjectConfig.from_json(raw) if raw else None

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.r.smembers(f"{PREFIX}:projects"))

    def add_project(self, project: int) -> None:
        self.r.sadd(f"{PREFIX}:projects", project)

    def forget_project(self, project: int) -> None:
        """A project Label Studio no longer has: drop every key of it."""
        keys = list(self.r.scan_iter(match=self.key(project, "*"), count=1000))
        pipe = self.r.pipeline()
        pipe.srem(f"{PREFIX}:projects", project)
        if keys:
            pipe.delete(*keys)
        pipe.execute()

    def initialised(self) -> bool:
        """False when Redis came back empty: the projects must be found again."""
        return bool(self.r.exists(f"{PREFIX}:initialised"))

    def mark_initialised(self) -> None:
        self.r.set(f"{PREFIX}:initialised", 1)

    # --- events: recorded by the web app, applied by a worker ---
    def record_event(self, project: int, event: dict) -> bool:
        """Append the event; True if the caller should enqueue a job (none is pending)."""
        event = {"id": uuid.uuid4().hex, **event}
        pipe = self.r.pipeline()
        pipe.rpush(self.key(project, "events"), json.dumps(event))
        pipe.sadd(f"{PREFIX}:projects", project)
        pipe.set(self.key(project, "scheduled"), 1, nx=True, ex=SCHEDULED_SECONDS)
        *_, first = pipe.execute()
        return bool(first)

    def schedule(self, project: int) -> bool:
        """True if the caller should enqueue the project's job (none is pending)."""
        return bool(self.r.set(self.key(project, "scheduled"), 1, nx=True, ex=SCHEDULED_SECONDS))

    def unschedule(self, project: int) -> None:
        """Called as a job starts: events arriving from now on will queue one more job."""
        self.r.delete(self.key(project, "scheduled"))

    def pending_events(self, project: int) -> list[dict]:
        return [json.loads(e) for e in self.r.lrange(self.key(project, "events"), 0, -1)]

    def ack_events(self, project: int, events: Sequence[dict]) -> None:
        """Drop the first `len(events)` events once they have been applied or set aside
        (nothing lost on a crash), with their failure counts."""
        if not events:
            return
        pipe = self.r.pipeline()
        pipe.ltrim(self.key(project, "events"), len(events), -1)
        ids = [e["id"] for e in events if "id" in e]
        if ids:
            pipe.hdel(self.key(project, "fails"), *ids)
        pipe.execute()

    def event_failed(self, project: int, event: dict) -> int:
        """Count one more failed attempt at this event; returns the count."""
        return int(self.r.hincrby(self.key(project, "fails"), event.get("id", "?"), 1))

    def set_aside(self, project: int, event: dict, error: str) -> None:
        self.r.rpush(self.key(project, "aside"), json.dumps({**event, "error": error}))

    def set_aside_events(self, project: int) -> list[dict]:
        return [json.loads(e) for e in self.r.lrange(self.key(project, "aside"), 0, -1)]

    def queued_events(self, project: int | None = None) -> int:
        projects = self.projects() if project is None else [project]
        return sum(self.r.llen(self.key(p, "events")) for p in projects)

    def reconcile_soon(self, projects) -> None:
        """Make these projects' reconciliation due now (events of theirs may have been lost)."""
        for p in projects:
            self.r.hset(self.key(p, "status"), "reconciled_at", 0)

    def mark_dirty(self, project: int) -> None:
        """A retrain is owed. Each mark is a new value, so that a retrain that began before
        it cannot clear it (`clear_dirty`)."""
        self.r.incr(self.key(project, "dirty"))

    def dirty_mark(self, project: int) -> bytes | None:
        """The mark a retrain is about to serve, for `clear_dirty` after it."""
        return self.r.get(self.key(project, "dirty"))

    def clear_dirty(self, project: int, served: bytes | None) -> bool:
        """Clear the mark if it is still the one the retrain served; a mark made meanwhile
        (an embedding chunk finished during the retrain) stays, and owes the next one.
        True if cleared."""
        key = self.key(project, "dirty")
        return bool(self.r.eval(_CLEAR_IF_SAME, 1, key, served or b""))

    def dirty(self, project: int) -> bool:
        return bool(self.r.exists(self.key(project, "dirty")))

    # --- the tasks Label Studio has, and the pool of those with a text ---
    def add_tasks(self, project: int, tasks: Iterable[int]) -> None:
        tasks = [str(t) for t in tasks]
        if tasks:
            self.r.sadd(self.key(project, "tasks"), *tasks)

    def add_backlog(self, project: int, tasks: Iterable[int]) -> None:
        tasks = [str(t) for t in tasks]
        if tasks:
            self.r.sadd(self.key(project, "backlog"), *tasks)

    def backlog_size(self, project: int) -> int:
        """Tasks waiting to be embedded, those an embedding job holds included."""
        pipe = self.r.pipeline()
        pipe.scard(self.key(project, "backlog"))
        pipe.zcard(self.key(project, "claimed"))
        return sum(pipe.execute())

    def take_backlog(
        self, project: int, n: int, lease: float, first: Iterable[int] = ()
    ) -> list[int]:
        """Claim up to `n` tasks of the backlog for one embedding job: those in `first`
        that wait there, then the newest (highest ids: a fresh import before old backlog).
        Atomic, so jobs on several workers never take the same task; a claim not renewed
        for `lease` seconds (its job died) goes back to the backlog first."""
        backlog, claimed = self.key(project, "backlog"), self.key(project, "claimed")
        first = list(first)
        chosen: list[int] = []

        def claim(pipe: redis.client.Pipeline) -> None:
            now = time.time()
            stale = pipe.zrangebyscore(claimed, 0, now - lease)
            waiting = {int(t) for t in pipe.smembers(backlog)} | {int(t) for t in stale}
            chosen[:] = [t for t in first if t in waiting][:n]
            chosen.extend(sorted(waiting.difference(chosen), reverse=True)[: n - len(chosen)])
            pipe.multi()
            if chosen:
                pipe.srem(backlog, *[str(t) for t in chosen])
                pipe.zadd(claimed, {str(t): now for t in chosen})
            if stale:
                left = set(stale) - {str(t).encode() for t in chosen}
                if left:
                    pipe.sadd(backlog, *left)
                    pipe.zrem(claimed, *left)

        self.r.transaction(claim, backlog, claimed)
        return chosen

    def renew_claims(self, project: int, tasks: list[int]) -> None:
        if tasks:
            now = time.time()
            self.r.zadd(self.key(project, "claimed"), {str(t): now for t in tasks}, xx=True)

    def release_claims(
        self, project: int, tasks: list[int], vectors: dict[int, np.ndarray]
    ) -> None:
        """An embedding job is done with its claimed `tasks`: the vectors of those it still
        holds join the pool (one deleted meanwhile stays out)."""
        claimed = self.key(project, "claimed")
        if not tasks:
            return
        held = self.r.zmscore(claimed, [str(t) for t in vectors]) if vectors else []
        self.add_vectors(
            project, {t: v for (t, v), s in zip(vectors.items(), held, strict=True) if s}
        )
        self.r.zrem(claimed, *[str(t) for t in tasks])

    def task_ids(self, project: int) -> set[int]:
        return {int(t) for t in self.r.smembers(self.key(project, "tasks"))}

    def task_count(self, project: int) -> int:
        return int(self.r.scard(self.key(project, "tasks")))

    def add_vectors(self, project: int, vectors: dict[int, np.ndarray]) -> None:
        if vectors:
            mapping = {str(t): v.astype(np.float32).tobytes() for t, v in vectors.items()}
            pipe = self.r.pipeline()
            pipe.hset(self.key(project, "vec"), mapping=mapping)
            pipe.sadd(self.key(project, "tasks"), *mapping)
            pipe.incr(self.key(project, "poolv"))
            pipe.execute()

    def remove_tasks(self, project: int, tasks: Iterable[int]) -> int:
        """Tasks Label Studio no longer has leave the pool and every per-task record, their
        annotations included; returns how many were in the pool."""
        ids = [str(t) for t in tasks]
        if not ids:
            return 0
        gone = {int(t) for t in ids}  # Label Studio deletes their annotations with them
        self.delete_annotations(
            project, [a for a, v in self.annotations(project).items() if v.task in gone]
        )
        pipe = self.r.pipeline()
        pipe.hdel(self.key(project, "vec"), *ids)
        pipe.srem(self.key(project, "backlog"), *ids)
        pipe.zrem(self.key(project, "claimed"), *ids)
        for name in ("text", "lex", "pushed", "asked", "audit", "view"):
            pipe.hdel(self.key(project, name), *ids)
        pipe.srem(self.key(project, "tasks"), *ids)
        removed = pipe.execute()[0]
        if removed:
            pipe.incr(self.key(project, "poolv"))
            pipe.incr(self.key(project, "poolx"))
            pipe.execute()
        return int(removed)

    def pool_version(self, project: int) -> tuple[int, int]:
        """(changes, removals) of the pool: a warm copy with the same pair is current."""
        v, x = self.r.mget(self.key(project, "poolv"), self.key(project, "poolx"))
        return int(v or 0), int(x or 0)

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

    def pool_ids(self, project: int) -> set[int]:
        return {int(t) for t in self.r.hkeys(self.key(project, "vec"))}

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
    def annotation(self, project: int, annotation: int) -> Annotation | None:
        raw = self.r.hget(self.key(project, "ann"), str(annotation))
        return Annotation(**json.loads(raw)) if raw else None

    def annotations(self, project: int) -> dict[int, Annotation]:
        raw = self.r.hgetall(self.key(project, "ann"))
        return {int(a): Annotation(**json.loads(v)) for a, v in raw.items()}

    def set_annotation(self, project: int, annotation: int, value: Annotation) -> None:
        self.r.hset(self.key(project, "ann"), str(annotation), json.dumps(value.__dict__))

    def delete_annotations(self, project: int, annotations: Iterable[int]) -> None:
        """Deleted annotations leave a tombstone, so a late event cannot bring them back."""
        ids = [str(a) for a in annotations]
        if ids:
            pipe = self.r.pipeline()
            pipe.hdel(self.key(project, "ann"), *ids)
            pipe.hset(self.key(project, "tomb"), mapping=dict.fromkeys(ids, time.time()))
            pipe.execute()

    def deleted(self, project: int, annotation: int) -> bool:
        return bool(self.r.hexists(self.key(project, "tomb"), str(annotation)))

    def prune_tombstones(self, project: int, older_than: float = TOMBSTONE_SECONDS) -> None:
        cutoff = time.time() - older_than
        old = [a for a, t in self.r.hgetall(self.key(project, "tomb")).items() if float(t) < cutoff]
        if old:
            self.r.hdel(self.key(project, "tomb"), *old)

    def labels(self, project: int) -> dict[int, Label]:
        """Each task's label from its newest usable annotation, in the order annotated (the
        classes of a multi-label annotation as a frozenset, model.labels)."""
        out: dict[int, tuple[int, Label]] = {}
        for ann, a in self.annotations(project).items():
            if a.label is not None and (a.task not in out or ann > out[a.task][0]):
                label = frozenset(a.label) if isinstance(a.label, list) else a.label
                out[a.task] = (ann, label)
        return {t: lab for t, (_, lab) in sorted(out.items(), key=lambda kv: kv[1][0])}

    # --- the model, the pushed queue and status ---
    def save_model(self, project: int, model: StoredModel) -> None:
        self.r.set(self.key(project, "model"), model.to_json())

    def model(self, project: int) -> StoredModel | None:
        raw = self.r.get(self.key(project, "model"))
        return StoredModel.from_json(raw) if raw else None

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

    def record_views(self, project: int, owners: dict[int, int]) -> None:
        """Which view put each queued task there (model.view_choice); the latest push wins."""
        if owners:
            self.r.hset(self.key(project, "view"), mapping={str(t): v for t, v in owners.items()})

    def views(self, project: int) -> dict[int, int]:
        return {int(t): int(v) for t, v in self.r.hgetall(self.key(project, "view")).items()}

    def record_audit(self, project: int, task: int, draw: Audit) -> None:
        value = json.dumps(asdict(draw))
        self.r.hset(self.key(project, "audit"), str(task), value)

    def audits(self, project: int) -> dict[int, Audit]:
        """Task -> its audit draw, labelled or not. A draw recorded before the uniform flag
        was kept reads as not uniform: the sample test never counts it."""
        out = {}
        for t, value in self.r.hgetall(self.key(project, "audit")).items():
            d = json.loads(value)
            logits = {k: float(v) for k, v in d["logits"].items()}
            uniform, population, pool = d.get("uniform", False), d.get("population"), d.get("pool")
            out[int(t)] = Audit(float(d["q"]), logits, bool(uniform), population, pool)
        return out

    def add_curve_point(self, project: int, point: dict) -> None:
        """One point per label count: a retrain that saw no new label replaces the last."""
        key = self.key(project, "curve")
        last = self.r.lindex(key, -1)
        pipe = self.r.pipeline()
        if last is not None and json.loads(last)["labels"] == point["labels"]:
            pipe.rpop(key)
        pipe.rpush(key, json.dumps(point))
        pipe.ltrim(key, -CURVE_POINTS, -1)
        pipe.execute()

    def curve(self, project: int) -> list[dict]:
        return [json.loads(p) for p in self.r.lrange(self.key(project, "curve"), 0, -1)]

    def set_status(self, project: int, **fields: float | str) -> None:
        self.r.hset(self.key(project, "status"), mapping=fields)

    def status(self, project: int) -> dict[str, str]:
        return {
            k.decode(): v.decode() for k, v in self.r.hgetall(self.key(project, "status")).items()
        }
