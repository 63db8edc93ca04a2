"""Start `rarelabel serve` as its own process, as a user would, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.ls_harness import free_port, wait_for


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


def start_serve(env: dict[str, str], log: Path, wait: float = 60) -> tuple[subprocess.Popen, str]:
    """`rarelabel serve` on a free port with `env` over this process's environment (a value
    of None removes the variable); returns once /health answers UP."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    port = free_port()
    cmd = ["rarelabel", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=full, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url) or proc.poll() is not None, wait, "the backend's /health")
    except BaseException:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"rarelabel serve exited with {proc.returncode}; see {log}")
    return proc, url
