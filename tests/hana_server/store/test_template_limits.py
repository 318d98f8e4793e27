"""Hostile prompt templates: Go templates and GGUF Jinja templates stop at their time and size
limits with a 400, Go's printf limits hold, and the server's loop answers while one renders."""

from __future__ import annotations

import threading

import pytest
from hana_server.store.gotemplate import GoTemplate, RenderLimits, TemplateLimitExceeded
from hana_server.store.prompt import Conversation, JinjaPromptTemplate

QUICK = RenderLimits(seconds=0.2, max_chars=1 << 20)


def doubling_defines(levels: int, leaf: str = "") -> str:
    """~1 KB: each `define` calls the one below it twice, so the last runs 2^levels leaves."""
    parts = [f'{{{{define "t0"}}}}{leaf}{{{{end}}}}']
    for level in range(1, levels + 1):
        below = f'{{{{template "t{level - 1}"}}}}'
        parts.append(f'{{{{define "t{level}"}}}}{below}{below}{{{{end}}}}')
    return "".join(parts) + f'{{{{template "t{levels}"}}}}'


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (doubling_defines(30), "rendering took longer than 0.2s"),
        (doubling_defines(30, leaf='{{printf "%9999s" ""}}'), "output exceeds 1048576 characters"),
        ("{{ range 1000000000000 }}{{ end }}", "rendering took longer"),
        ('{{ $s := "xx" }}{{ range 64 }}{{ $s = print $s $s }}{{ end }}', "output exceeds"),
        ('{{ printf "%9999999s" "x" }}', "output exceeds"),  # 7 digits: Go allows the width
    ],
)
def test_go_templates_stop_at_their_limits(source: str, message: str) -> None:
    assert len(source) < 2048
    with pytest.raises(TemplateLimitExceeded, match=message) as error:
        GoTemplate(source).render({}, QUICK)
    assert error.value.status == 400


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # Go: the overlong width eats the rest of the format, the operand is left over
        ('{{ printf "%20000000s|" "x" }}', "%!(NOVERB)%!(EXTRA string=x)"),
        ('{{ printf "%*d" 20000000 5 }}', "%!(BADWIDTH)5"),
        ('{{ printf "%.*d" 20000000 5 }}', "%!(BADPREC)5"),
        ('{{ printf "%*d" -3 5 }}', "5  "),  # a negative width pads on the right
        ('{{ printf "%5.2f|%-4d|" 3.14159 7 }}', " 3.14|7   |"),
    ],
)
def test_printf_keeps_gos_width_and_precision_limits(source: str, expected: str) -> None:
    assert GoTemplate(source).render({}) == expected


def jinja(source: str, messages: int = 1) -> str:
    turns = [{"role": role, "content": "hi"} for role in ("user", "assistant")]
    conversation = Conversation((turns * messages)[:messages])
    return JinjaPromptTemplate(source).render(conversation, QUICK)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(40) }}",
            "rendering took longer",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "rendering took longer",
        ),
        (
            '{% set s = namespace(v="x") %}{% for i in range(60) %}{% set s.v = s.v ~ s.v %}'
            "{% endfor %}{{ s.v }}",
            "output exceeds",
        ),
        ('{{ "x" * 10**10 }}', "output exceeds"),
        ("{{ [1, 2] * 10**9 }}", "output exceeds"),
        ('{{ "%999999999s" % "x" }}', "output exceeds"),
        ('{{ "{:>999999999}".format("x") }}', "output exceeds"),
        ('{{ "x".ljust(10**9) }}', "output exceeds"),
        ('{{ "x"|center(10**9) }}', "output exceeds"),
        ("{{ 7 ** 100000000 }}", "output exceeds"),
        (
            "{% set n = namespace(v=7) %}{% for i in range(64) %}{% set n.v = n.v * n.v %}"
            "{% endfor %}",
            "output exceeds",
        ),
    ],
)
def test_jinja_chat_templates_stop_at_their_limits(source: str, message: str) -> None:
    with pytest.raises(TemplateLimitExceeded, match=message) as error:
        jinja(source)
    assert error.value.status == 400


def test_loops_over_the_request_check_the_clock_too() -> None:
    source = "{% for a in messages %}{% for b in messages %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateLimitExceeded, match="rendering took longer"):
        jinja(source, messages=20_000)  # 4e8 empty iterations


def test_ordinary_chat_templates_render_unchanged() -> None:
    source = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{{ '|' ~ loop.index }}"
        "{% endfor %}{{ '%-3s|' % 'a' }}{{ range(3) | list | join(',') }}"
    )
    assert jinja(source, messages=2) == "<user>hi|1<assistant>hi|2a  |0,1,2"


def test_the_loop_answers_while_a_hostile_template_renders(scripted_server: object) -> None:
    from scripted_server import ScriptedServer

    server = scripted_server
    assert isinstance(server, ScriptedServer)
    server.create_tiny("tiny")
    results: dict[str, object] = {}

    def generate() -> None:
        body = {"model": "tiny", "prompt": "x", "stream": False, "template": doubling_defines(30)}
        results["generate"] = server.http.post("/api/generate", json=body)

    request = threading.Thread(target=generate)
    request.start()
    answered_while_rendering = 0
    while request.is_alive():
        version = server.http.get("/api/version")
        assert version.status_code == 200
        answered_while_rendering += request.is_alive()
    request.join()
    assert answered_while_rendering > 0
    refused = results["generate"]
    assert refused.status_code == 400  # type: ignore[attr-defined]
    assert "rendering took longer" in refused.json()["error"]  # type: ignore[attr-defined]
    assert server.ps() == []  # refused before a runner was asked for
