"""docker-compose.yml wires what the code reads (Docker cannot run here, so read the file)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def variables_the_code_reads() -> set[str]:
    names = set()
    for path in [*ROOT.glob("backend/*.py"), *ROOT.glob("model/*.py")]:
        text = path.read_text()
        names |= set(re.findall(r"""\benv\(\s*["']([A-Z][A-Z0-9_]+)["']""", text))
        names |= set(re.findall(r"""os\.environ\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""", text))
        # backend/settings.py's tables: Setting("ENV_NAME", default, parser, meaning)
        names |= set(re.findall(r"""\bSetting\(\s*["']([A-Z][A-Z0-9_]+)["']""", text))
    return names


def test_the_four_services_are_there():
    assert set(COMPOSE["services"]) == {"redis", "label-studio", "backend", "worker"}
    assert COMPOSE["services"]["label-studio"]["image"].endswith(":1.23.2")
    assert COMPOSE["services"]["backend"]["command"][:2] == ["rarelabel", "serve"]
    assert COMPOSE["services"]["worker"]["command"][:2] == ["rarelabel", "worker"]


def test_backend_and_worker_get_what_they_need_to_reach_redis_and_label_studio():
    for name in ("backend", "worker"):
        env = COMPOSE["services"][name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert env["LABEL_STUDIO_API_KEY"]


def test_label_studio_may_call_a_backend_on_the_compose_network():
    env = COMPOSE["services"]["label-studio"]["environment"]
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "false"
    # the backend's token must be the user Label Studio creates at start
    backend_key = COMPOSE["services"]["backend"]["environment"]["LABEL_STUDIO_API_KEY"]
    assert backend_key == env["LABEL_STUDIO_USER_TOKEN"]


def test_every_variable_the_code_reads_is_documented_or_wired():
    read = variables_the_code_reads()
    assert {"REDIS_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "RARE_TARGETS"} <= read
    readme = (ROOT / "README.md").read_text()
    wired = set(COMPOSE["services"]["backend"]["environment"])
    missing = {v for v in read if v not in readme and v not in wired}
    assert not missing, f"read by the code but neither in README.md nor docker-compose: {missing}"


def test_the_workers_saved_indexes_live_on_a_volume():
    worker = COMPOSE["services"]["worker"]
    cache = worker["environment"]["RARELABEL_CACHE_DIR"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in worker["volumes"]}
    assert mounts.get(cache) in COMPOSE["volumes"]
