"""Model names follow Ollama's parsing, defaults and shortest display form."""

from __future__ import annotations

from pathlib import Path

import pytest
from hana_server.store.names import InvalidModelName, ModelName

from hana_protocol.errors import InvalidRequest

DEFAULT = ("registry.ollama.ai", "library")


@pytest.mark.parametrize(
    ("text", "parts", "display"),
    [
        ("gemma3:270m", (*DEFAULT, "gemma3", "270m"), "gemma3:270m"),
        ("gemma3", (*DEFAULT, "gemma3", "latest"), "gemma3:latest"),
        ("llama3.2:3b-instruct-q4_K_M", (*DEFAULT, "llama3.2", "3b-instruct-q4_K_M"),
         "llama3.2:3b-instruct-q4_K_M"),
        ("user/model", ("registry.ollama.ai", "user", "model", "latest"), "user/model:latest"),
        ("registry.ollama.ai/library/qwen:7b", (*DEFAULT, "qwen", "7b"), "qwen:7b"),
        ("example.com/ns/model:v1", ("example.com", "ns", "model", "v1"),
         "example.com/ns/model:v1"),
        # `library` is only dropped together with the default host
        ("example.com/library/m", ("example.com", "library", "m", "latest"),
         "example.com/library/m:latest"),
        # a ":" before the last "/" is a port, not a tag
        ("localhost:5000/ns/m", ("localhost:5000", "ns", "m", "latest"),
         "localhost:5000/ns/m:latest"),
        ("https://example.com/ns/m:1", ("example.com", "ns", "m", "1"), "example.com/ns/m:1"),
        ("http://localhost:8080/a/b:c", ("localhost:8080", "a", "b", "c"), "localhost:8080/a/b:c"),
        ("Mistral:Q4_K_M", (*DEFAULT, "Mistral", "Q4_K_M"), "Mistral:Q4_K_M"),
        ("_x/_y:_z", ("registry.ollama.ai", "_x", "_y", "_z"), "_x/_y:_z"),
        ("m" * 80, (*DEFAULT, "m" * 80, "latest"), "m" * 80 + ":latest"),
    ],
)  # fmt: skip
def test_valid_names(text: str, parts: tuple[str, ...], display: str) -> None:
    name = ModelName.parse(text)
    assert name.parts == parts
    assert name.display == display
    assert ModelName.parse(name.display) == name
    assert name.manifest_relpath == Path(*parts)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":tag",  # model missing before the tag
        "model:",  # tag promised but empty
        "/model",  # namespace promised but empty
        "ns/",  # model promised but empty
        "a/b/c/d",  # the host would contain "/"
        "ns.x/model",  # "." is not allowed in a namespace
        "model:ta/g",  # then "model:ta" is the namespace
        ".model",  # must start with alnum or "_"
        "-model",
        "mo del",
        "m@sha256:abc",
        "model:tag:x",
        "http://m",
        "m" * 81,
        "m:" + "t" * 81,
    ],
)
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidModelName) as info:
        ModelName.parse(text)
    assert isinstance(info.value, InvalidRequest)
    assert info.value.status == 400
    assert info.value.message == "invalid model name"


def test_names_keep_their_spelling() -> None:
    name = ModelName.parse("Registry.Ollama.AI/Library/Gemma3:270M")
    assert name.parts == ("Registry.Ollama.AI", "Library", "Gemma3", "270M")
    # defaults are recognised in any letter case, as Ollama compares them
    assert name.display == "Gemma3:270M"
    assert str(name) == "Gemma3:270M"
