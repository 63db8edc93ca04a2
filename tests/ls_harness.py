"""Start a throw-away Label Studio for end-to-end tests and benchmarks.

Label Studio lives in its own virtualenv (its pins clash with ours), created on first use:
``RARELABEL_LS_VENV`` (default ``~/.cache/rarelabel-ls-venv``) with ``label-studio==1.23.2``.

    ls = start_label_studio(tmp_dir)   # fresh database, free port, known admin token
    ...                                # ls.url, ls.token
    ls.stop()
    restart_label_studio(ls)           # same port, same data dir: an outage and its end
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LS_VERSION = "1.23.2"
# label-studio 1.23.2 asks for sentry-sdk>=2.16 and fails at start-up under sentry-sdk 3
# ("Unknown option 'send_default_pii'"), which PyPI now serves to a new venv
LS_PINS = (f"label-studio=={LS_VERSION}", "sentry-sdk>=2.16,<3")
USERNAME = "admin@rarelabel.test"
PASSWORD = "rarelabel-admin-pass"
TOKEN = "rarelabel-test-token-0123456789abcdef"  # legacy token: > 5 chars, any string

# Settings we also recommend for production: the flag makes importing predictions recount only the
# touched tasks (0.08 s instead of ~1.1 s for 10 predictions on a 20k-task project).
LS_ENV = {
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    "ML_BLOCK_LOCAL_IP": "false",  # with SSRF_PROTECTION_ENABLED: allow a backend on localhost
    "SSRF_PROTECTION_ENABLED": "false",
    "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true",
    "LATEST_VERSION_CHECK": "false",  # no call to pypi.org at start-up
    "COLLECT_ANALYTICS": "false",
}


def venv_dir() -> Path:
    default = Path.home() / ".cache" / "rarelabel-ls-venv"
    return Path(os.environ.get("RARELABEL_LS_VENV", default))


def ensure_ls_venv() -> Path:
    """Path of the ``label-studio`` executable, installing it into its venv if missing. A
    venv made with other pins (an earlier version of this list) gets these first: the
    marker file beside it says which pins it holds."""
    venv = venv_dir()
    exe, marker = venv / "bin" / "label-studio", venv / ".rarelabel-pins"
    wanted = " ".join(LS_PINS)
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off"]
    if not exe.exists():
        print(f"[ls_harness] creating {venv} and installing {wanted} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
    else:
        print(f"[ls_harness] bringing {venv} to {wanted} ...", flush=True)
    subprocess.run([*pip, *LS_PINS], check=True)
    marker.write_text(wanted)
    print("[ls_harness] label-studio installed", flush=True)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabelStudioProcess:
    url: str
    token: str
    process: subprocess.Popen[bytes]  # replaced by restart_label_studio
    log_path: Path
    data_dir: Path
    env: dict[str, str] | None = None  # the overrides it was started with (kept on restart)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the whole process group (the server may fork workers)."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout)


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def start_label_studio(
    tmp_dir: str | os.PathLike[str], timeout: float = 300.0, env: dict[str, str] | None = None
) -> LabelStudioProcess:
    """Start Label Studio with a fresh database under ``tmp_dir``; returns once the API answers.

    The first start runs all migrations (~40 s on 2 cores). ``env`` overrides ``LS_ENV``.
    """
    tmp = Path(tmp_dir)
    data_dir = tmp / "ls-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "label-studio.log"
    log_path.write_bytes(b"")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ls = LabelStudioProcess(url, TOKEN, None, log_path, data_dir, env)  # type: ignore[arg-type]
    _launch(ls, port, timeout)
    return ls


def restart_label_studio(ls: LabelStudioProcess, timeout: float = 300.0) -> LabelStudioProcess:
    """Start ``ls`` again on the same port and data dir (stopping it first if it runs).

    The same object is updated (a new ``process``) and returned, so whoever holds it keeps a
    working handle; the log is appended to. No migrations run the second time (~10-20 s).
    Raises if the port was taken meanwhile (Label Studio would silently move to another one).
    """
    ls.stop()
    port = int(ls.url.rsplit(":", 1)[1])
    _launch(ls, port, timeout)
    if int(ls.url.rsplit(":", 1)[1]) != port:
        ls.stop()
        raise RuntimeError(f"Label Studio could not restart on port {port}: it was taken")
    return ls


def _launch(ls: LabelStudioProcess, port: int, timeout: float) -> None:
    """Start the server for ``ls`` (port, data dir, log appended) and wait until it answers."""
    exe = ensure_ls_venv()
    full_env = {
        **os.environ,
        **LS_ENV,
        "LABEL_STUDIO_BASE_DATA_DIR": str(ls.data_dir),
        "LABEL_STUDIO_USERNAME": USERNAME,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        **(ls.env or {}),
    }
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    cmd += ["--username", USERNAME, "--password", PASSWORD, "--user-token", TOKEN]
    cmd += ["--enable-legacy-api-token"]
    with open(ls.log_path, "ab") as log:
        offset = log.tell()  # look for the port message of this start only
        ls.process = subprocess.Popen(
            cmd,
            cwd=ls.data_dir.parent,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ls.url = f"http://127.0.0.1:{port}"
    print(f"[ls_harness] starting Label Studio on port {port}, log {ls.log_path}", flush=True)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            if ls.process.poll() is not None:
                raise RuntimeError(
                    f"Label Studio exited ({ls.process.returncode}):\n{ls.log_tail()}"
                )
            # Label Studio silently moves to another port if ours was taken meanwhile.
            with open(ls.log_path, "rb") as f:
                f.seek(offset)
                fresh = f.read().decode(errors="replace")
            found = re.search(r"development server at http://[\d.]+:(\d+)/", fresh)
            if found and int(found.group(1)) != port:
                ls.url = f"http://127.0.0.1:{found.group(1)}"
            if _get(f"{ls.url}/health") == 200 and _get(f"{ls.url}/api/projects", TOKEN) == 200:
                print(f"[ls_harness] ready in {time.monotonic() - started:.0f} s", flush=True)
                return
            time.sleep(1)
        raise TimeoutError(f"Label Studio not ready after {timeout:.0f} s:\n{ls.log_tail()}")
    except BaseException:
        ls.stop()
        raise


def wait_for(check, timeout: float, what: str, every: float = 0.5):
    """Poll `check` until it returns something truthy; a TimeoutError names what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
