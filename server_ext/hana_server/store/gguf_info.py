"""GGUF metadata (architecture, sizes, attention shape, chat template) read from a file's header.

`gguf.GGUFReader` maps every array of the file into numpy objects, which takes tens of seconds for a
262k-token vocabulary; this module walks the header with `struct` instead, skipping the big arrays,
and uses the `gguf` package for its constants (value types, magic, file types, key names).

The header comes from files anyone can publish, so it is read as hostile: every count is checked
against the bytes left before anything is read or allocated, nested arrays (which llama.cpp
refuses) and tensors of more than GGML_MAX_DIMS dimensions are refused, and the keys the server
computes with must be finite numbers of the right type. Whatever is wrong, the only error is
`InvalidGGUF` (a 400).
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from hana_protocol.errors import InvalidRequest

# Arrays longer than this are left empty in `kv` unless verbose (Ollama's default maxArraySize).
MAX_ARRAY_SIZE = 1024
GGML_MAX_DIMS = 4
# Fewest bytes one entry can take: a key-value pair (key length, empty key, type, a one-byte
# value) and a tensor description (name length, dimension count, type, offset).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8

_SCALAR_FORMATS: dict[gguf.GGUFValueType, str] = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}

_GUESSED_FILE_TYPE = int(gguf.LlamaFileType.GUESSED)
# Per-layer weight sizes are kept for models up to this many blocks (GPU placement reads them); a
# header claiming more is not trusted with an allocation that large.
MAX_LAYERS = 4096


def tensor_bytes(ggml_type: int, shape: list[int]) -> int:
    """Bytes of one tensor's data (0 for a type this gguf package does not know)."""
    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return 0
    return math.prod(shape) // block * size


def _layer_of(name: str) -> int | None:
    """The block index of a `blk.N.*` tensor, None for the others."""
    if not name.startswith("blk."):
        return None
    index = name[4:].split(".", 1)[0]
    return int(index) if index.isdigit() and len(index) < 7 else None


class InvalidGGUF(InvalidRequest):
    """The file is not a GGUF model, or its header is damaged."""


def is_gguf(path: Path) -> bool:
    """True if `path` is a file that starts with the GGUF magic."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("<I", head)[0] == gguf.GGUF_MAGIC


def format_parameter_count(n: int) -> str:
    """Ollama's HumanNumber: 268098176 -> "268.10M", 3212749888 -> "3.2B", 8000000000 -> "8B"."""
    for scale, suffix, decimals in ((1e9, "B", 1), (1e6, "M", 2)):
        if n >= scale:
            value = n / scale
            return (
                f"{value:.0f}{suffix}"
                if value == math.floor(value)
                else f"{value:.{decimals}f}{suffix}"
            )
    if n >= 1e3:
        return f"{n / 1e3:.0f}K"
    return str(n)


def file_type_name(value: int | None) -> str:
    """`general.file_type` as Ollama names it: "Q4_K_M", "F16", "F32"; "unknown" if unset."""
    if value is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(value & ~_GUESSED_FILE_TYPE).name
    except ValueError:
        return "unknown"
    return name.removeprefix("ALL_").removeprefix("MOSTLY_")


def _f32(values: np.ndarray) -> list[float]:
    # float32 printed through a double shows noise (1e-06 -> 9.99999997e-07); Ollama shows the
    # shortest float32 spelling, which numpy's str conversion produces.
    return [float(s) for s in values.astype(str)]


class _HeaderReader:
    """Sequential reads over the mapped header; every read is bounds-checked by `struct`."""

    def __init__(self, buf: mmap.mmap, endian: str, path: Path) -> None:
        self.buf = buf
        self.endian = endian
        self.path = path
        self.pos = 0
        self.last_count = 0  # items of the last array read, kept or not

    def damaged(self) -> InvalidGGUF:
        return InvalidGGUF(f"{self.path.name}: damaged GGUF header (truncated at byte {self.pos})")

    def unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        except struct.error:
            raise self.damaged() from None
        self.pos += struct.calcsize(fmt)
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.damaged()
        self.pos += n

    def count(self, what: str, min_bytes: int) -> int:
        """A count read from the header, refused if that many entries cannot fit in the file."""
        n = self.unpack("Q")
        if n * min_bytes > len(self.buf) - self.pos:
            raise InvalidGGUF(
                f"{self.path.name}: damaged GGUF header ({n} {what} cannot fit in the file)"
            )
        return n

    def string(self) -> str:
        n = self.unpack("Q")
        start = self.pos
        self.skip(n)
        return self.buf[start : self.pos].decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_arrays: bool) -> Any:
        if vtype == gguf.GGUFValueType.STRING:
            return self.string()
        if vtype == gguf.GGUFValueType.ARRAY:
            return self.array(keep_arrays)
        try:
            fmt = _SCALAR_FORMATS[gguf.GGUFValueType(vtype)]
        except (ValueError, KeyError):
            raise InvalidGGUF(f"{self.path.name}: unknown GGUF value type {vtype}") from None
        value = self.unpack(fmt)
        if fmt in "fd":
            if not math.isfinite(value):
                raise InvalidGGUF(f"{self.path.name}: metadata value {value} is not finite")
            if fmt == "f":
                return _f32(np.array([value], dtype=np.float32))[0]
        return value

    def array(self, keep: bool) -> list[Any]:
        etype = self.unpack("I")
        if etype == gguf.GGUFValueType.ARRAY:
            raise InvalidGGUF(f"{self.path.name}: nested arrays are not supported")
        if etype == gguf.GGUFValueType.STRING:
            count = self.count("strings", 8)
        else:
            try:
                size = struct.calcsize(_SCALAR_FORMATS[gguf.GGUFValueType(etype)])
            except (ValueError, KeyError):
                raise InvalidGGUF(f"{self.path.name}: unknown GGUF array type {etype}") from None
            count = self.count("array items", size)
        self.last_count = count
        keep = keep or count <= MAX_ARRAY_SIZE
        if etype == gguf.GGUFValueType.STRING:
            if keep:
                return [self.string() for _ in range(count)]
            # Step over the strings reading only their lengths: this is the 262k-token vocabulary.
            unpack_from, buf, end = struct.unpack_from, self.buf, len(self.buf)
            fmt, pos = self.endian + "Q", self.pos
            try:
                for _ in range(count):
                    pos += 8 + unpack_from(fmt, buf, pos)[0]
            except struct.error:
                raise self.damaged() from None
            if pos > end:
                raise self.damaged()
            self.pos = pos
            return []
        try:
            fmt = _SCALAR_FORMATS[gguf.GGUFValueType(etype)]
        except (ValueError, KeyError):
            raise InvalidGGUF(f"{self.path.name}: unknown GGUF array type {etype}") from None
        start = self.pos
        self.skip(count * struct.calcsize(fmt))
        if not keep:
            return []
        values = np.frombuffer(
            self.buf, dtype=np.dtype(self.endian + fmt), count=count, offset=start
        )
        if fmt in "fd" and not np.isfinite(values).all():
            # Kept for display only (/api/show): JSON has no infinities, so they show as null.
            return [v if math.isfinite(v) else None for v in values.tolist()]
        return _f32(values) if fmt == "f" else values.tolist()


@dataclass(frozen=True)
class GGUFInfo:
    """What the server needs to know about a GGUF file without loading its weights."""

    path: Path
    architecture: str
    parameter_count: int
    parameter_size: str
    file_type: str
    context_length: int
    embedding_length: int
    block_count: int
    head_count: int
    head_count_kv: int
    head_dim: int
    key_length: int
    value_length: int
    sliding_window: int
    pooling_type: int | None
    chat_template: str | None
    file_size: int
    kv: dict[str, Any] = field(repr=False)
    vocab_size: int = 0
    tensors: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # Weight bytes of each repeating block (blk.N), and of the output layer (output norm and
    # matrix, or the token embeddings a tied output duplicates): what offloading N layers moves.
    layer_bytes: tuple[int, ...] = field(default=(), repr=False)
    output_bytes: int = 0

    @classmethod
    def read(cls, path: str | Path, *, verbose: bool = False) -> GGUFInfo:
        """Read the header of `path`. With `verbose`, `kv` keeps the big arrays (the vocabulary)
        and `tensors` lists every tensor's name, type and shape."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                file_size = path.stat().st_size
                if file_size < 24:
                    raise InvalidGGUF(f"{path.name} is not a GGUF file (it is {file_size} bytes)")
                # mmap touches only the header pages, however large the weights behind them.
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    return cls._parse(buf, path, file_size, verbose)
        except OSError as e:
            raise InvalidGGUF(f"cannot read {path}: {e.strerror or e}") from None

    @classmethod
    def _parse(cls, buf: mmap.mmap, path: Path, file_size: int, verbose: bool) -> GGUFInfo:
        (magic,) = struct.unpack_from("<I", buf, 0)
        if magic != gguf.GGUF_MAGIC:
            raise InvalidGGUF(f"{path.name} is not a GGUF file (bad magic {bytes(buf[:4])!r})")
        (version,) = struct.unpack_from("<I", buf, 4)
        # A big-endian file shows its version byte-swapped, the way gguf.GGUFReader detects it.
        endian = ">" if version & 0xFFFF == 0 else "<"
        r = _HeaderReader(buf, endian, path)
        r.pos = 4
        version = r.unpack("I")
        if version not in (2, 3):
            raise InvalidGGUF(f"{path.name}: unsupported GGUF version {version}")
        n_tensors = r.unpack("Q")
        n_kv = r.count("metadata entries", _MIN_KV_BYTES)
        if n_tensors * _MIN_TENSOR_BYTES > file_size:
            raise InvalidGGUF(f"{path.name}: damaged GGUF header ({n_tensors} tensors)")

        kv: dict[str, Any] = {}
        vocab_size = 0
        for _ in range(n_kv):
            key = r.string()
            kv[key] = r.value(r.unpack("I"), verbose)
            if key == gguf.Keys.Tokenizer.LIST:
                vocab_size = r.last_count

        parameter_count = 0
        tensors: list[dict[str, Any]] = []
        by_layer: dict[int, int] = {}
        named: dict[str, int] = {}
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("I")
            if n_dims > GGML_MAX_DIMS:
                raise InvalidGGUF(f"{path.name}: tensor {name!r} has {n_dims} dimensions")
            shape = [r.unpack("Q") for _ in range(n_dims)]
            ggml_type = r.unpack("I")
            r.skip(8)  # data offset
            parameter_count += math.prod(shape)
            nbytes = tensor_bytes(ggml_type, shape)
            layer = _layer_of(name)
            if layer is not None:
                by_layer[layer] = by_layer.get(layer, 0) + nbytes
            elif name in ("output.weight", "output_norm.weight", "token_embd.weight"):
                named[name] = nbytes
            if verbose:
                try:
                    type_name = gguf.GGMLQuantizationType(ggml_type).name
                except ValueError:
                    type_name = str(ggml_type)
                tensors.append({"name": name, "type": type_name, "shape": shape})
        kv["general.parameter_count"] = parameter_count

        arch = kv.get(gguf.Keys.General.ARCHITECTURE, "")
        if not isinstance(arch, str):
            raise InvalidGGUF(f"{path.name}: {gguf.Keys.General.ARCHITECTURE} is not a string")

        def whole(key: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidGGUF(f"{path.name}: {key} is {value!r}, not a count")
            return value

        def arch_int(key: str, default: int = 0) -> int:
            key = key.format(arch=arch)
            value = kv.get(key, default)
            # Some architectures store per-layer counts; the largest one bounds the memory.
            if isinstance(value, list):
                return max((whole(key, item) for item in value), default=default)
            return whole(key, value)

        file_type = kv.get(gguf.Keys.General.FILE_TYPE)
        if file_type is not None:
            whole(gguf.Keys.General.FILE_TYPE, file_type)

        embedding_length = arch_int(gguf.Keys.LLM.EMBEDDING_LENGTH)
        head_count = arch_int(gguf.Keys.Attention.HEAD_COUNT)
        head_dim = embedding_length // head_count if head_count else 0
        key_length = arch_int(gguf.Keys.Attention.KEY_LENGTH, head_dim)
        value_length = arch_int(gguf.Keys.Attention.VALUE_LENGTH, key_length)
        pooling_key = gguf.Keys.LLM.POOLING_TYPE.format(arch=arch)
        chat_template = kv.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
        block_count = arch_int(gguf.Keys.LLM.BLOCK_COUNT)
        layer_bytes = (
            tuple(by_layer.get(i, 0) for i in range(block_count))
            if block_count <= MAX_LAYERS
            else ()
        )
        output = named.get("output.weight", named.get("token_embd.weight", 0))
        return cls(
            path=path,
            architecture=arch,
            parameter_count=parameter_count,
            parameter_size=format_parameter_count(parameter_count),
            file_type=file_type_name(file_type),
            context_length=arch_int(gguf.Keys.LLM.CONTEXT_LENGTH),
            embedding_length=embedding_length,
            block_count=block_count,
            head_count=head_count,
            head_count_kv=arch_int(gguf.Keys.Attention.HEAD_COUNT_KV, head_count),
            head_dim=key_length,
            key_length=key_length,
            value_length=value_length,
            sliding_window=arch_int(gguf.Keys.Attention.SLIDING_WINDOW),
            pooling_type=whole(pooling_key, kv[pooling_key]) if pooling_key in kv else None,
            chat_template=chat_template if isinstance(chat_template, str) else None,
            file_size=file_size,
            kv=kv,
            vocab_size=vocab_size,
            tensors=tensors,
            layer_bytes=layer_bytes,
            output_bytes=output + named.get("output_norm.weight", 0),
        )

    def kv_bytes_per_token(self) -> int:
        """Bytes of f16 K and V cache one token takes over all layers."""
        return self.block_count * self.head_count_kv * (self.key_length + self.value_length) * 2
