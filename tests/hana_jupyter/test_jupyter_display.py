"""Rendering and parsing that need no server: tables, stream views, URL and prompt handling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hana_client import Answer
from hana_client.payload import keep_alive_value
from hana_client.pull_progress import PullProgress
from hana_jupyter.display import StreamBoard, StreamState, model_table, runner_table
from hana_jupyter.magics import expand_fields
from hana_protocol.formatting import format_relative, format_size
from hana_protocol.hosts import normalize_url


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434/"),
        ("0.0.0.0:1234", "http://127.0.0.1:1234/"),
        (":5000", "http://127.0.0.1:5000/"),
        ("http://example.org", "http://example.org:80/"),
        ("https://example.org/user/x/hana", "https://example.org:443/user/x/hana/"),
        ("http://[::1]:8080", "http://[::1]:8080/"),
    ],
)
def test_urls_are_read_like_ollama_host(value: str, url: str) -> None:
    assert normalize_url(value) == url


def test_numeric_keep_alive_is_sent_as_seconds() -> None:
    assert keep_alive_value("-1") == -1
    assert keep_alive_value("300") == 300
    assert keep_alive_value("1.5") == 1.5
    assert keep_alive_value("30m") == "30m"


def test_expand_replaces_only_defined_names() -> None:
    namespace = {"topic": "cats", "items": ["a", "b"], "In": ["", "x = 1"]}
    text = 'About {topic}, {items[1]}, {In[1]}; {undefined}; {{topic}}; {"json": {topic}}; f(x){}'
    assert expand_fields(text, namespace) == (
        'About cats, b, x = 1; {undefined}; {topic}; {"json": cats}; f(x){}'
    )


def test_expand_does_not_call_anything() -> None:
    assert expand_fields("{topic.upper()}", {"topic": "x"}) == "{topic.upper()}"


def test_completion_folds_generate_and_chat_chunks() -> None:
    completion = Answer(model="m")
    assert completion.add({"response": "Hel", "done": False}) == "Hel"
    completion.add({"message": {"role": "assistant", "content": "lo"}, "done": False})
    completion.add(
        {
            "response": "",
            "done": True,
            "done_reason": "length",
            "eval_count": 10,
            "eval_duration": 500_000_000,
        }
    )
    assert completion.text == "Hello"
    assert completion.done_reason == "length"
    assert completion.tokens_per_second == pytest.approx(20.0)
    assert completion.message == {"role": "assistant", "content": "Hello"}


def test_sizes_and_times_read_like_the_ollama_cli() -> None:
    now = datetime.now(UTC)
    assert format_size(291_000_000) == "291 MB"
    assert format_size(1_234_000_000) == "1.2 GB"
    assert format_relative(now + timedelta(minutes=4, seconds=30), now) == "4 minutes from now"
    assert format_relative(now - timedelta(hours=2), now) == "2 hours ago"
    assert format_relative(now + timedelta(days=365 * 100), now) == "Forever"


def test_tables_render_as_text_and_html() -> None:
    models = model_table(
        [
            {
                "name": "tiny:a",
                "digest": "ab" * 32,
                "size": 2_000_000,
                "modified_at": datetime.now(UTC).isoformat(),
            }
        ]
    )
    assert models[0]["name"] == "tiny:a"  # still the API's data
    lines = models.to_text().splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert lines[1].startswith("tiny:a") and "abababababab" in lines[1]
    assert "<td>tiny:a</td>" in models._repr_html_()
    runners = runner_table(
        [
            {
                "name": "<b>",
                "size": 10,
                "size_vram": 0,
                "state": "busy",
                "in_flight": 2,
                "num_parallel": 4,
                "expires_at": "2999-01-01T00:00:00Z",
            }
        ]
    )
    assert "busy 2/4" in runners.to_text() and "100% CPU" in runners.to_text()
    assert "&lt;b&gt;" in runners._repr_html_()
    assert runner_table([]).to_text() == "no models loaded"


def test_stream_state_renders_each_phase() -> None:
    state = StreamState("tiny:a", "tiny:a · prompt 2")
    assert "loading tiny:a" in state.render(markdown=True, header=False)["text/markdown"]
    state.add({"response": "Hi *there*", "done": False})
    streaming = state.render(markdown=True, header=True)
    assert streaming["text/markdown"].startswith("**tiny:a · prompt 2**")
    assert "Hi *there*" in streaming["text/markdown"]  # the answer itself is Markdown
    state.add({"response": "", "done": True, "eval_count": 3, "eval_duration": 1_000_000_000})
    done = state.render(markdown=False, header=False)
    assert done == {"text/plain": "Hi *there*\n[tiny:a · 3 tokens · 3.0 tokens/s]"}
    state.end("canceled")  # a finished answer stays finished
    assert state.status == "done"


def test_terminal_board_prints_a_single_stream_as_it_grows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = StreamState("tiny:a", "tiny:a")
    board = StreamBoard([state], markdown=True, live=False)
    board.show()
    state.add({"response": "Hel", "done": False})
    board.refresh()
    state.add({"response": "lo", "done": False})
    board.refresh()
    state.add({"response": "", "done": True, "eval_count": 2, "eval_duration": 10**9})
    board.refresh()
    assert capsys.readouterr().out == "Hello\n[tiny:a · 2 tokens · 2.0 tokens/s]\n"


PULL = [
    {"status": "pulling manifest"},
    {"status": "pulling 0123456789ab", "digest": "sha256:0123456789ab" + "0" * 52, "total": 2000},
    {
        "status": "pulling 0123456789ab",
        "digest": "sha256:0123456789ab" + "0" * 52,
        "total": 2000,
        "completed": 1000,
    },
    {"status": "verifying sha256 digest"},
    {"status": "success"},
]


def test_terminal_board_prints_each_step_of_a_pull_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = StreamState("m:1", "m:1")
    board = StreamBoard([state], markdown=True, live=False)
    board.show()
    progress = PullProgress("m:1")
    state.pulling(progress)
    for chunk in [*PULL[:3], PULL[2], *PULL[3:]]:
        progress.add(chunk)
        board.refresh()
    state.pulled()
    state.add({"response": "Hi", "done": False})
    board.refresh()
    assert capsys.readouterr().out.splitlines() == [
        "pulling manifest",
        "pulling 0123456789ab",
        "verifying sha256 digest",
        "success",
        "Hi",
    ]


def test_a_pull_renders_as_bars_then_its_summary_follows_the_answer() -> None:
    state = StreamState("m:1", "m:1")
    progress = PullProgress("m:1")
    state.pulling(progress)
    for chunk in PULL[:3]:
        progress.add(chunk)
    view = state.render(markdown=True, header=False)
    plain = view["text/plain"].splitlines()
    assert plain[:2] == ["pulling m:1…", "pulling manifest"]
    assert plain[2].startswith("pulling 0123456789ab:  50%|")
    assert "| 1.00k/2.00k [00:00<00:00, " in plain[2]  # done/total [elapsed<left, rate]
    assert view["text/markdown"].startswith("*pulling m:1…*\n\n```\npulling manifest\n")
    for chunk in PULL[3:]:
        progress.add(chunk)
    state.pulled()
    assert state.render(markdown=False, header=False)["text/plain"] == "loading m:1…"
    state.add({"response": "Hi", "done": True, "eval_count": 1, "eval_duration": 10**9})
    footer = state.render(markdown=False, header=False)["text/plain"].splitlines()[-1]
    assert footer.startswith(f"[m:1 · 1 tokens · 1.0 tokens/s · pulled {format_size(1000)} in ")
