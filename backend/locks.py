"""One job per project at a time, across every worker, without a stuck lock ever wedging it.

The lock expires `lock_seconds` after its job stops renewing it, so a killed worker's lock
frees itself; a live job renews it from a thread, however long it runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from redis.exceptions import RedisError

from backend.settings import lock_seconds
from backend.store import Store

log = logging.getLogger("rarelabel.worker")


@contextmanager
def project_lock(store: Store, project: int) -> Iterator[bool]:
    """Yields whether this job holds the project's lock; while it does, a thread renews it
    every third of its lifetime, so only a dead job's lock ever expires."""
    ttl = lock_seconds()
    lock = store.r.lock(store.key(project, "lock"), timeout=ttl, blocking=False, thread_local=False)
    if not lock.acquire():
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                lock.reacquire()
            except RedisError as e:  # Redis away: the job's own calls fail and it retries
                log.warning("project %s: could not renew the job lock: %s", project, e)

    renewer = threading.Thread(target=renew, daemon=True, name=f"lock-{project}")
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        with suppress(RedisError):  # expired, or Redis gone: it frees itself
            lock.release()
