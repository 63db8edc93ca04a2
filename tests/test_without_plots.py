"""The service without the `[plots]` extra: no module of backend/ or model/ imports matplotlib
or tqdm, at import or in a function, and a retrain's fit-and-queue runs without them."""

from __future__ import annotations

import subprocess
import sys

# matplotlib is made missing outright. tqdm cannot be: sentence-transformers and
# huggingface_hub import it (they depend on it), so any import of it by our own modules fails.
WITHOUT_PLOTS = r"""
import builtins, importlib, pkgutil, sys

sys.modules["matplotlib"] = None
real_import = builtins.__import__


def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    caller = ((globals or {}).get("__name__") or "").partition(".")[0]
    if caller in ("backend", "model") and name.partition(".")[0] in ("tqdm", "matplotlib"):
        raise ImportError(f"{globals['__name__']} imports {name}")
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = guarded
import backend, model

for pkg in (backend, model):
    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{m.name}")
"""

RETRAIN = r"""
from pathlib import Path

from backend import warm
from backend.events import apply_event
from backend.settings import resolve
from backend.store import Store, connect
from model.labels import LabelState
from model.stored import StoredModel

texts = sys.argv[1].split("\x1f")
r = connect("redis://127.0.0.1:6379/13")
r.flushdb()
store = Store(r)
cfg = resolve(7, (Path.cwd() / "label_config.xml").read_text(), {"targets": ["Artist"],
              "lexical_dims": 16, "seals_above": 0})
tasks = [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)]
apply_event(store, cfg, {"action": "TASKS_CREATED", "tasks": tasks})
state = warm.project_state(store, cfg)
pool = state.refresh(store)
labels = LabelState(cfg.targets)
labels.set_label(0, "Artist")
prio = state.prioritiser_for()
prio.fit(pool, labels, state.rarity_for(labels), state.index_for(cfg.ranker))
q = prio.queue(cfg.queue_size)
model = StoredModel.from_prioritiser(prio, cfg.model_version)
print(len(q.rows) == min(cfg.queue_size, len(texts) - 1), set(q.targets), model.targets)
r.flushdb()
"""


def test_the_service_imports_and_retrains_without_matplotlib_or_tqdm(real_pool, subprocess_env):
    texts = "\x1f".join(real_pool.texts[:40])  # embedded already: the session's cache
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_PLOTS + RETRAIN, texts],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "True {'Artist'} ['Artist']"


def test_a_plotting_command_without_the_extra_says_how_to_install_it(tmp_path, subprocess_env):
    code = WITHOUT_PLOTS + "from backend.cli import main\nsys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "screen", str(tmp_path / "any.csv")],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip() == "rarelabel: this command draws plots: pip install 'rarelabel[plots]'"
    )
