import pytest

from hana_protocol.lines import LineBuffer, LineTooLong


def test_lines_cut_anywhere_come_out_whole() -> None:
    stream = b'{"a": 1}\n{"b": 2}\n\n{"c": 3}\nrest'
    for size in range(1, len(stream) + 1):
        buffer = LineBuffer(max_line=100)
        lines = []
        for i in range(0, len(stream), size):
            lines += buffer.feed(stream[i : i + size])
        assert lines == [b'{"a": 1}', b'{"b": 2}', b"", b'{"c": 3}']
        assert buffer.rest() == b"rest"


def test_a_line_over_the_limit_is_refused_before_it_ends() -> None:
    buffer = LineBuffer(max_line=10)
    assert buffer.feed(b"0123456789\n") == [b"0123456789"]
    buffer.feed(b"01234")
    with pytest.raises(LineTooLong):
        buffer.feed(b"567890")


def test_a_long_line_in_many_reads_is_scanned_once() -> None:
    """Linear time: a 4 MB line in 4 kB reads, plus the newline (quadratic would rescan ~2 GB)."""
    buffer = LineBuffer(max_line=8 << 20)
    piece = b"x" * 4096
    for _ in range(1024):
        assert buffer.feed(piece) == []
    assert buffer._scanned == 4 << 20  # every byte seen once, none again
    assert buffer.feed(b"\n") == [b"x" * (4 << 20)]
    assert buffer.rest() == b""
