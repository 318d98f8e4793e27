"""`auto` through real HTTP on scripted runners: native (ollama client), /v1 (openai client),
discovery (tags, show, models), forcing a tier, fallback, grading, and the counts in /api/ps."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import ollama
import openai
import pytest
from scripted_runner import Gate, Script
from scripted_server import ScriptedServer
from server_harness import wait_for

ROUTES = {"simple": "small", "medium": "mid", "complex": "big"}
SIMPLE = "What is the capital of Peru?"
COMPLEX = "Prove that there are infinitely many primes, step by step."


def serve(
    start: Callable[..., ScriptedServer],
    routes: dict[str, str] | None = None,
    models: tuple[str, ...] = ("small", "mid", "big"),
    **settings: Any,
) -> ScriptedServer:
    server = start(routes=ROUTES if routes is None else routes, **settings)
    for seed, name in enumerate(models):
        server.create_tiny(name, seed=seed)
        server.script(name, Script(chunks=[f"{name} ", "answers"]))
    return server


@pytest.fixture
def routed(start_scripted_server: Callable[..., ScriptedServer]) -> ScriptedServer:
    return serve(start_scripted_server)


def ndjson(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_ollama_client_generate_and_chat_go_to_the_tier_the_prompt_needs(
    routed: ScriptedServer,
) -> None:
    client = ollama.Client(host=routed.url)
    simple = client.generate(model="auto", prompt=SIMPLE)
    assert simple.model == "small:latest" and simple.response == "small answers"
    hard = client.chat(model="auto", messages=[{"role": "user", "content": COMPLEX}])
    assert hard.model == "big:latest" and hard.message.content == "big answers"
    streamed = list(client.generate(model="auto", prompt=COMPLEX, stream=True))
    assert {part.model for part in streamed} == {"big:latest"}
    client.close()


def test_the_final_chunk_says_who_answered_and_why(routed: ScriptedServer) -> None:
    lines = ndjson(routed.http.post("/api/generate", json={"model": "auto", "prompt": COMPLEX}))
    *body, final = lines
    assert all("hana_route" not in line for line in body)
    route = final["hana_route"]
    assert route["requested"] == "auto" and route["tier"] == "complex" and route["model"] == "big"
    assert "multi-step reasoning asked" in route["reason"] and "fallbacks" not in route
    whole = routed.http.post(
        "/api/chat",
        json={"model": "auto", "stream": False, "messages": [{"role": "user", "content": SIMPLE}]},
    ).json()
    assert whole["model"] == "small:latest" and whole["hana_route"]["tier"] == "simple"


def test_openai_client_uses_auto_and_sees_the_route(routed: ScriptedServer) -> None:
    client = openai.OpenAI(base_url=routed.url + "/v1", api_key="unused")
    chat = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": COMPLEX}]
    )
    assert chat.choices[0].message.content == "big answers"
    assert chat.model == "big" and chat.model_extra["hana_route"]["tier"] == "complex"
    text = client.completions.create(model="auto", prompt=SIMPLE)
    assert text.choices[0].text == "small answers" and text.model == "small"
    chunks = list(
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": SIMPLE}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "small answers"
    assert chunks[-1].model_extra["hana_route"]["model"] == "small"
    forced = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": SIMPLE}],
        extra_body={"hana_tier": "medium"},
    )
    assert forced.choices[0].message.content == "mid answers"
    assert client.models.retrieve("auto").id == "auto:latest"
    assert "auto:latest" in [m.id for m in client.models.list()]
    client.close()


def test_a_tier_is_forced_by_name_or_option(routed: ScriptedServer) -> None:
    client = ollama.Client(host=routed.url)
    assert client.generate(model="auto:complex", prompt=SIMPLE).model == "big:latest"
    options = {"hana_tier": "medium"}
    assert client.generate(model="auto", prompt=SIMPLE, options=options).model == "mid:latest"
    with pytest.raises(ollama.ResponseError) as error:
        client.generate(model="auto:huge", prompt=SIMPLE)
    assert error.value.status_code == 400
    assert "unknown tier 'huge'; the tiers are simple, medium, complex" in error.value.error
    # The routing options never reach the runner.
    sent = [p for r in routed.launcher.launched for p in r.payloads]
    assert sent and all("hana_tier" not in p["options"] for p in sent)
    client.close()


def test_a_missing_tier_falls_back_with_a_note(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = serve(start_scripted_server, models=("small", "mid"))  # "big" is not installed
    final = server.http.post(
        "/api/generate", json={"model": "auto", "prompt": COMPLEX, "stream": False}
    ).json()
    assert final["model"] == "mid:latest" and final["response"] == "mid answers"
    route = final["hana_route"]
    assert route["tier"] == "medium" and "fell back to medium" in route["reason"]
    assert route["fallbacks"] == ["complex (big): model 'big' not found"]
    assert server.ps() and server.http.get("/api/ps").json()["hana_routing"]["fallbacks"] == 1


def test_a_tier_that_cannot_load_falls_back_upwards_first(routed: ScriptedServer) -> None:
    routed.script("small", Script(load_error="out of memory on the small box"))
    final = routed.http.post(
        "/api/generate", json={"model": "auto", "prompt": SIMPLE, "stream": False}
    ).json()
    assert final["model"] == "mid:latest"
    assert final["hana_route"]["fallbacks"] == ["simple (small): out of memory on the small box"]


def test_a_tier_whose_runner_dies_before_answering_falls_back(routed: ScriptedServer) -> None:
    routed.script("big", Script(chunks=["never"], crash_after=0))
    final = routed.http.post(
        "/api/generate", json={"model": "auto", "prompt": COMPLEX, "stream": False}
    ).json()
    assert final["response"] == "mid answers" and final["hana_route"]["tier"] == "medium"
    (note,) = final["hana_route"]["fallbacks"]
    assert note.startswith("complex (big): ")
    # Nothing leaked: every lease came back, the live runner is idle.
    assert all(entry["in_flight"] == 0 for entry in routed.ps())


def test_a_client_that_leaves_a_routed_stream_frees_the_slot(routed: ScriptedServer) -> None:
    gate = Gate()
    routed.script("small", Script(chunks=["a", "b", "c"], gate=gate, gate_after=1))
    body = {"model": "auto", "prompt": SIMPLE}
    with routed.http.stream("POST", "/api/generate", json=body) as response:
        first = json.loads(next(response.iter_lines()))
        assert first["model"] == "small:latest" and first["response"] == "a"
    (runner,) = routed.launcher.live(routed.service.store.get("small").model_path)
    wait_for(lambda: runner.cancelled == 1 and runner.active == 0)
    wait_for(lambda: routed.ps()[0]["in_flight"] == 0)
    gate.open()


def test_when_every_tier_fails_the_error_names_each(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = serve(start_scripted_server, models=())
    response = server.http.post("/api/generate", json={"model": "auto", "prompt": SIMPLE})
    assert response.status_code == 500
    message = response.json()["error"]
    assert message.startswith("auto: no tier could answer (simple:")
    for name in ("small", "mid", "big"):
        assert f"model '{name}' not found" in message
    assert server.http.get("/api/ps").json()["hana_routing"]["failed"] == 1


def test_without_routes_auto_says_how_to_configure_them(scripted_server: ScriptedServer) -> None:
    response = scripted_server.http.post("/api/generate", json={"model": "auto", "prompt": "hi"})
    assert response.status_code == 400
    assert "no routes configured; set HANA_ROUTES" in response.json()["error"]
    assert "hana_routing" not in scripted_server.http.get("/api/ps").json()
    assert scripted_server.http.get("/api/tags").json()["models"] == []


def test_a_request_may_bring_its_own_routes(scripted_server: ScriptedServer) -> None:
    scripted_server.create_tiny("solo")
    body = {
        "model": "auto",
        "prompt": COMPLEX,
        "stream": False,
        "options": {"hana_routes": {"quick": "solo", "deep": "solo"}},
    }
    final = scripted_server.http.post("/api/generate", json=body).json()
    assert final["model"] == "solo:latest" and final["hana_route"]["tier"] == "deep"
    body["options"] = {"hana_routes": "quick"}
    bad = scripted_server.http.post("/api/generate", json=body)
    assert bad.status_code == 400 and "is not TIER=MODEL" in bad.json()["error"]


def test_a_real_model_named_auto_is_not_shadowed_without_routes(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.create_tiny("auto")
    final = scripted_server.http.post(
        "/api/generate", json={"model": "auto", "prompt": "hi", "stream": False}
    ).json()
    assert final["model"] == "auto:latest" and "hana_route" not in final


def test_auto_is_discoverable_in_tags_show_and_ps(routed: ScriptedServer) -> None:
    client = ollama.Client(host=routed.url)
    listed = {m.model: m for m in client.list().models}
    assert "auto:latest" in listed and listed["auto:latest"].details.format == "router"
    shown = client.show("auto")
    assert shown.details.families == ["small", "mid", "big"]
    assert shown.modelinfo["hana.route.complex"] == "big"
    assert "completion" in (shown.capabilities or [])
    client.generate(model="auto", prompt=SIMPLE)
    client.generate(model="auto", prompt=SIMPLE)
    client.generate(model="auto", prompt=COMPLEX)
    routing = routed.http.get("/api/ps").json()["hana_routing"]
    assert routing["requests"] == {"simple": 2, "complex": 1}
    assert routing["routes"] == ROUTES
    assert routed.http.get("/api/hana/status").json()["routing"]["requests"]["simple"] == 2
    client.close()


def test_auto_refuses_embeddings_in_ollamas_words(routed: ScriptedServer) -> None:
    response = routed.http.post("/api/embed", json={"model": "auto", "input": "hi"})
    assert response.status_code == 400
    assert response.json() == {"error": '"auto" does not support embeddings'}


def test_load_request_for_auto_loads_the_chosen_tier(routed: ScriptedServer) -> None:
    final = routed.http.post("/api/generate", json={"model": "auto:medium"}).json()
    assert final["done_reason"] == "load" and final["hana_route"]["model"] == "mid"
    assert [m["name"] for m in routed.ps()] == ["mid:latest"]


def test_unsure_requests_are_graded_by_the_smallest_loaded_model(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = serve(start_scripted_server, route_grading=True)
    server.script("small", Script(chunks=["COMPLEX"]))  # the grader's verdict
    server.http.post("/api/generate", json={"model": "small"}).raise_for_status()  # load it
    edge = "Write a Python function that reverses a list."  # rules: medium, on the edge
    final = server.http.post(
        "/api/generate", json={"model": "auto", "prompt": edge, "stream": False}
    ).json()
    assert final["model"] == "big:latest"
    assert "unsure, graded complex by small:latest" in final["hana_route"]["reason"]
    grading = server.launcher.live(server.service.store.get("small").model_path)[0].payloads[-1]
    assert "Rate how hard" in grading["prompt"] and grading["options"]["num_predict"] == 4
    # A sure verdict is not graded.
    sure = server.http.post(
        "/api/generate", json={"model": "auto", "prompt": SIMPLE, "stream": False}
    ).json()
    assert "graded" not in sure["hana_route"]["reason"]
    assert server.http.get("/api/ps").json()["hana_routing"]["graded"] == 1


def test_grading_that_fails_leaves_the_rules_verdict(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = serve(start_scripted_server, route_grading=True)
    edge = "Write a Python function that reverses a list."
    alone = server.http.post(
        "/api/generate", json={"model": "auto", "prompt": edge, "stream": False}
    ).json()
    assert alone["model"] == "mid:latest"
    assert "no model loaded to grade" in alone["hana_route"]["reason"]
    # Now mid is loaded and grades, but says no level: the rules' verdict stands.
    again = server.http.post(
        "/api/generate", json={"model": "auto", "prompt": edge, "stream": False}
    ).json()
    assert again["model"] == "mid:latest"
    assert "unsure, grader mid:latest said 'mid answers'" in again["hana_route"]["reason"]


def test_a_slow_grader_is_given_up_on_time(
    start_scripted_server: Callable[..., ScriptedServer],
) -> None:
    server = serve(start_scripted_server, route_grading=True, route_grading_timeout=0.2)
    server.script("small", Script(chunks=["COMPLEX"], chunk_delay=5.0))
    server.http.post("/api/generate", json={"model": "small"}).raise_for_status()
    edge = "Write a Python function that reverses a list."
    final = server.http.post(
        "/api/generate", json={"model": "auto", "prompt": edge, "stream": False}
    ).json()
    assert final["model"] == "mid:latest"
    assert "grader small:latest timed out" in final["hana_route"]["reason"]
    small = server.launcher.live(server.service.store.get("small").model_path)[0]
    assert small.cancelled == 1 and small.active == 0  # the grading stream was closed
