"""A conversation longer than num_ctx loses its oldest messages, not its system message or its
question (Ollama's history truncation), and a request sees the num_ctx it asked for even when a
runner loaded for a larger one serves it. Real `hana serve`, tiny runner."""

from __future__ import annotations

from typing import Any

import pytest
from hana_server.history import kept_messages
from server_harness import HanaServerProcess
from tiny_gguf import write_tiny_gguf

MODEL = "history-chat"
TEMPLATE = "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}\n{{ end }}<|assistant|>"
SYSTEM = {"role": "system", "content": "Answer in one word."}
TURNS = [
    {"role": "user" if index % 2 == 0 else "assistant", "content": f"turn {index} " + "word " * 30}
    for index in range(6)
]
MESSAGES = [SYSTEM, *TURNS, {"role": "user", "content": "And now?"}]


@pytest.fixture(scope="module")
def chat_model(server: HanaServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_tiny_gguf(tmp_path_factory.mktemp("history") / "history.gguf", seed=21)
    server.create_model(MODEL, path, template=TEMPLATE)
    return MODEL


def chat(server: HanaServerProcess, messages: list[dict[str, Any]], **fields: Any) -> Any:
    options = {"num_predict": 1, "temperature": 0, **fields.pop("options", {})}
    body = {"model": MODEL, "messages": messages, "stream": False, "options": options, **fields}
    return server.http.post("/api/chat", json=body, timeout=60)


def prompt_tokens(server: HanaServerProcess, messages: list[dict[str, Any]], num_ctx: int) -> int:
    answer = chat(server, messages, options={"num_ctx": num_ctx})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["prompt_eval_count"])


def test_the_oldest_turns_go_first_the_system_message_and_the_question_stay(
    server: HanaServerProcess, chat_model: str
) -> None:
    # What the prompt from each start costs, measured with room for everything (this loads a
    # 4096-cell runner, which then serves the smaller num_ctx below as well).
    cost = {
        first: prompt_tokens(server, kept_messages(MESSAGES, first), 4096) for first in (1, 5, 6, 7)
    }
    assert cost[1] > cost[5] > cost[6] > cost[7]
    num_ctx = (cost[5] + cost[6]) // 2  # room for the system message, the last turn, the question
    assert prompt_tokens(server, MESSAGES, num_ctx) == cost[6]
    # Even the question alone too long: system message and question are kept, the runner then
    # truncates the tokens as for any prompt.
    assert prompt_tokens(server, MESSAGES, cost[7] - 1) < cost[7]


def test_truncate_false_keeps_every_message_and_refuses_what_does_not_fit(
    server: HanaServerProcess, chat_model: str
) -> None:
    full = prompt_tokens(server, MESSAGES, 4096)
    answer = chat(server, MESSAGES, truncate=False, options={"num_ctx": full // 2})
    assert answer.status_code == 400
    assert answer.json() == {"error": "the input length exceeds the context length"}
    assert prompt_tokens(server, MESSAGES[-2:], full // 2) < full  # the runner still serves


def test_a_short_conversation_is_not_touched(server: HanaServerProcess, chat_model: str) -> None:
    short = [SYSTEM, {"role": "user", "content": "Hi"}]
    assert prompt_tokens(server, short, 64) == prompt_tokens(server, short, 4096)
