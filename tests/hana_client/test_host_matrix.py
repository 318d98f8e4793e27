"""One address, one URL: the server (HanaSettings), the `hana` CLI and the kernel's HanaClient read
HANA_HOST / OLLAMA_HOST the same way, in every form Ollama accepts."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hana_server.cli import connect
from hana_server.config import HanaSettings

import hana_client.discovery as discovery
from hana_client import HanaClient

# value -> the URL every client uses (the server listens on its host and port)
FORMS = [
    ("127.0.0.1", "http://127.0.0.1:11434/"),
    ("127.0.0.1:11500", "http://127.0.0.1:11500/"),
    ("http://127.0.0.1:11600", "http://127.0.0.1:11600/"),
    ("http://127.0.0.1", "http://127.0.0.1:80/"),  # Ollama's rule: a scheme without port is 80
    ("[::1]:9000", "http://[::1]:9000/"),
    ("0.0.0.0", "http://127.0.0.1:11434/"),
    (":11700", "http://127.0.0.1:11700/"),
]


@pytest.fixture(params=["HANA_HOST", "OLLAMA_HOST"])
def variable(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("HANA_URL", "HANA_HOST", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    return str(request.param)


def _server_address() -> tuple[str, int]:
    settings = HanaSettings()
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    return host, settings.port


@pytest.mark.parametrize(("value", "url"), FORMS)
def test_server_cli_and_kernel_agree(
    variable: str, value: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    probed: list[str] = []
    # The kernel probes the shared port before it uses it: say it answers, and see where it asked.
    monkeypatch.setattr(discovery, "probe", lambda where, timeout: probed.append(where) or True)

    kernel = HanaClient(start_embedded=False).base_url
    cli = connect().base_url
    assert kernel == cli == url
    assert probed == [url]
    split = urlsplit(url)
    assert _server_address() == (split.hostname, split.port)


def test_hana_host_wins_everywhere(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1111")
    monkeypatch.setenv("HANA_HOST", "127.0.0.1:2222")
    monkeypatch.setattr(discovery, "probe", lambda where, timeout: True)
    assert HanaClient().base_url == connect().base_url == "http://127.0.0.1:2222/"
    assert _server_address() == ("127.0.0.1", 2222)
