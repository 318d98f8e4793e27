"""What makes a model remote: the manifest config fields, Ollama's host normalisation, the
allow-list (`HANA_REMOTES`) and the API key read from a named environment variable.

A remote model's config blob carries Ollama's `remote_host` and `remote_model`, plus hana's
`remote_api` ("ollama" for a native Ollama/hana upstream, "openai" for any OpenAI-compatible
engine) and `remote_key_env` (the NAME of the variable holding the key; the key itself is never
written anywhere).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hana_protocol.errors import HanaError, InvalidRequest

REMOTE_APIS = ("ollama", "openai")
CLOUD_HOST = "https://ollama.com:443"
DEFAULT_REMOTES = "ollama.com"  # Ollama's default for OLLAMA_REMOTES
NOT_ALLOWED = "this server cannot run this remote model"
# Only variables meant to hold keys may be named: a create request must not be able to send any
# variable of the server's environment (a cloud secret, a token) to an upstream.
KEY_ENV_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(API_KEY|_TOKEN)$")


def normalise_host(value: str, api: str = "ollama") -> str:
    """Ollama's `remoteURL` (server/create.go): `/path` -> localhost, no scheme -> http, bare
    `ollama.com` -> https:443, missing port -> 11434 (Ollama upstreams only: an OpenAI base
    URL keeps its scheme's port), trailing `/` dropped; anything unparsable -> 400 `bad remote`."""
    value = value.strip()
    if not value:
        raise InvalidRequest("bad remote")
    if value.startswith("/"):
        value = "http://localhost:11434" + value
    if value == "ollama.com":
        return CLOUD_HOST
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidRequest("bad remote") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("bad remote")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidRequest("bad remote")  # a key belongs in remote_key_env, not the URL
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    if port is None and api == "ollama":
        port = 11434
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def allowed_hosts(value: str | None) -> set[str]:
    """HANA_REMOTES / OLLAMA_REMOTES: hostnames (no port), comma separated."""
    text = DEFAULT_REMOTES if value is None else value
    return {h.strip().lower() for h in text.split(",") if h.strip()}


@dataclass(frozen=True)
class RemoteSpec:
    """Where a remote model is served."""

    host: str  # normalised base URL
    model: str  # the upstream's model name
    api: str = "ollama"
    key_env: str | None = None

    @property
    def hostname(self) -> str:
        return (urlsplit(self.host).hostname or "").lower()

    def check_allowed(self, allowed: set[str]) -> None:
        if self.hostname not in allowed:
            raise InvalidRequest(NOT_ALLOWED)

    def api_key(self) -> str | None:
        """The key from the named variable, read per request (a rotated key needs no restart)."""
        if not self.key_env:
            return None
        key = os.environ.get(self.key_env)
        if not key:
            raise HanaError(
                f"remote model: the API key variable {self.key_env} is not set on the server",
                status=401,
            )
        return key

    def config_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"remote_host": self.host, "remote_model": self.model}
        if self.api != "ollama":
            fields["remote_api"] = self.api
        if self.key_env:
            fields["remote_key_env"] = self.key_env
        return fields


def remote_spec(config: dict[str, Any]) -> RemoteSpec | None:
    """The spec of a model whose config has both Ollama fields, else None (a local model)."""
    host, model = config.get("remote_host"), config.get("remote_model")
    if not (isinstance(host, str) and host and isinstance(model, str) and model):
        return None
    api = config.get("remote_api") or "ollama"
    key_env = config.get("remote_key_env") or None
    return RemoteSpec(host=host, model=model, api=str(api), key_env=key_env)


def checked_spec(
    remote_host: str | None, from_: str | None, api: str | None, key_env: str | None
) -> RemoteSpec:
    """A create request's remote fields as a spec; refusals are 400s with Ollama's wording."""
    api = api or "ollama"
    if api not in REMOTE_APIS:
        raise InvalidRequest(f"unknown remote_api '{api}' (expected ollama or openai)")
    upstream = (from_ or "").strip()
    if not upstream:
        raise InvalidRequest("a remote model needs 'from': the model's name on the remote host")
    if not remote_host and api == "ollama" and _cloud_suffix(upstream):
        remote_host = CLOUD_HOST
    if not remote_host:
        raise InvalidRequest("bad remote")
    if api == "ollama":
        upstream = _strip_cloud(upstream)
    if key_env is not None and not KEY_ENV_PATTERN.match(key_env):
        raise InvalidRequest(
            f"invalid remote_key_env '{key_env}': name an environment variable ending in "
            "API_KEY or _TOKEN"
        )
    return RemoteSpec(normalise_host(remote_host, api), upstream, api, key_env or None)


def wants_remote(remote_host: str | None, from_: str | None, has_files: bool) -> bool:
    """A create request for a remote model: a `remote_host`, or (as Ollama) a `from` with an
    explicit cloud tag (`:cloud`, `-cloud`) and no files."""
    return bool(remote_host) or (not has_files and bool(from_) and _cloud_suffix(from_ or ""))


def _cloud_suffix(name: str) -> bool:
    tag = name.rpartition(":")[2] if ":" in name else ""
    return tag == "cloud" or tag.endswith("-cloud")


def _strip_cloud(name: str) -> str:
    if name.endswith(":cloud"):
        return name.removesuffix(":cloud")
    if _cloud_suffix(name):
        return name.removesuffix("-cloud")
    return name
