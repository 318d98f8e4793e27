"""Which server a client talks to, and the embedded server it starts when none answers.

Order: an explicit URL > `HANA_URL` (exported by the server extension into the kernels it starts)
> the shared port (`HANA_HOST`, then `OLLAMA_HOST`, read by `hana_protocol.hosts` exactly as the
server reads them) if `GET /` answers > a hana server started as a child process of this one.

The embedded server is `python -m hana_server.cli serve --parent-pid <pid>` on 127.0.0.1 and a
free port: it prints its URL as one JSON line on stdout once it listens, exits by itself when its
parent dies (its parent-death watchdog), and is stopped at interpreter exit. The kernel side thus
never imports the server.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import time

import httpx

from hana_client.loop import Once, background_loop
from hana_protocol.env import env_value
from hana_protocol.errors import ServerUnreachable
from hana_protocol.hosts import host_from_env, normalize_url

#: Seconds a starting embedded server gets: it imports the whole server and opens its store.
START_TIMEOUT = 120.0
EMBEDDED = "127.0.0.1 (embedded `hana serve`)"


def configured_url(url: str | None = None) -> str | None:
    """The URL the caller or the environment names: `url`, else `HANA_URL`; None if neither."""
    chosen = url or env_value("HANA_URL")
    return normalize_url(chosen) if chosen else None


def shared_url() -> str:
    """The shared port's client URL: `HANA_HOST`, then `OLLAMA_HOST`, else 127.0.0.1:11434."""
    return host_from_env().url


def server_url(url: str | None = None) -> str:
    """The URL to use without probing or starting anything (the `hana` CLI's rule)."""
    return configured_url(url) or shared_url()


def probe(url: str, timeout: float) -> bool:
    """True if `GET /` on `url` answers within `timeout` seconds: 200, or 401 from a shared port
    that requires an API key (the client sends its key with every real request)."""
    try:
        return httpx.get(url, timeout=timeout).status_code in (200, 401)
    except httpx.HTTPError:
        return False


def discover(
    url: str | None = None,
    *,
    probe_timeout: float = 0.5,
    start_embedded: bool = True,
) -> str:
    """The client URL of the server to use, starting the embedded one if nothing else answers."""
    chosen = configured_url(url)
    if chosen:
        return chosen
    shared = shared_url()
    if probe(shared, probe_timeout):
        return shared
    if not start_embedded:
        raise ServerUnreachable(shared.rstrip("/"), "no server answers and start_embedded is off")
    return normalize_url(embedded_server().url)


class EmbeddedServer:
    """A `hana serve` child process on 127.0.0.1 and a free port, for kernels with no server."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT) -> EmbeddedServer:
        """Start the child and wait until it announces its URL (it listens from then on)."""
        process = _spawn_on_loop_thread()
        try:
            url = _read_announcement(process, timeout)
        except BaseException:
            _terminate(process)
            raise
        assert process.stdout is not None
        process.stdout.close()  # the child points its stdout at stderr after announcing
        return cls(process, url)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM: it unloads its runners first), killing it after `timeout`."""
        _terminate(self.process, timeout)


def _spawn() -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "hana_server.cli", "serve"]
    command += ["--host", "127.0.0.1", "--port", "0", "--parent-pid", str(os.getpid())]
    # stderr is inherited: the server's log lands where this process's own log goes.
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)


def _spawn_on_loop_thread() -> subprocess.Popen[bytes]:
    # Linux ties the child's parent-death signal to the THREAD that forked it: fork from the
    # background loop's thread, which lives as long as this process, so a short-lived thread that
    # happened to discover the server first does not take the server down when it ends.
    loop = background_loop()
    if loop.in_loop_thread():
        return _spawn()

    async def spawn() -> subprocess.Popen[bytes]:
        return _spawn()

    return loop.run(spawn())


def _read_announcement(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerUnreachable(EMBEDDED, f"did not start within {timeout:g} s")
            if selector.select(min(left, 0.5)):
                piece = os.read(process.stdout.fileno(), 4096)
                if not piece:
                    code = process.wait()
                    raise ServerUnreachable(
                        EMBEDDED, f"`hana serve` exited with status {code} while starting"
                    )
                line += piece
    return str(json.loads(line.decode())["url"])


def _terminate(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start_embedded() -> EmbeddedServer:
    server = EmbeddedServer.start()
    atexit.register(server.stop)
    return server


_embedded = Once(_start_embedded)


def embedded_server() -> EmbeddedServer:
    """The hana server this process started, started on first use and stopped at exit."""
    return _embedded.get()
