"""`--stream-interval`: a stream faster than the interval is written once per interval, with all
messages made meanwhile; the first token and the end are never held back; a cancelled stream
ends its handler."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

from hana_server.runner.priority import SPIN_COUNT, set_openmp_waiting
from runner_harness import StartRunner


async def raw_chunks(runner: object, body: dict[str, object]) -> list[tuple[float, list[dict]]]:
    """(seconds since the request, messages) per HTTP chunk the runner wrote."""
    http = runner.client._http  # type: ignore[attr-defined]  # carries the runner's secret
    chunks = []
    start = time.monotonic()
    async with http.stream("POST", "/completion", json=body, timeout=60) as response:
        assert response.status_code == 200
        async for data in response.aiter_raw():
            lines = [json.loads(line) for line in data.splitlines() if line]
            chunks.append((time.monotonic() - start, lines))
    return chunks


async def test_a_fast_stream_is_written_in_batches(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, stream_interval=100)
    body = {"prompt": "Once upon a time", "options": {"temperature": 0, "num_predict": 400}}
    chunks = await raw_chunks(runner, body)
    messages = [m for _, batch in chunks for m in batch]
    assert messages[-1]["done"] is True and messages[-1]["eval_count"] == 400
    # ~4,000 tok/s alone, far slower on a loaded machine: either way, far fewer writes
    assert len(chunks) <= len(messages) // 4, [len(batch) for _, batch in chunks]
    # The first token(s) leave at once, not with the first interval's batch; after that at
    # most one write per interval (a client reading late may merge writes, never split them),
    # except the end of the answer, which never waits.
    assert len(chunks[0][1]) < len(chunks[1][1]), [len(batch) for _, batch in chunks]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(chunks[:-1])]
    assert all(gap >= 0.09 for gap in gaps), gaps


async def test_a_client_leaving_during_the_interval_frees_the_slot(
    start_runner: StartRunner, tiny_gguf_path: Path
) -> None:
    runner = await start_runner(tiny_gguf_path, stream_interval=500, ctx_size=4096)
    body = {"prompt": "to be cancelled", "options": {"temperature": 0, "num_predict": 3000}}
    stream = runner.client.completion(body)
    await anext(stream)  # the first token; the runner now waits out the interval
    await stream.aclose()
    for _ in range(100):
        if (await runner.client.health())["active"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (await runner.client.health())["active"] == 0
    text = "".join(
        [
            m.get("content", "")
            async for m in runner.client.completion(
                {"prompt": "next", "options": {"temperature": 0, "num_predict": 5}}
            )
        ]
    )
    assert text


def test_openmp_threads_spin_briefly_then_sleep_unless_told_otherwise() -> None:
    environ: dict[str, str] = {}
    set_openmp_waiting(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": SPIN_COUNT}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}):
        environ = dict(chosen)
        set_openmp_waiting(environ)
        assert environ == chosen  # the user's choice stands, nothing is added to it
