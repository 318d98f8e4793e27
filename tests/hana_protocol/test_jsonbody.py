"""Request bodies: what Go's decoder refuses is a 400 here too, never another exception."""

from __future__ import annotations

import pytest

from hana_protocol.errors import InvalidRequest
from hana_protocol.jsonbody import MAX_DEPTH, loads_object


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "missing request body"),
        (b"[1]", "request body must be a JSON object"),
        (b'{"temperature": NaN}', "invalid character 'N' looking for beginning of value"),
        (b'{"keep_alive": Infinity}', "invalid character 'I'"),
        (b'{"num_ctx": 1e400}', "cannot unmarshal number 1e400 into Go value of type float64"),
        (b'{"keep_alive": ' + b"9" * 400 + b"}", "cannot unmarshal number 999"),
        (b'{"n": ' + b"1" * 5000 + b"}", "cannot unmarshal number 111"),  # Python's digit limit
        (b'{"model": "\xff\xfe"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "exceeded max depth"),  # Python's recursion limit
        (b'{"a": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}", "exceeded max depth"),
        (b'{"model": ', "invalid JSON"),
    ],
)
def test_what_go_refuses_is_a_400_with_its_words(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")[:60]) as error:
        loads_object(body)
    assert error.value.status == 400


def test_lone_surrogates_become_replacement_characters_everywhere() -> None:
    body = b'{"system": "a\\ud800b", "messages": [{"content": "\\udfff"}], "\\ud801": 1}'
    value = loads_object(body)
    assert value["system"] == "a\ufffdb"
    assert value["messages"][0]["content"] == "\ufffd"
    assert value["\ufffd"] == 1
    value["system"].encode("utf-8")  # what failed before: the string could not leave the process


def test_a_surrogate_pair_stays_one_character_and_plain_bodies_are_unchanged() -> None:
    assert loads_object(b'{"s": "\\ud83d\\ude00", "n": 1.5, "i": 12}') == {
        "s": "\U0001f600",
        "n": 1.5,
        "i": 12,
    }
