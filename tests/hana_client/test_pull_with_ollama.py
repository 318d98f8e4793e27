"""The official `ollama` Python client pulls through hana from the loopback registry, streaming
and not, and then lists and runs what it pulled."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ollama
import pytest
from registry_server import LoopbackRegistry
from server_harness import HanaServerProcess


@pytest.fixture
def client(hana: HanaServerProcess) -> Iterator[ollama.Client]:
    made = ollama.Client(host=hana.url)
    yield made
    made._client.close()  # the ollama client has no close() of its own


def test_pull_streams_ollamas_progress(client: ollama.Client, registry: LoopbackRegistry) -> None:
    name = registry.name("tiny")
    (model,) = registry.models.values()
    manifest = json.loads(model.manifest)
    sizes = {layer["digest"]: layer["size"] for layer in [*manifest["layers"], manifest["config"]]}

    progress = list(client.pull(name, insecure=True, stream=True))

    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [p for p in progress if p.digest]
    assert list(dict.fromkeys(p.digest for p in layers)) == list(sizes)  # layers, then config
    for p in layers:
        assert p.status == f"pulling {p.digest.removeprefix('sha256:')[:12]}"
        assert p.total == sizes[p.digest]
    last = {p.digest: p.completed for p in layers}
    assert last == sizes  # every layer ends complete
    assert name in [m.model for m in client.list().models]
    try:
        shown = client.show(name)
        assert shown.template == "{{ .System }} {{ .Prompt }}"
        assert 'SYSTEM """You are tiny."""' in (shown.modelfile or "")
        again = client.pull(name, insecure=True)  # stream=False: one final status
        assert again.status == "success"
    finally:
        client.delete(name)


def test_pull_errors_come_back_as_response_errors(
    client: ollama.Client, registry: LoopbackRegistry
) -> None:
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.pull(registry.name("absent"), insecure=True, stream=True))
    assert streamed.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as whole:
        client.pull(registry.name("absent"), insecure=True)
    assert whole.value.status_code == 500  # Ollama answers 500 for every failed stream:false pull
    with pytest.raises(ollama.ResponseError) as bad:
        list(client.pull("a b", stream=True))
    assert bad.value.status_code == 400
