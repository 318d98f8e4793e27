"""HanaService: the model server every host creates, starts and stops (store, scheduler, logic)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hana_protocol.errors import InvalidRequest
from hana_protocol.modelfile import NO_SOURCE, Modelfile, plan_create
from hana_server.config import HanaSettings
from hana_server.foreign_load import ForeignLoad, measurable
from hana_server.gpu.detect import DetectedGpu, GpuProvider
from hana_server.launchers import ProcessLauncher, RunnerLauncher
from hana_server.memory import MemoryBudget
from hana_server.metrics import HanaMetrics
from hana_server.remote import listing
from hana_server.remote.create import create_remote
from hana_server.remote.proxy import RemoteProxy
from hana_server.remote.spec import checked_spec, wants_remote
from hana_server.remote.transport import Limits
from hana_server.requests import CreateRequest
from hana_server.routing import describe as routing
from hana_server.routing.generation import RoutingGeneration
from hana_server.scheduler import Scheduler
from hana_server.store.create import ModelChanges, checked_parameters
from hana_server.store.default_model import DEFAULT_MODEL, ensure_default_model
from hana_server.store.gguf_info import GGUFInfo
from hana_server.store.model import Model
from hana_server.store.names import ModelName
from hana_server.store.pull import PullManager
from hana_server.store.store import ModelStore

log = logging.getLogger("hana")


class HanaService:
    """One model server: a store, a scheduler of runner processes, and the request logic."""

    def __init__(
        self,
        settings: HanaSettings,
        launcher: RunnerLauncher | None = None,
        gpu: GpuProvider | None = None,
    ) -> None:
        """`launcher` starts runners: processes unless given (tests pass a scripted one); `gpu`
        says which GPUs they may use: detected unless given (tests pass a `FixedGpu`)."""
        self.settings = settings
        self.store = ModelStore(Path(settings.models_dir).expanduser())
        self.scheduler = Scheduler(
            launcher=launcher
            or ProcessLauncher(
                niceness=settings.runner_niceness, stream_interval=settings.stream_interval
            ),
            default_keep_alive=settings.default_keep_alive_seconds,
            max_loaded_models=settings.max_loaded_models,
            num_parallel=settings.num_parallel,
            num_parallel_per_model=dict(settings.num_parallel_per_model),
            max_queue=settings.max_queue,
            context_length=settings.context_length,
            load_timeout=settings.load_timeout,
            memory=MemoryBudget(settings.memory_budget),
            num_threads=settings.num_threads,
            thread_budget=settings.thread_budget,
            gpu=gpu or DetectedGpu(settings.gpu),
            gpu_overhead=settings.gpu_overhead,
            # A thread count that is set is kept; the automatic one leaves busy cores alone.
            foreign_load=ForeignLoad() if settings.num_threads == 0 and measurable() else None,
        )
        self.metrics = HanaMetrics(self.scheduler)
        self.generation = RoutingGeneration(
            self.store, self.scheduler, self.metrics.tokens, self._model_arriving, routing=settings
        )
        self.router = self.generation.router  # `auto`: see routing/
        self.pulls = PullManager(self.store, publish=self.scheduler.events.publish)
        self.remote = RemoteProxy(
            remotes=settings.remotes,
            parallel=settings.remote_parallel,
            max_queue=settings.max_queue,
            keep_alive=settings.default_keep_alive_seconds,
            limits=Limits(
                read_timeout=settings.remote_timeout, max_response=settings.remote_max_response
            ),
            changed=self.scheduler.state_changed,
            count_tokens=self.metrics.tokens,
        )
        self.generation.remote = self.remote
        self.scheduler.remote_snapshots = self.remote.snapshots
        self.url: str | None = None  # the shared port's URL once a host binds it
        self._default_model_task: asyncio.Task[None] | None = None
        self._gpu_task: asyncio.Task[object] | None = None

    async def start(self) -> None:
        """Prepare the store; the bundled model is registered in the background (250 MB copy)."""
        self.store.root.mkdir(parents=True, exist_ok=True)
        log.info(
            "hana: models in %s, keep_alive %s, max %d models, %d parallel, %d cores",
            self.store.root,
            self.settings.keep_alive,
            self.settings.max_loaded_models,
            self.settings.num_parallel,
            self.scheduler.cpus,
        )
        if self.settings.prune:
            # Off the loop (a directory scan); before the first request, so nothing races it.
            removed = await asyncio.to_thread(self.store.prune)
            if removed:
                log.info("hana: pruned %d unused files from the model store", removed)
        # Detect the GPUs now (a subprocess, where there is a GPU build), not at the first request.
        self._gpu_task = asyncio.create_task(self.scheduler.gpu.ensure())
        if self.settings.register_default_model:
            self._default_model_task = asyncio.create_task(self._register_default_model())

    async def _register_default_model(self) -> None:
        try:
            await asyncio.to_thread(ensure_default_model, self.store)
        except Exception:  # a broken package must not take the server down
            log.exception("could not register the bundled default model")

    async def default_model_ready(self) -> None:
        if self._default_model_task is not None:
            await asyncio.shield(self._default_model_task)

    async def _model_arriving(self, name: str) -> bool:
        """Wait if `name` is the bundled model and its registration is still running: a request
        for it right after the first start then waits a few seconds instead of getting a 404."""
        task = self._default_model_task
        if task is None or task.done():
            return False
        try:
            wanted = ModelName.parse(name).display.lower()
        except InvalidRequest:
            return False
        if wanted != ModelName.parse(DEFAULT_MODEL).display.lower():
            return False
        log.info("%s is being registered: waiting for it", DEFAULT_MODEL)
        await asyncio.shield(task)
        return True

    async def stop(self) -> None:
        """Terminate every runner; nothing outlives the server."""
        if self._default_model_task is not None and not self._default_model_task.done():
            self._default_model_task.cancel()
        if self._gpu_task is not None and not self._gpu_task.done():
            self._gpu_task.cancel()
        self.scheduler.gpu.provider.close()  # the shielded detection itself, and its probe
        await self.pulls.close()  # partial downloads stay for a resume after the restart
        await self.remote.close()
        await self.scheduler.close()

    # ------------------------------------------------------------------ models

    def describe(self, model: Model) -> dict[str, Any]:
        """An `/api/tags` entry."""
        return {
            "name": model.name.display,
            "model": model.name.display,
            "modified_at": model.modified_at.isoformat(),
            "size": model.size,
            "digest": model.digest,
            "details": model.details(),
            "capabilities": model.capabilities,
            **listing.tags_fields(model),
        }

    def show(self, name: str, *, verbose: bool = False) -> dict[str, Any]:
        """The `/api/show` answer."""
        if routing.names_router(self.router, self.store, name):
            return routing.show(self.router, self.store)
        model = self.store.get(name)
        remote = listing.tags_fields(model)
        kv = (
            listing.model_info(model)
            if remote
            else GGUFInfo.read(model.model_path, verbose=verbose).kv
        )
        parameters = "\n".join(
            f"{key:<30} {json_value(v)}"
            for key, value in model.parameters.items()
            for v in (value if isinstance(value, list) else [value])
        )
        result: dict[str, Any] = {
            "license": "\n".join(model.license),
            "modelfile": modelfile_text(model),
            "parameters": parameters,
            "template": model.template or "",
            "details": model.details(),
            "model_info": kv,
            "capabilities": model.capabilities,
            "modified_at": model.modified_at.isoformat(),
        }
        if model.system:
            result["system"] = model.system
        if model.messages:
            result["messages"] = model.messages
        return {**result, **remote}

    async def create(self, req: CreateRequest) -> AsyncIterator[dict[str, Any]]:
        """Create a model and report progress like Ollama (`status` lines, then `success`)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def progress(status: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, {"status": status})

        if req.modelfile and not (req.from_ or req.files):
            # The legacy field, translated as a client would but with no file access: FROM may
            # only name an installed model (`hana create -f` uploads local files first).
            plan = plan_create(Modelfile.parse(req.modelfile), None)
            req = CreateRequest.model_validate(plan.body(req.model) | {"stream": req.stream})

        def work() -> Model:
            if wants_remote(req.remote_host, req.from_, bool(req.files)):
                return self._create_remote(req, progress)
            model_digest = None
            if req.files:
                ggufs = [d for name, d in req.files.items() if not name.endswith(".json")]
                if len(ggufs) != 1:
                    raise InvalidRequest("create needs exactly one GGUF file in 'files'")
                model_digest = ggufs[0]
            elif not req.from_:
                raise InvalidRequest(NO_SOURCE)
            license_ = [req.license] if isinstance(req.license, str) else req.license
            messages = [m.model_dump(exclude_none=True) for m in req.messages or []]
            return self.store.create(
                req.model,
                model_digest=model_digest,
                from_model=req.from_ if not model_digest else None,
                template=req.template,
                system=req.system,
                parameters=req.parameters,
                messages=messages or None,
                license=license_,
                requires=req.requires,
                progress=progress,
            )

        task = asyncio.ensure_future(asyncio.to_thread(work))
        task.add_done_callback(lambda _: loop.call_soon(queue.put_nowait, None))
        while (status := await queue.get()) is not None:
            if status["status"] != "success":
                yield status
        task.result()  # raises the store's error (HanaError) into the stream
        yield {"status": "success"}

    def _create_remote(self, req: CreateRequest, progress: Callable[[str], None]) -> Model:
        """A model served elsewhere: Ollama's `from` + `remote_host` (+ hana's remote_api)."""
        if req.files:
            raise InvalidRequest("a remote model has no files: give 'from' and 'remote_host'")
        spec = checked_spec(req.remote_host, req.from_, req.remote_api, req.remote_key_env)
        license_ = [req.license] if isinstance(req.license, str) else req.license
        changes = ModelChanges(
            template=req.template,
            system=req.system,
            parameters=checked_parameters(req.parameters or {}),
            messages=[m.model_dump(exclude_none=True) for m in req.messages or []] or None,
            license=license_,
        )
        return create_remote(self.store, req.model, spec, changes, req.info, progress)


def json_value(value: Any) -> str:
    return (
        f'"{value}"'
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def modelfile_text(model: Model) -> str:
    """A Modelfile that recreates `model` (shown by `/api/show` and `hana show --modelfile`)."""
    lines = [
        "# Modelfile generated by hana",
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {model.name.display}",
        "",
        f"FROM {listing.modelfile_from(model)}",
    ]
    if model.template:
        lines.append(f'TEMPLATE """{model.template}"""')
    if model.system:
        lines.append(f'SYSTEM """{model.system}"""')
    for key, value in model.parameters.items():
        for v in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {json_value(v)}")
    for message in model.messages:
        lines.append(f"MESSAGE {message.get('role')} {message.get('content')}")
    for text in model.license:
        lines.append(f'LICENSE """{text}"""')
    return "\n".join(lines) + "\n"
