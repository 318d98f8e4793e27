"""`ModelManager`: the models of a hana server as a notebook sees them.

List and inspect models, load them ahead of time (`warmup`), keep them loaded (`keep_alive`), free
them (`unload`), and run many prompts at once (`parallel`). Each operation is a coroutine
`async_x` with a blocking twin `x`, like `HanaClient`, on which it is built.

A model the server does not have is pulled first by `generate` and `chat` (progress bars in the
cell), as `ollama run` does; `pull_missing=False` turns that off.

The load/unload verbs are Ollama's own conventions, so they work against any Ollama server too:
an empty prompt only loads the model; an empty prompt with `keep_alive` sets how long it stays;
`keep_alive=0` unloads it as soon as it is idle.

Example::

    mgr = ModelManager()
    mgr.warmup("gemma3:270m", keep_alive="30m")
    answers = mgr.parallel([("gemma3:270m", "Name a color."), ("gemma3:270m", "Name a fruit.")])
    [a.text for a in answers]
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from traitlets import Bool
from traitlets.config import LoggingConfigurable

from hana_client import Answer, HanaClient
from hana_client.sync import run_sync
from hana_jupyter.display import Details, Records, model_table, runner_table
from hana_jupyter.pulling import pull_bars
from hana_protocol.errors import ModelNotFound

#: One request of `parallel`: `(model, prompt)`, or a mapping with `model` and either `prompt` or
#: `messages`, plus any argument of `HanaClient.async_generate` / `async_chat`.
ParallelRequest = tuple[str, str] | Mapping[str, Any]

Progress = Callable[[dict[str, Any]], None]


class ModelManager(LoggingConfigurable):
    """Manage and use the models of one hana server.

    Parameters
    ----------
    client:
        The client to use; by default a new `HanaClient(url=url)` (server discovered if no URL).
    """

    pull_missing = Bool(
        True,
        help="generate/chat on a model the server does not have pull it first (progress bars "
        "in the cell), as `ollama run` does. False: they raise ModelNotFound.",
    ).tag(config=True)
    insecure = Bool(
        False,
        help="Pull missing models over plain http (a registry on this machine or a LAN), as "
        "`ollama pull --insecure`.",
    ).tag(config=True)

    def __init__(
        self, client: HanaClient | None = None, *, url: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.client = client if client is not None else HanaClient(url=url)

    # ---- what is there --------------------------------------------------------------------------

    async def async_models(self) -> Records:
        """Installed models, newest first; a list of dicts that displays as a table."""
        return model_table(await self.client.async_models())

    models = run_sync(async_models)

    async def async_ps(self) -> Records:
        """Loaded models (runners) with their state and expiry, displayed as a table."""
        return runner_table(await self.client.async_ps())

    ps = run_sync(async_ps)

    async def async_show(self, model: str) -> Details:
        """Details of one model (`/api/show`), displayed as a table."""
        return Details(model, await self.client.async_show(model))

    show = run_sync(async_show)

    # ---- loading --------------------------------------------------------------------------------

    async def async_warmup(self, model: str, keep_alive: str | float | None = None) -> Answer:
        """Load `model` now so the first real prompt does not wait; `.load_duration` tells how long
        loading took (0 when it was loaded already)."""
        return await self.client.async_generate(model, "", keep_alive=keep_alive)

    warmup = run_sync(async_warmup)

    async def async_keep_alive(self, model: str, duration: str | float) -> Answer:
        """Keep `model` loaded for `duration` after its last use ("30m", "1h", -1 = forever);
        loads it if needed."""
        return await self.client.async_generate(model, "", keep_alive=duration)

    keep_alive = run_sync(async_keep_alive)

    async def async_unload(self, model: str) -> Answer:
        """Unload `model` as soon as its running requests finish (keep-alive 0)."""
        return await self.client.async_generate(model, "", keep_alive=0)

    unload = run_sync(async_unload)

    # ---- using ----------------------------------------------------------------------------------

    async def async_generate(self, model: str, prompt: str, **kwargs: Any) -> Answer:
        """One completion; arguments of `HanaClient.async_stream_generate`. A missing model is
        pulled first (see `pull_missing`)."""
        return await self._async_pulling_first(
            model, lambda: self.client.async_generate(model, prompt, **kwargs)
        )

    def generate(self, model: str, prompt: str, **kwargs: Any) -> Answer:
        """Sync twin of `async_generate`; a pull's bars are drawn on the caller's thread."""
        return self._pulling_first(model, lambda: self.client.generate(model, prompt, **kwargs))

    async def async_chat(
        self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any
    ) -> Answer:
        """One chat answer; arguments of `HanaClient.async_stream_chat`. A missing model is
        pulled first (see `pull_missing`)."""
        return await self._async_pulling_first(
            model, lambda: self.client.async_chat(model, messages, **kwargs)
        )

    def chat(self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any) -> Answer:
        """Sync twin of `async_chat`; a pull's bars are drawn on the caller's thread."""
        return self._pulling_first(model, lambda: self.client.chat(model, messages, **kwargs))

    async def _async_pulling_first(
        self, model: str, ask: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        try:
            return await ask()
        except ModelNotFound:
            if not self.pull_missing:
                raise
        bars = pull_bars()
        try:
            await self.async_pull(model, progress=bars, insecure=self.insecure)
        finally:
            bars.close()
        return await ask()

    def _pulling_first(self, model: str, ask: Callable[[], Answer]) -> Answer:
        try:
            return ask()
        except ModelNotFound:
            if not self.pull_missing:
                raise
        bars = pull_bars()
        try:
            self.pull(model, progress=bars, insecure=self.insecure)
        finally:
            bars.close()
        return ask()

    async def async_parallel(
        self,
        requests: Sequence[ParallelRequest],
        *,
        return_exceptions: bool = False,
        **common: Any,
    ) -> list[Any]:
        """Run every request at once; the results come back in the order of `requests`.

        `common` holds arguments shared by all requests (e.g. `options={"num_predict": 64}`); a
        request's own keys win. If one request fails, the others are cancelled and the error is
        raised, unless `return_exceptions=True`, which puts the exception in its place instead.
        """
        tasks = [asyncio.ensure_future(self._one(request, common)) for request in requests]
        try:
            return await asyncio.gather(*tasks, return_exceptions=return_exceptions)
        finally:
            # After a failure or a cancel the other answers are of no use; closing their streams
            # frees the server's slots at once.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    parallel = run_sync(async_parallel)

    async def _one(self, request: ParallelRequest, common: Mapping[str, Any]) -> Answer:
        if isinstance(request, tuple):
            model, prompt = request
            fields: dict[str, Any] = {**common, "prompt": prompt}
        else:
            fields = {**common, **request}
            if "model" not in fields:
                raise TypeError(f"a parallel request needs a 'model': {dict(request)!r}")
            model = fields.pop("model")
        if "messages" in fields:
            return await self.client.async_chat(model, fields.pop("messages"), **fields)
        return await self.client.async_generate(model, fields.pop("prompt", ""), **fields)

    # ---- the store ------------------------------------------------------------------------------

    async def async_pull(
        self, model: str, progress: Progress | None = None, *, insecure: bool = False
    ) -> dict[str, Any]:
        """Download `model` from its registry (`insecure`: over plain http); `progress` gets each
        status chunk (`hana_jupyter.pulling.pull_bars()` draws them as bars). Returns the last
        one, `{"status": "success"}`. Cancelling closes the stream; the server keeps the partial
        download for the next pull."""
        chunks = self.client.async_stream_pull(model, insecure=insecure)
        return await _async_follow(chunks, progress)

    def pull(
        self, model: str, progress: Progress | None = None, *, insecure: bool = False
    ) -> dict[str, Any]:
        """Sync twin of `async_pull`; `progress` is called on the caller's thread."""
        return _follow(self.client.stream_pull(model, insecure=insecure), progress)

    async def async_create(
        self, name: str, modelfile: str | Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Create model `name` from a Modelfile on this machine, like `ollama create -f`.

        A `FROM` naming a .gguf file or a directory holding one (relative to the Modelfile) is
        uploaded as a blob unless the server has it; any other `FROM` names a model on the server.
        """
        chunks = self.client.async_stream_create_from_modelfile(name, modelfile)
        return await _async_follow(chunks, progress)

    def create(
        self, name: str, modelfile: str | Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Sync twin of `async_create`; `progress` is called on the caller's thread."""
        return _follow(self.client.stream_create_from_modelfile(name, modelfile), progress)


def _follow(chunks: Generator[dict[str, Any]], progress: Progress | None) -> dict[str, Any]:
    """Hand each status to `progress` (on this thread); return the last one."""
    last: dict[str, Any] = {}
    # An interrupt may land in `progress` rather than in the wait for the next chunk: closing
    # the stream here, not whenever the generator is collected, tells the server at once.
    with closing(chunks):
        for chunk in chunks:
            last = chunk
            if progress is not None:
                progress(chunk)
    return last


async def _async_follow(
    chunks: AsyncIterator[dict[str, Any]], progress: Progress | None
) -> dict[str, Any]:
    """`_follow` for an async stream."""
    last: dict[str, Any] = {}
    async for chunk in chunks:
        last = chunk
        if progress is not None:
            progress(chunk)
    return last
