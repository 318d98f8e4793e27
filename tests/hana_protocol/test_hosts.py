"""The host matrix: every OLLAMA_HOST form read one way (Ollama's envconfig.Host rules)."""

from __future__ import annotations

import pytest

from hana_protocol.hosts import HostAddress, host_from_env, normalize_url, parse_host

# value -> (bind host, port, client URL)
MATRIX = [
    ("", ("127.0.0.1", 11434, "http://127.0.0.1:11434/")),
    ("127.0.0.1", ("127.0.0.1", 11434, "http://127.0.0.1:11434/")),
    ("localhost:8080", ("localhost", 8080, "http://localhost:8080/")),
    ("http://127.0.0.1", ("127.0.0.1", 80, "http://127.0.0.1:80/")),
    ("https://127.0.0.1", ("127.0.0.1", 443, "https://127.0.0.1:443/")),
    ("http://127.0.0.1:11500", ("127.0.0.1", 11500, "http://127.0.0.1:11500/")),
    ("[::1]:9000", ("::1", 9000, "http://[::1]:9000/")),
    ("::1", ("::1", 11434, "http://[::1]:11434/")),
    ("0.0.0.0", ("0.0.0.0", 11434, "http://127.0.0.1:11434/")),
    ("0.0.0.0:11500", ("0.0.0.0", 11500, "http://127.0.0.1:11500/")),
    (":11500", ("0.0.0.0", 11500, "http://127.0.0.1:11500/")),
    ("http://[::]:5000", ("::", 5000, "http://127.0.0.1:5000/")),
    ("https://example.test/ollama", ("example.test", 443, "https://example.test:443/ollama/")),
    ("ollama.com", ("ollama.com", 443, "https://ollama.com:443/")),
    ("  127.0.0.1:11500  ", ("127.0.0.1", 11500, "http://127.0.0.1:11500/")),
    ("host:99999", ("127.0.0.1", 11434, "http://127.0.0.1:11434/")),
    ("host:port", ("127.0.0.1", 11434, "http://127.0.0.1:11434/")),
]


@pytest.mark.parametrize(("value", "expected"), MATRIX)
def test_host_forms(value: str, expected: tuple[str, int, str]) -> None:
    address = parse_host(value)
    assert (address.bind_host, address.port, address.url) == expected
    assert normalize_url(value) == expected[2]


def test_hana_host_wins_over_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1111")
    monkeypatch.setenv("HANA_HOST", "127.0.0.1:2222")
    assert host_from_env().port == 2222
    monkeypatch.delenv("HANA_HOST")
    assert host_from_env().port == 1111
    monkeypatch.delenv("OLLAMA_HOST")
    assert host_from_env() == HostAddress()
