"""`python -m hana_server.runner`: bind, announce the port, serve while loading, exit cleanly.

Order matters: the socket is bound and `{"port": N}` printed before anything slow (importing
llama_cpp, loading weights), so the server learns the port at once and polls /health for progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from tornado.netutil import bind_sockets

from hana_server.runner.priority import lower_priority, set_openmp_waiting
from hana_server.runner.settings import SECRET_ENV, RunnerSettings, parse_args
from hana_server.runner.watchdog import install_parent_watchdog

log = logging.getLogger("hana_server.runner")

ENGINE_STOP_SECONDS = 2.0


async def serve(settings: RunnerSettings, sockets: list, secret: str) -> int:
    from tornado.httpserver import HTTPServer

    from hana_server.runner.app import make_runner_app
    from hana_server.runner.lifecycle import RunnerLifecycle

    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def stop(code: int) -> None:
        if not stopped.done():
            stopped.set_result(code)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, 0)

    lifecycle = RunnerLifecycle(settings, loop)
    server = HTTPServer(make_runner_app(lifecycle, secret))
    server.add_sockets(sockets)
    # A runner that cannot load its model, or whose engine died, has nothing to serve: exit; its
    # last log line says why.
    lifecycle.start(on_failure=lambda _message: stop(1))
    code = await stopped
    server.stop()
    await asyncio.to_thread(lifecycle.close, ENGINE_STOP_SECONDS)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    # Plain messages: the server adds its own timestamps, and shows the last line to users as the
    # reason when a runner fails.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        log.error("%s is not set; refusing to serve without a secret", SECRET_ENV)
        sys.exit(2)
    set_openmp_waiting(os.environ)  # before llama_cpp, and with it libgomp, is loaded
    lower_priority(settings.niceness)  # before any thread exists: threads inherit it
    install_parent_watchdog(settings.parent_pid)
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    code = asyncio.run(serve(settings, sockets, secret))
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter teardown: llama.cpp's OpenMP workers and a loader stuck in C must not be able
    # to hang or crash the exit; the OS frees everything.
    os._exit(code)


if __name__ == "__main__":
    main()
