"""`ModelManager`: the models of a hana server as a notebook sees them.

List and inspect models, load them ahead of time (`warmup`), keep them loaded (`keep_alive`), free
them (`unload`), and run many prompts at once (`parallel`). Each operation is a coroutine
`async_x` with a blocking twin `x`, like `HanaClient`, on which it is built.

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
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hana_jupyter.client import Completion, HanaClient, RequestError, background_loop
from hana_jupyter.display import Details, Records, model_table, runner_table

#: One request of `parallel`: `(model, prompt)`, or a mapping with `model` and either `prompt` or
#: `messages`, plus any argument of `HanaClient.async_generate` / `async_chat`.
ParallelRequest = tuple[str, str] | Mapping[str, Any]

Progress = Callable[[dict[str, Any]], None]


class ModelManager:
    """Manage and use the models of one hana server.

    Parameters
    ----------
    client:
        The client to use; by default a new `HanaClient(url=url)` (server discovered if no URL).
    """

    def __init__(self, client: HanaClient | None = None, *, url: str | None = None) -> None:
        self.client = client if client is not None else HanaClient(url=url)

    # ---- what is there --------------------------------------------------------------------------

    async def async_models(self) -> Records:
        """Installed models, newest first; a list of dicts that displays as a table."""
        return model_table(await self.client.async_models())

    def models(self) -> Records:
        """Sync twin of `async_models`."""
        return background_loop().run(self.async_models())

    async def async_ps(self) -> Records:
        """Loaded models (runners) with their state and expiry, displayed as a table."""
        return runner_table(await self.client.async_ps())

    def ps(self) -> Records:
        """Sync twin of `async_ps`."""
        return background_loop().run(self.async_ps())

    async def async_show(self, model: str) -> Details:
        """Details of one model (`/api/show`), displayed as a table."""
        return Details(model, await self.client.async_show(model))

    def show(self, model: str) -> Details:
        """Sync twin of `async_show`."""
        return background_loop().run(self.async_show(model))

    # ---- loading --------------------------------------------------------------------------------

    async def async_warmup(self, model: str, keep_alive: str | float | None = None) -> Completion:
        """Load `model` now so the first real prompt does not wait; `.load_duration` tells how long
        loading took (0 when it was loaded already)."""
        return await self.client.async_generate(model, "", keep_alive=keep_alive)

    def warmup(self, model: str, keep_alive: str | float | None = None) -> Completion:
        """Sync twin of `async_warmup`."""
        return background_loop().run(self.async_warmup(model, keep_alive))

    async def async_keep_alive(self, model: str, duration: str | float) -> Completion:
        """Keep `model` loaded for `duration` after its last use ("30m", "1h", -1 = forever);
        loads it if needed."""
        return await self.client.async_generate(model, "", keep_alive=duration)

    def keep_alive(self, model: str, duration: str | float) -> Completion:
        """Sync twin of `async_keep_alive`."""
        return background_loop().run(self.async_keep_alive(model, duration))

    async def async_unload(self, model: str) -> Completion:
        """Unload `model` as soon as its running requests finish (keep-alive 0)."""
        return await self.client.async_generate(model, "", keep_alive=0)

    def unload(self, model: str) -> Completion:
        """Sync twin of `async_unload`."""
        return background_loop().run(self.async_unload(model))

    # ---- using ----------------------------------------------------------------------------------

    async def async_generate(self, model: str, prompt: str, **kwargs: Any) -> Completion:
        """One completion; arguments of `HanaClient.async_stream_generate`."""
        return await self.client.async_generate(model, prompt, **kwargs)

    def generate(self, model: str, prompt: str, **kwargs: Any) -> Completion:
        """Sync twin of `async_generate`."""
        return background_loop().run(self.async_generate(model, prompt, **kwargs))

    async def async_chat(
        self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any
    ) -> Completion:
        """One chat answer; arguments of `HanaClient.async_stream_chat`."""
        return await self.client.async_chat(model, messages, **kwargs)

    def chat(self, model: str, messages: list[Mapping[str, Any]], **kwargs: Any) -> Completion:
        """Sync twin of `async_chat`."""
        return background_loop().run(self.async_chat(model, messages, **kwargs))

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

    def parallel(
        self,
        requests: Sequence[ParallelRequest],
        *,
        return_exceptions: bool = False,
        **common: Any,
    ) -> list[Any]:
        """Sync twin of `async_parallel`."""
        return background_loop().run(
            self.async_parallel(requests, return_exceptions=return_exceptions, **common)
        )

    async def _one(self, request: ParallelRequest, common: Mapping[str, Any]) -> Completion:
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

    async def async_pull(self, model: str, progress: Progress | None = None) -> dict[str, Any]:
        """Download `model` from its registry; `progress` gets each status chunk."""
        last: dict[str, Any] = {}
        async for chunk in self.client.async_stream_pull(model):
            last = chunk
            if progress is not None:
                progress(chunk)
        return last

    def pull(self, model: str, progress: Progress | None = None) -> dict[str, Any]:
        """Sync twin of `async_pull`; `progress` is called on the caller's thread."""
        last: dict[str, Any] = {}
        for chunk in self.client.stream_pull(model):
            last = chunk
            if progress is not None:
                progress(chunk)
        return last

    async def async_create(
        self, name: str, modelfile: str | Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Create model `name` from a Modelfile on this machine, like `ollama create -f`.

        A `FROM` naming a file (relative to the Modelfile) is uploaded as a blob unless the server
        has it; any other `FROM` names a model on the server.
        """
        fields = await self._create_fields(Path(modelfile))
        last: dict[str, Any] = {}
        async for chunk in self.client.async_stream_create(name, **fields):
            last = chunk
            if progress is not None:
                progress(chunk)
        return last

    def create(
        self, name: str, modelfile: str | Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Sync twin of `async_create`; `progress` is called on the caller's thread."""
        fields = background_loop().run(self._create_fields(Path(modelfile)))
        last: dict[str, Any] = {}
        for chunk in self.client.stream_create(name, **fields):
            last = chunk
            if progress is not None:
                progress(chunk)
        return last

    async def _create_fields(self, path: Path) -> dict[str, Any]:
        # The server's own parser, so a Modelfile means the same here as to `hana create`.
        from hana_protocol.errors import HanaError
        from hana_protocol.modelfile import Modelfile

        try:
            text = path.read_text()
        except OSError as exc:
            raise RequestError(400, f"cannot read Modelfile {path}: {exc.strerror}") from None
        try:
            parsed = Modelfile.parse(text)
        except HanaError as exc:
            raise RequestError(400, f"{path}: {exc.message}") from None
        source = Path(os.path.expanduser(parsed.from_))
        if not source.is_absolute():
            source = path.parent / source
        fields: dict[str, Any] = {
            "template": parsed.template,
            "system": parsed.system,
            "parameters": parsed.parameters or None,
            "messages": parsed.messages or None,
            "license": parsed.license or None,
        }
        if source.is_file():
            fields["files"] = {source.name: await self.client.async_push_blob(source)}
        else:
            fields["from_"] = parsed.from_
        return fields
