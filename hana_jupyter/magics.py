"""`%%hana MODEL` streams a model's answer into the cell; `%hana VERB` manages the models.

The requests run on the client's background loop; the cell's own thread only refreshes the display
handles (see display.py for why) and waits, so Kernel > Interrupt reaches it as a KeyboardInterrupt,
which cancels the requests and closes their HTTP streams: the server stops generating.

Errors the user can act on (unknown model, server unreachable, bad option) end the cell with one
line, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Dict, Float, Unicode, observe

from hana_client import Answer, HanaClient, background_loop
from hana_jupyter.display import ProgressView, StreamBoard, StreamState
from hana_jupyter.manager import ModelManager
from hana_jupyter.pulling import CellPulls, is_terminal, pull_bars
from hana_protocol.errors import HanaError, ModelNotFound

HELP = """\
%%hana [MODEL ...] [options]      stream the cell's answer (default model: HanaMagics.default_model)
  --system S         system prompt               --temperature T    sampling temperature
  --num-predict N    most tokens to generate     --seed N           sampling seed
  --keep-alive D     keep the model loaded for D ("30m", "1h", -1 = forever, 0 = unload after)
  --format json      answer in JSON              --chat             continue the conversation
  -o VAR             store the answer (a list for several) in VAR; `_hana` always holds the last
  --expand           replace {name} in the cell by that variable's value ({{name}} stays literal)
  --insecure         pull a missing model over plain http (a registry on this machine or a LAN)
  --tier T           with `auto`: answer with tier T's model instead of classifying the prompt
  A model the server does not have is pulled first, with progress in the cell
  (%config HanaMagics.pull_missing = False turns that off).
  Several models run the same prompt in parallel; lines of `---` split the cell into prompts that
  run in parallel too. `%%hana auto` lets the server pick a model per prompt by its complexity
  (tiers from %hana route, else the server's HANA_ROUTES); the footer says which and why.

%hana list                        installed models
%hana ps                          loaded models and their state
%hana show MODEL                  details of a model
%hana warmup MODEL [DURATION]     load a model now (and keep it loaded for DURATION)
%hana keep-alive MODEL DURATION   keep a model loaded for DURATION after its last use
%hana unload MODEL                unload a model as soon as it is idle
%hana create NAME FILE            create a model from a Modelfile
%hana pull MODEL [--insecure]     download a model, with a progress bar per layer
%hana reset [MODEL]               forget the --chat conversation (of one model, or all)
%hana route [TIER=MODEL ...]      this notebook's tiers for `auto` (none: show them; `clear`)
%hana url                         the server this kernel talks to
%hana panel                       a live panel of the models: state, warm up, unload, keep-alive
%hana help                        this text
"""


class HanaMagicError(Exception):
    """An error shown as one line (`hana: <message>`) instead of a traceback."""

    def _render_traceback_(self) -> list[str]:
        # IPython asks an exception for its own traceback lines before formatting a stack.
        return [f"hana: {self}"]


class HanaInterrupt(KeyboardInterrupt):
    """Kernel > Interrupt during `%%hana` or `%hana pull`: still a KeyboardInterrupt (a run-all
    stops here), but shown as one line, since the requests were canceled cleanly."""

    def _render_traceback_(self) -> list[str]:
        return [f"hana: interrupted; {self.args[0] if self.args else 'the requests were canceled'}"]


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors as IPython UsageErrors instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see %hana help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"{self.prog}: see %hana help")


def _cell_parser() -> _ArgumentParser:
    parser = _ArgumentParser(prog="%%hana", add_help=False, allow_abbrev=False)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--system", "-s")
    parser.add_argument("--temperature", "-t", type=float)
    parser.add_argument("--num-predict", "-n", type=int, dest="num_predict")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep-alive", dest="keep_alive")
    parser.add_argument("--format", choices=["json"])
    parser.add_argument("--chat", action="store_true")
    parser.add_argument("-o", "--output")
    parser.add_argument("--expand", action="store_true")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--tier")
    return parser


_FIELD = re.compile(
    r"\{\{(?P<escaped>[A-Za-z_]\w*)\}\}"
    r"|\{(?P<expr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[(?:-?\d+|'[^'{}]*'|\"[^\"{}]*\")\])*)\}"
)


def expand_fields(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace `{name}`, `{name.attr}`, `{name[0]}`, `{In[3]}` by their values from `namespace`.

    Unlike `str.format`, anything else is left alone: braces of code, JSON or LaTeX, and names that
    are not defined, stay as written. `{{name}}` gives a literal `{name}`.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "{" + match.group("escaped") + "}"
        expr = match.group("expr")
        root = re.match(r"[A-Za-z_]\w*", expr)
        if root is None or root.group(0) not in namespace:
            return match.group(0)
        try:
            # The pattern admits only names, attributes and literal subscripts: no calls.
            return str(eval(expr, {"__builtins__": {}}, dict(namespace)))
        except Exception:
            return match.group(0)

    return _FIELD.sub(replace, text)


@dataclass
class _Stream:
    """One request of a `%%hana` cell and the state it fills."""

    state: StreamState
    open: Callable[[], AsyncIterator[dict[str, Any]]]
    prompt: str


@magics_class
class HanaMagics(Magics):
    """`%hana` / `%%hana`. Configure with `%config HanaMagics.default_model = "llama3.2:1b"`."""

    default_model = Unicode(
        "gemma3:270m", help="Model used by %%hana when the line names none."
    ).tag(config=True)
    url = Unicode(
        None,
        allow_none=True,
        help="Server URL. Unset: HANA_URL, then the shared port (HANA_HOST / OLLAMA_HOST), then a "
        "`hana serve` the kernel starts as its child process.",
    ).tag(config=True)
    throttle = Float(
        0.1,
        help="Seconds between two display updates of a stream (0.1 = about 10 per second). "
        "Tokens arriving in between are shown together.",
    ).tag(config=True)
    markdown = Bool(True, help="Render answers as Markdown; False shows them as plain text.").tag(
        config=True
    )
    keep_alive = Unicode(
        None,
        allow_none=True,
        help='keep_alive sent with every request unless --keep-alive is given ("30m", "-1"). '
        "Unset: the server's default.",
    ).tag(config=True)
    options = Dict(
        help='Ollama options sent with every request, e.g. {"num_ctx": 8192, "top_k": 20}. '
        "--temperature, --num-predict and --seed override them.",
    ).tag(config=True)
    separator = Unicode(
        "---", help="A cell line holding only this splits the cell into prompts run in parallel."
    ).tag(config=True)
    routes = Dict(
        value_trait=Unicode(),
        help="This notebook's tiers for `auto`, cheapest first: {'simple': 'gemma3:270m', "
        "'complex': 'qwen3:8b'} (or `%hana route simple=gemma3:270m complex=qwen3:8b`). Sent "
        "with each `auto` request; empty: the server's routes (HANA_ROUTES) apply.",
    ).tag(config=True)
    route_name = Unicode(
        "auto", help="The model name the server routes by task (its HANA_ROUTE_NAME)."
    ).tag(config=True)
    pull_missing = Bool(
        True,
        help="Pull a model the server does not have before answering, with progress in the cell, "
        "as `ollama run` does (%%hana, and the manager's generate/chat). False: the cell fails "
        "with `model '...' not found`.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._manager: ModelManager | None = None
        # --chat conversations, per model name as typed; they live as long as the kernel.
        self.conversations: dict[str, list[dict[str, Any]]] = {}
        #: The streams of the last %%hana cell: `.completion` has the metrics, `.started`,
        #: `.first_chunk` and `.finished` the timings.
        self.last_streams: list[StreamState] = []

    @observe("url")
    def _url_changed(self, change: Mapping[str, Any]) -> None:
        self._manager = None

    @observe("pull_missing")
    def _pull_missing_changed(self, change: Mapping[str, Any]) -> None:
        if self._manager is not None:
            self._manager.pull_missing = change["new"]

    @property
    def manager(self) -> ModelManager:
        """The `ModelManager` the magics use (created on first use, with this config)."""
        if self._manager is None:
            self._manager = ModelManager(
                HanaClient(url=self.url, parent=self), pull_missing=self.pull_missing
            )
        return self._manager

    @line_cell_magic
    def hana(self, line: str, cell: str | None = None) -> Any:
        """Run local models: `%%hana MODEL` streams the cell's answer, `%hana VERB` manages models.

        See `%hana help` for every option and verb.
        """
        try:
            if cell is None:
                return self._line(line)
            self._cell(line, cell)
            return None
        except HanaError as exc:
            raise HanaMagicError(str(exc)) from None

    # `%hana?` shows the whole reference, not just the summary line.
    hana.__doc__ = f"{(hana.__doc__ or '').strip().splitlines()[0]}\n\n{HELP}"

    # ---- %%hana ---------------------------------------------------------------------------------

    def _cell(self, line: str, cell: str) -> None:
        args = _cell_parser().parse_intermixed_args(_split(line))
        models = args.models or [self.default_model]
        prompts = self._prompts(cell)
        if args.expand:
            prompts = [expand_fields(prompt, self.shell.user_ns) for prompt in prompts]
        if not prompts:
            raise UsageError("%%hana: the cell holds no prompt")
        if args.chat and len(prompts) > 1:
            raise UsageError(f"%%hana --chat: one prompt per cell (found {self.separator!r} lines)")
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"%%hana -o: {args.output!r} is not a variable name")

        client = self.manager.client
        _ = client.base_url  # discover (or start) the server now: no placeholders if none answers
        streams = [
            self._stream(client, args, model, prompt, index if len(prompts) > 1 else None)
            for index, prompt in enumerate(prompts)
            for model in models
        ]
        board = StreamBoard(
            [s.state for s in streams], markdown=self.markdown, live=not is_terminal(self.shell)
        )
        self.last_streams = board.states
        board.show()
        pulls = CellPulls(client, insecure=args.insecure) if self.pull_missing else None
        task = background_loop().submit(_run_streams(streams, pulls))
        try:
            board.pump(task, self.throttle)
        except KeyboardInterrupt:
            raise HanaInterrupt() from None
        task.result()  # a bug in the streaming code surfaces here, not as a silent empty answer

        if args.chat:
            for stream in streams:
                if stream.state.status == "done":
                    self._remember(stream.state.model, args.system, stream.prompt, stream.state)
        texts = [s.state.text if s.state.status == "done" else None for s in streams]
        value: Any = texts[0] if len(texts) == 1 else texts
        self.shell.user_ns["_hana"] = value
        if args.output:
            self.shell.user_ns[args.output] = value
        self._report_failures(board)

    def _prompts(self, cell: str) -> list[str]:
        pattern = re.compile(rf"^[ \t]*{re.escape(self.separator)}[ \t]*$", re.MULTILINE)
        parts = pattern.split(cell) if self.separator else [cell]
        return [part.strip("\n") for part in parts if part.strip()]

    def _stream(
        self,
        client: HanaClient,
        args: argparse.Namespace,
        model: str,
        prompt: str,
        index: int | None,
    ) -> _Stream:
        options = {
            **self.options,
            **{
                key: getattr(args, key)
                for key in ("temperature", "num_predict", "seed")
                if getattr(args, key) is not None
            },
        }
        if args.tier:
            options["hana_tier"] = args.tier
        if self.routes and model.lower().partition(":")[0] == self.route_name.lower():
            options["hana_routes"] = dict(self.routes)
        common: dict[str, Any] = {
            "options": options or None,
            "format": args.format,
            "keep_alive": args.keep_alive or self.keep_alive,
        }
        label = model if index is None else f"{model} · prompt {index + 1}"
        state = StreamState(model, label, json_format=args.format == "json")
        if args.chat:
            messages = [
                *self._history(model, args.system),
                {"role": "user", "content": prompt},
            ]
            return _Stream(
                state, lambda: client.async_stream_chat(model, messages, **common), prompt
            )
        return _Stream(
            state,
            lambda: client.async_stream_generate(model, prompt, system=args.system, **common),
            prompt,
        )

    def _history(self, model: str, system: str | None) -> list[dict[str, Any]]:
        history = [m for m in self.conversations.get(model, []) if m["role"] != "system"]
        if system is None:
            system = next(
                (m["content"] for m in self.conversations.get(model, []) if m["role"] == "system"),
                None,
            )
        return [{"role": "system", "content": system}, *history] if system else history

    def _remember(self, model: str, system: str | None, prompt: str, state: StreamState) -> None:
        self.conversations[model] = [
            *self._history(model, system),
            {"role": "user", "content": prompt},
            state.completion.message,
        ]

    def _report_failures(self, board: StreamBoard) -> None:
        failed = [state for state in board.states if state.status == "error"]
        if not failed:
            return
        messages = {state.error for state in failed}
        if len(failed) == len(board.states) and len(messages) == 1:
            # One cause for everything (no server, unknown model): say it once, not per output.
            for state in failed:
                board.clear(state)
            raise HanaMagicError(messages.pop())
        raise HanaMagicError(f"{len(failed)} of {len(board.states)} requests failed (see above)")

    # ---- %hana ----------------------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        words = _split(line)
        if not words or words[0] in ("help", "-h", "--help"):
            print(HELP, end="")
            return None
        verb, rest = words[0], words[1:]
        verbs: dict[str, tuple[Callable[..., Any], int, int, str]] = {
            "list": (self._list, 0, 0, "list"),
            "ls": (self._list, 0, 0, "ls"),
            "ps": (self._ps, 0, 0, "ps"),
            "show": (self._show, 1, 1, "show MODEL"),
            "warmup": (self._warmup, 1, 2, "warmup MODEL [DURATION]"),
            "keep-alive": (self._keep_alive, 2, 2, "keep-alive MODEL DURATION"),
            "unload": (self._unload, 1, 1, "unload MODEL"),
            "create": (self._create, 2, 2, "create NAME FILE"),
            "pull": (self._pull, 1, 2, "pull MODEL [--insecure]"),
            "reset": (self._reset, 0, 1, "reset [MODEL]"),
            "route": (self._route, 0, 16, "route [TIER=MODEL ...] | route clear"),
            "url": (self._url, 0, 0, "url"),
            "panel": (self._panel, 0, 0, "panel"),
        }
        if verb not in verbs:
            raise UsageError(f"%hana: unknown command {verb!r} (see %hana help)")
        method, least, most, usage = verbs[verb]
        if not least <= len(rest) <= most:
            raise UsageError(f"usage: %hana {usage}")
        return method(*rest)

    def _list(self) -> Any:
        return self.manager.models()

    def _ps(self) -> Any:
        return self.manager.ps()

    def _show(self, model: str) -> Any:
        return self.manager.show(model)

    def _warmup(self, model: str, duration: str | None = None) -> None:
        result = self.manager.warmup(model, keep_alive=duration)
        print(
            f"{model} is loaded{_load_note(result)}"
            + (f", kept for {duration}" if duration else "")
        )

    def _keep_alive(self, model: str, duration: str) -> None:
        result = self.manager.keep_alive(model, duration)
        print(f"{model} stays loaded for {duration} after its last use{_load_note(result)}")

    def _unload(self, model: str) -> None:
        self.manager.unload(model)
        print(f"{model} unloads as soon as it is idle")

    def _create(self, name: str, path: str) -> None:
        view = ProgressView(
            f"creating {name}", live=not is_terminal(self.shell), throttle=self.throttle
        )
        self.manager.create(name, path, progress=view.update)

    def _pull(self, *words: str) -> None:
        flags = {word for word in words if word.startswith("-")}
        names = [word for word in words if not word.startswith("-")]
        if flags - {"--insecure"} or len(names) != 1:
            raise UsageError("usage: %hana pull MODEL [--insecure]")
        bars = pull_bars(live=not is_terminal(self.shell))
        try:
            self.manager.pull(names[0], progress=bars, insecure="--insecure" in flags)
        except KeyboardInterrupt:
            raise HanaInterrupt("the pull was canceled; pulling again resumes it") from None
        finally:
            bars.close()

    def _reset(self, model: str | None = None) -> None:
        if model is None:
            self.conversations.clear()
            print("forgot every --chat conversation")
        else:
            self.conversations.pop(model, None)
            print(f"forgot the --chat conversation with {model}")

    def _route(self, *pairs: str) -> None:
        if pairs == ("clear",):
            self.routes = {}
            print(f"{self.route_name} uses the server's routes")
            return
        if pairs:
            try:
                self.routes = parse_route_pairs(pairs)
            except ValueError as exc:
                raise UsageError(f"%hana route: {exc}") from None
        if self.routes:
            print(f"{self.route_name}: " + ", ".join(f"{t} → {m}" for t, m in self.routes.items()))
        else:
            print(f"{self.route_name} uses the server's routes (%hana show {self.route_name})")

    def _url(self) -> None:
        print(self.manager.client.base_url)

    def _panel(self) -> Any:
        from hana_jupyter.runner_panel import HanaPanel  # ipywidgets loads only when asked for

        return HanaPanel(self.manager.client)


async def _run_streams(streams: list[_Stream], pulls: CellPulls | None = None) -> None:
    """Run every stream at once; failures stay in their own state, the others go on. A stream
    whose model the server lacks waits for `pulls` to fetch it (one pull per model), then starts
    again."""

    async def answer(stream: _Stream) -> None:
        async for chunk in stream.open():
            stream.state.add(chunk)

    async def run(stream: _Stream) -> None:
        stream.state.start()
        try:
            try:
                await answer(stream)
            except ModelNotFound:
                if pulls is None or stream.state.first_chunk is not None:
                    raise
                stream.state.pulling(pulls.watch(stream.state.model))
                await pulls.pull(stream.state.model)
                stream.state.pulled()
                await answer(stream)
            if stream.state.status != "done":
                stream.state.end("error", "the server ended the answer early")
        except HanaError as exc:
            stream.state.end("error", str(exc))
        except asyncio.CancelledError:
            stream.state.end("canceled")
            raise

    results = await asyncio.gather(*(run(s) for s in streams), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def parse_route_pairs(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`("simple=gemma3:270m", "complex=qwen3:8b")` -> `{tier: model}` in order (cheapest first)."""
    routes: dict[str, str] = {}
    for pair in pairs:
        tier, sep, model = pair.partition("=")
        if not sep or not tier.strip() or not model.strip() or ":" in tier:
            raise ValueError(f"{pair!r} is not TIER=MODEL")
        routes[tier.strip().lower()] = model.strip()
    return routes


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"%hana: {exc}") from None


def _load_note(result: Answer) -> str:
    seconds = result.load_duration / 1e9
    return f" (loading took {seconds:.1f} s)" if seconds >= 0.05 else ""


__all__ = ["HELP", "HanaInterrupt", "HanaMagicError", "HanaMagics", "expand_fields"]
