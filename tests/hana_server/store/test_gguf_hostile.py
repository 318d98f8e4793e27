"""Crafted and damaged GGUF headers: the reader answers InvalidGGUF (a 400) and nothing else, and
a damaged model in the store never breaks listing for everyone."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import gguf
import pytest
from hana_server.store.gguf_info import GGUFInfo, InvalidGGUF
from scripted_server import ScriptedServer
from tiny_gguf import write_tiny_gguf

T = gguf.GGUFValueType


def key(name: str) -> bytes:
    data = name.encode()
    return struct.pack("<Q", len(data)) + data


def header(kvs: list[bytes], n_tensors: int = 0, n_kv: int | None = None) -> bytes:
    count = len(kvs) if n_kv is None else n_kv
    return struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, n_tensors, count) + b"".join(kvs)


ARCH = key("general.architecture") + struct.pack("<I", T.STRING) + key("llama")


def crafted(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "crafted.gguf"
    path.write_bytes(data + b"\0" * 64)
    return path


CRAFTED = [
        (
            header([ARCH, key("x") + struct.pack("<IIQ", T.ARRAY, T.ARRAY, 1)
                    + struct.pack("<IQ", T.UINT8, 0)]),
            "nested arrays",
        ),
        (header([ARCH, key("x") + struct.pack("<IIQ", T.ARRAY, T.STRING, 1 << 62)]),
         "cannot fit"),
        (header([ARCH, key("x") + struct.pack("<IIQ", T.ARRAY, T.UINT64, 1 << 61)]),
         "cannot fit"),
        (header([ARCH], n_kv=1 << 60), "cannot fit"),
        (header([ARCH], n_tensors=1 << 60), "tensors"),
        (header([ARCH, key("llama.context_length") + struct.pack("<I", T.STRING) + key("big")]),
         "llama.context_length is 'big', not a count"),
        (header([ARCH, key("llama.block_count") + struct.pack("<Id", T.FLOAT64, float("inf"))]),
         "not finite"),
        (header([ARCH, key("llama.block_count") + struct.pack("<Iq", T.INT64, -5)]),
         "not a count"),
        (header([key("general.architecture") + struct.pack("<II", T.UINT32, 7)]),
         "general.architecture is not a string"),
        (header([ARCH, key("x") + struct.pack("<I", 99)]), "unknown GGUF value type 99"),
        (header([ARCH], n_tensors=1) + key("t") + struct.pack("<I", 9) + b"\0" * 80,
         "has 9 dimensions"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), CRAFTED, ids=[m for _, m in CRAFTED])
def test_crafted_headers_are_invalid_ggufs(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(InvalidGGUF, match=message) as error:
        GGUFInfo.read(crafted(tmp_path, data))
    assert error.value.status == 400


def test_any_truncation_or_flipped_byte_is_an_invalid_gguf_or_a_valid_read(
    tmp_path: Path, tiny_gguf_path: Path
) -> None:
    original = tiny_gguf_path.read_bytes()
    header_end = len(original) - 400_000  # the header is in the first few KB; weights follow
    rng = random.Random(12)
    damaged = tmp_path / "damaged.gguf"
    outcomes = {"invalid": 0, "read": 0}
    for trial in range(400):
        data = bytearray(original)
        if trial % 2:
            data = data[: rng.randrange(0, 6000)]
        else:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(0, min(6000, header_end))] = rng.randrange(256)
        damaged.write_bytes(bytes(data))
        try:
            GGUFInfo.read(damaged)
        except InvalidGGUF:
            outcomes["invalid"] += 1
        else:
            outcomes["read"] += 1
    assert outcomes["invalid"] > 100  # and no other exception type escaped


def test_a_damaged_model_in_the_store_breaks_nothing_for_others(
    scripted_server: ScriptedServer, tmp_path: Path
) -> None:
    server = scripted_server
    server.create_tiny("good")
    bad_path = server.create_tiny("bad", seed=1)
    # The blob of "bad" is damaged after it was installed (a crafted file, a disk error).
    bad_path.write_bytes(header([ARCH, key("x") + struct.pack("<IIQ", T.ARRAY, T.ARRAY, 1)]))
    tags = server.http.get("/api/tags")
    assert tags.status_code == 200
    assert {m["name"] for m in tags.json()["models"]} == {"good:latest", "bad:latest"}
    for _ in range(2):  # logged once, not on every listing
        assert server.http.get("/api/tags").status_code == 200
    refused = server.http.post("/api/generate", json={"model": "bad", "prompt": "x"})
    assert refused.status_code == 400 and "nested arrays" in refused.json()["error"]
    body = {"model": "good", "prompt": "x", "stream": False}
    assert server.http.post("/api/generate", json=body).status_code == 200
    assert server.http.get("/api/ps").status_code == 200
    assert [entry["name"] for entry in server.ps()] == ["good:latest"]
    shown = server.http.post("/api/show", json={"model": "bad"})
    assert shown.status_code == 400


def test_create_from_a_crafted_blob_is_a_400(scripted_server: ScriptedServer) -> None:
    import hashlib

    data = header([ARCH, key("llama.context_length") + struct.pack("<I", T.STRING) + key("x")])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    server = scripted_server
    assert server.http.post(f"/api/blobs/{digest}", content=data).status_code == 201
    body = {"model": "crafted", "files": {"m.gguf": digest}, "stream": False}
    answer = server.http.post("/api/create", json=body)
    assert answer.status_code == 400, answer.text
    assert "not a count" in answer.json()["error"]


def test_a_real_tiny_gguf_still_reads(tmp_path: Path) -> None:
    info = GGUFInfo.read(write_tiny_gguf(tmp_path / "t.gguf"))
    assert info.architecture == "llama" and info.context_length == 4096
