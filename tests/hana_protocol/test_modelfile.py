"""Modelfiles parse the way Ollama parses them: instructions, quotes, comments, typed parameters."""

from __future__ import annotations

import pytest

from hana_protocol.errors import InvalidRequest
from hana_protocol.modelfile import Modelfile

FULL = '''\
# a comment line
FROM ./models/tiny.gguf
parameter temperature 0.7
PARAMETER num_ctx 4096
PARAMETER stop "<|end|>"
PARAMETER stop <end_of_turn>
PARAMETER use_mmap false
PARAMETER top_k +40
Template """{{ if .System }}<|system|>
{{ .System }}<|end|>
{{ end }}{{ .Prompt }}"""
SYSTEM "You are a pirate."
MESSAGE user Is this a "question"?
MESSAGE assistant Arr, it be.
LICENSE """MIT
Copyright"""
LICENSE Apache-2.0
'''


def test_full_modelfile() -> None:
    mf = Modelfile.parse(FULL)
    assert mf.from_ == "./models/tiny.gguf"
    assert mf.parameters == {
        "temperature": 0.7,
        "num_ctx": 4096,
        "stop": ["<|end|>", "<end_of_turn>"],
        "use_mmap": False,
        "top_k": 40,
    }
    assert isinstance(mf.parameters["num_ctx"], int)
    assert mf.template == "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ .Prompt }}"
    assert mf.system == "You are a pirate."
    assert mf.messages == [
        {"role": "user", "content": 'Is this a "question"?'},
        {"role": "assistant", "content": "Arr, it be."},
    ]
    assert mf.license == ["MIT\nCopyright", "Apache-2.0"]
    assert mf.adapters == []


def test_values_keep_inner_spaces_and_hashes_and_drop_outer_space() -> None:
    mf = Modelfile.parse("FROM   base  \nSYSTEM   you are # not a comment   \n")
    assert mf.from_ == "base"
    assert mf.system == "you are # not a comment"


def test_triple_quotes_keep_surrounding_newlines_and_quotes() -> None:
    mf = Modelfile.parse('FROM m\nSYSTEM """\nSay "hi".\n"""\n')
    assert mf.system == '\nSay "hi".\n'


def test_crlf_line_ends_and_bom() -> None:
    mf = Modelfile.parse("\ufeffFROM m\r\nSYSTEM hi\r\nPARAMETER seed 3\r\n")
    assert (mf.from_, mf.system, mf.parameters) == ("m", "hi", {"seed": 3})


def test_last_template_and_system_win() -> None:
    mf = Modelfile.parse("FROM m\nSYSTEM one\nSYSTEM two\n")
    assert mf.system == "two"


def test_deprecated_parameters_are_dropped() -> None:
    mf = Modelfile.parse("FROM m\nPARAMETER mirostat 1\nPARAMETER penalize_newline true\n")
    assert mf.parameters == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM m\nPARAMETER foo 1\n", "unknown parameter 'foo'"),
        ("FROM m\nPARAMETER Temperature 1\n", "unknown parameter 'Temperature'"),
        ("FROM m\nPARAMETER num_ctx 1.5\n", "invalid int value [1.5]"),
        ("FROM m\nPARAMETER num_ctx 1_000\n", "invalid int value [1_000]"),
        ("FROM m\nPARAMETER temperature warm\n", "invalid float value [warm]"),
        ("FROM m\nPARAMETER use_mmap yes\n", "invalid bool value [yes]"),
        ("SYSTEM hi\n", "no FROM line"),
        ("# only a comment\n", "no FROM line"),
        ('FROM m\nSYSTEM """never closed\n', "unexpected EOF"),
        ('FROM m\nSYSTEM "never closed\n', "unexpected EOF"),
        ("FROM m\nFOO bar\n", '(line 2): command must be one of "from", "license"'),
        ("FROM m\nFROM\n", "(line 3): command must be one of"),
        ("FROM m\nMESSAGE robot hi\n", '(line 2): message role must be one of "system"'),
        ("FROM m\nREQUIRES banana\n", "requires must be a valid semver"),
        ("FROM a\nFROM b\n", "only one FROM is supported, got a, b"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Modelfile.parse(text)
    assert info.value.message.startswith(message)
    assert info.value.status == 400


def test_other_instructions() -> None:
    mf = Modelfile.parse("FROM m\nADAPTER ./lora.gguf\nREQUIRES v0.14.0\nDRAFT ./d.gguf\n")
    assert (mf.adapters, mf.requires, mf.draft) == (["./lora.gguf"], "0.14.0", "./d.gguf")
