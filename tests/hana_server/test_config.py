from __future__ import annotations

import pytest
from hana_server.config import HanaSettings


def test_env_vars_hana_first_then_ollama(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "10m")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    monkeypatch.setenv("HANA_NUM_PARALLEL", "6")
    monkeypatch.setenv("OLLAMA_MODELS", "/tmp/ollama-models")
    settings = HanaSettings()
    assert settings.keep_alive == "10m"
    assert settings.default_keep_alive_seconds == 600
    assert settings.num_parallel == 6
    assert settings.models_dir == "/tmp/ollama-models"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HANA_HOST",
        "OLLAMA_HOST",
        "HANA_KEEP_ALIVE",
        "OLLAMA_KEEP_ALIVE",
        "HANA_MAX_LOADED_MODELS",
        "OLLAMA_MAX_LOADED_MODELS",
        "HANA_NUM_PARALLEL",
        "OLLAMA_NUM_PARALLEL",
        "HANA_MAX_QUEUE",
        "OLLAMA_MAX_QUEUE",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = HanaSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 11434)
    assert settings.keep_alive == "5m"
    assert settings.max_loaded_models == 3
    assert settings.num_parallel == 4
    assert settings.max_queue == 512


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:11500", ("127.0.0.1", 11500)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
        (":11500", ("0.0.0.0", 11500)),
        ("http://localhost:8080", ("localhost", 8080)),
        ("https://example.test", ("example.test", 443)),
    ],
)
def test_ollama_host_sets_bind_address(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, int]
) -> None:
    monkeypatch.delenv("HANA_HOST", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", value)
    settings = HanaSettings()
    assert (settings.host, settings.port) == expected


def test_every_setting_is_documented() -> None:
    traits = HanaSettings.class_traits(config=True)
    assert {
        "models_dir",
        "keep_alive",
        "max_loaded_models",
        "num_parallel",
        "max_queue",
        "port",
    } <= set(traits)
    assert all(trait.help for trait in traits.values())


@pytest.mark.parametrize(("value", "expected"), [(None, 10), ("0", 0), ("5", 5), ("40", 19)])
def test_runner_niceness(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int) -> None:
    if value is None:
        monkeypatch.delenv("HANA_RUNNER_NICENESS", raising=False)
    else:
        monkeypatch.setenv("HANA_RUNNER_NICENESS", value)
    assert HanaSettings().runner_niceness == expected
