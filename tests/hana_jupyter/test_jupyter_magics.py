"""`%%hana` and `%hana` on a bare IPython shell against a real server.

Display calls are recorded by the shell fixture's publisher, with their display id and time.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_side import MODEL_A, MODEL_B, in_flight
from server_harness import HanaServerProcess, free_port, wait_for

from hana_client import HanaClient
from hana_jupyter.display import Records
from hana_jupyter.magics import HanaMagicError


def _outputs(ip: InteractiveShell) -> dict[str, list[dict[str, Any]]]:
    return ip.display_pub.by_id()  # type: ignore[attr-defined,no-any-return]


def test_one_model_streams_into_one_handle(shell: InteractiveShell) -> None:
    shell.run_line_magic("config", "HanaMagics.throttle = 0.01")
    shell.run_cell_magic("hana", f"{MODEL_A} --num-predict 600 --temperature 0", "Hello there")
    (outputs,) = _outputs(shell).values()
    first, updates = outputs[0], outputs[1:]
    assert not first["update"] and first["data"]["text/plain"] == f"loading {MODEL_A}…"
    assert "text/markdown" in first["data"]
    assert all(o["update"] for o in updates)
    final = updates[-1]["data"]
    answer = shell.user_ns["_hana"]
    assert final["text/plain"].startswith(answer) and "600 tokens" in final["text/markdown"]
    assert "tokens/s" in final["text/markdown"]
    streaming = [o["data"]["text/plain"] for o in updates[:-1]]
    assert len(streaming) >= 2, "the answer arrived in one piece: no streaming seen"
    assert all(answer.startswith(text) for text in streaming), (answer, streaming)
    assert all(len(a) < len(b) for a, b in itertools.pairwise(streaming))
    # Throttled: no more updates than one per 0.01 s, plus the last one.
    elapsed = updates[-1]["time"] - first["time"]
    assert len(updates) <= elapsed / 0.01 + 2


def test_models_and_prompts_run_in_parallel(shell: InteractiveShell) -> None:
    cell = "Tell me about cats.\n---\nTell me about dogs.\n"
    for model in (MODEL_A, MODEL_B):  # loaded first, so a load cannot hide the overlap
        shell.run_line_magic("hana", f"warmup {model}")
    shell.run_cell_magic("hana", f"{MODEL_A} {MODEL_B} -n 256 -t 0 -o answers", cell)
    outputs = list(_outputs(shell).values())
    labels = [o[0]["data"]["text/plain"].splitlines()[0] for o in outputs]
    assert labels == [
        f"[{MODEL_A} · prompt 1]",
        f"[{MODEL_B} · prompt 1]",
        f"[{MODEL_A} · prompt 2]",
        f"[{MODEL_B} · prompt 2]",
    ]
    answers = shell.user_ns["answers"]
    assert isinstance(answers, list) and len(answers) == 4
    for output, answer in zip(outputs, answers, strict=True):
        final = output[-1]["data"]["text/plain"]
        assert answer and answer in final and "256 tokens" in final
    # They ran at the same time: every stream was producing while another one was too (one after
    # another, no two intervals would meet). Stricter orderings are left to the machine's load.
    streams = shell.magics_manager.registry["HanaMagics"].last_streams
    assert [s.completion.eval_count for s in streams] == [256] * 4
    for stream in streams:
        assert any(
            other is not stream
            and other.first_chunk < stream.finished
            and stream.first_chunk < other.finished
            for other in streams
        )


def test_cell_is_sent_as_written(hana: HanaServerProcess, shell: InteractiveShell) -> None:
    shell.user_ns["name"] = "IGNORED"
    prompt = 'Keep {name} and {"a": {1, 2}} and {0} literal.'
    shell.run_cell_magic("hana", f"{MODEL_A} -n 24 -t 0 -o raw", prompt)
    client = HanaClient(url=hana.url)
    expected = client.generate(MODEL_A, prompt, options={"num_predict": 24, "temperature": 0})
    expanded = client.generate(
        MODEL_A, prompt.replace("{name}", "IGNORED"), options={"num_predict": 24, "temperature": 0}
    )
    client.close()
    assert shell.user_ns["raw"] == expected.text
    shell.run_cell_magic("hana", f"{MODEL_A} -n 24 -t 0 -o expanded --expand", prompt)
    assert shell.user_ns["expanded"] == expanded.text


def test_chat_keeps_a_conversation_per_model(shell: InteractiveShell) -> None:
    shell.run_cell_magic("hana", f"{MODEL_A} --chat -n 5 --system 'Be brief.' -o first", "Hi")
    shell.run_cell_magic("hana", f"{MODEL_A} --chat -n 5 -o second", "And then?")
    magics = shell.magics_manager.registry["HanaMagics"]
    assert magics.conversations[MODEL_A] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": shell.user_ns["first"]},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": shell.user_ns["second"]},
    ]
    shell.run_line_magic("hana", "reset")
    assert magics.conversations == {}


def _one_line_error(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str
) -> tuple[str, BaseException | None]:
    result = shell.run_cell(cell)
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0], result.error_in_exec


def test_unknown_model_is_one_line(shell: InteractiveShell, capsys: pytest.CaptureFixture) -> None:
    shell.run_line_magic("config", "HanaMagics.pull_missing = False")
    line, error = _one_line_error(shell, capsys, "%%hana nope:1\nHello")
    assert line == "hana: model 'nope:1' not found"
    assert isinstance(error, HanaMagicError)
    (outputs,) = _outputs(shell).values()
    assert outputs[-1]["data"] == {"text/plain": ""}  # the placeholder does not repeat it


def test_unreachable_server_is_one_line(
    shell: InteractiveShell, capsys: pytest.CaptureFixture
) -> None:
    shell.run_line_magic("config", f"HanaMagics.url = 'http://127.0.0.1:{free_port()}'")
    line, _ = _one_line_error(shell, capsys, f"%%hana {MODEL_A}\nHello")
    assert line.startswith("hana: cannot reach the hana server at http://127.0.0.1:")
    line, _ = _one_line_error(shell, capsys, "%hana list")
    assert line.startswith("hana: cannot reach the hana server")


def test_bad_options_are_one_line(shell: InteractiveShell, capsys: pytest.CaptureFixture) -> None:
    line, _ = _one_line_error(shell, capsys, f"%%hana {MODEL_A} --temperature hot\nHello")
    assert line.startswith("UsageError: %%hana: argument --temperature/-t: invalid float value")
    line, _ = _one_line_error(shell, capsys, "%hana frobnicate")
    assert line == "UsageError: %hana: unknown command 'frobnicate' (see %hana help)"
    line, _ = _one_line_error(shell, capsys, f"%%hana {MODEL_A} --chat\none\n---\ntwo")
    assert line.startswith("UsageError: %%hana --chat: one prompt per cell")
    assert _outputs(shell) == {}  # nothing was sent


def test_partial_failure_keeps_the_good_answers(
    shell: InteractiveShell, capsys: pytest.CaptureFixture
) -> None:
    shell.run_line_magic("config", "HanaMagics.pull_missing = False")
    line, _ = _one_line_error(shell, capsys, f"%%hana {MODEL_A} nope:1 -n 5 -o mixed\nHello")
    assert line == "hana: 1 of 2 requests failed (see above)"
    good, bad = _outputs(shell).values()
    assert "5 tokens" in good[-1]["data"]["text/plain"]
    assert "✗ model 'nope:1' not found" in bad[-1]["data"]["text/plain"]
    assert shell.user_ns["mixed"][0] and shell.user_ns["mixed"][1] is None


def test_interrupt_cancels_the_requests(hana: HanaServerProcess, shell: InteractiveShell) -> None:
    shell.run_line_magic("hana", f"warmup {MODEL_A}")

    def interrupt_after_first_tokens() -> None:
        wait_for(lambda: in_flight(hana) == 2, timeout=20)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_after_first_tokens)
    interrupter.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        shell.run_cell_magic("hana", f"{MODEL_A} -n 100000", "Go on\n---\nAnd on")
    interrupter.join()
    assert time.monotonic() - started < 30
    wait_for(lambda: in_flight(hana) == 0, timeout=5)
    for outputs in _outputs(shell).values():
        assert "⏹ interrupted" in outputs[-1]["data"]["text/plain"]


def test_line_verbs(hana: HanaServerProcess, shell: InteractiveShell, capsys) -> None:
    models = shell.run_line_magic("hana", "list")
    assert isinstance(models, Records) and MODEL_A in [m["name"] for m in models]
    assert f"<td>{MODEL_A}</td>" in models._repr_html_()
    shell.run_line_magic("hana", f"warmup {MODEL_B} 10m")
    shell.run_line_magic("hana", f"keep-alive {MODEL_B} 30m")
    running = shell.run_line_magic("hana", "ps")
    assert MODEL_B in running.to_text() and "29 minutes from now" in running.to_text()
    details = shell.run_line_magic("hana", f"show {MODEL_B}")
    assert "llama" in details.to_text()
    shell.run_line_magic("hana", f"unload {MODEL_B}")
    wait_for(lambda: all(m["name"] != MODEL_B for m in hana.ps()), timeout=15)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{MODEL_B} is loaded") and out[0].endswith("kept for 10m")
    assert out[1].startswith(f"{MODEL_B} stays loaded for 30m")
    assert out[2] == f"{MODEL_B} unloads as soon as it is idle"
    shell.run_line_magic("hana", "help")
    assert "%hana keep-alive MODEL DURATION" in capsys.readouterr().out


def test_create_shows_progress(
    hana: HanaServerProcess, shell: InteractiveShell, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tiny_gguf import write_tiny_gguf

    folder = tmp_path_factory.mktemp("magic-create")
    gguf = write_tiny_gguf(folder / "w.gguf", seed=9)
    (folder / "Modelfile").write_text(f"FROM {gguf}\n")
    shell.run_line_magic("hana", f"create tiny:magic {folder / 'Modelfile'}")
    (outputs,) = _outputs(shell).values()
    assert outputs[-1]["data"]["text/plain"] == "creating tiny:magic: success"
    assert "tiny:magic" in [m["name"] for m in shell.run_line_magic("hana", "list")]
    hana.http.request("DELETE", "/api/delete", json={"model": "tiny:magic"})
