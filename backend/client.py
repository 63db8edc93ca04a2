"""Which Label Studio the worker talks to, which of its ML backends is us, and our settings.

The store can lose everything (Redis restarted without persistence); Label Studio keeps the
project's label config and, in its ML backend record, the extra params the manager gave.
So a project's settings are always rebuilt from there, never made up.
"""

from __future__ import annotations

import base64
import logging
from functools import lru_cache

import httpx

from backend import labelstudio as ls
from backend.settings import ProjectConfig, resolve, setting

log = logging.getLogger("rarelabel.worker")
MODEL_CLASS = "RareCategoryBackend"  # what our /health answers


def client_for(cfg: ProjectConfig | None):
    """Environment first (the backend's own view of the network), else what /setup said."""
    url = setting("label_studio_url") or (cfg.hostname if cfg else None)
    key = setting("label_studio_api_key") or (cfg.access_token if cfg else None)
    if not url or not key:
        raise ls.LabelStudioError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend")
    return _client(url, key)


@lru_cache(maxsize=8)
def _client(url: str, key: str):
    """One client per server and key for the worker's life: building one exchanges a personal
    access token for an access token (a request), and the SDK refreshes that by itself."""
    return ls.make_client(url, key)


def basic_auth() -> tuple[str, str] | None:
    user = setting("basic_auth_user")
    return (user, setting("basic_auth_pass")) if user else None


def auth_header() -> dict[str, str]:
    """The Authorization header our endpoints ask for, or none when auth is off."""
    creds = basic_auth()
    if creds is None:
        return {}
    token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _is_us(url: str) -> bool:
    try:
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("model_class") == MODEL_CLASS


def our_backends(client, project: int) -> list[dict]:
    """The project's ML backend records that are this backend: those whose /health says so,
    or the only one when none answers (the worker may not reach the web app's address)."""
    backends = ls.ml_backends(client, project)
    ours = [b for b in backends if b.get("url") and _is_us(b["url"])]
    return ours or (backends if len(backends) == 1 else [])


def config_from_label_studio(project: int) -> ProjectConfig:
    """The project's settings as Label Studio holds them: its label config, and the extra
    params of our ML backend record. Raises LabelStudioError (status 404: no such project)."""
    client = client_for(None)
    xml = ls.check_project(client, project)["label_config"]
    extra = next((b.get("extra_params") for b in our_backends(client, project)), None)
    return resolve(project, xml, extra or {})


def secure_webhooks(cfg: ProjectConfig) -> None:
    """With auth on, give Label Studio's webhooks to us the header our /webhook asks for."""
    header = auth_header()
    if not header:
        return
    client = client_for(cfg)
    for backend in our_backends(client, cfg.project_id):
        if ls.set_webhook_headers(client, cfg.project_id, backend["url"], header):
            log.info("project %s: webhook to %s now sends our auth", cfg.project_id, backend["url"])
