"""What runner test modules import (not from `conftest`: with several test directories in one
run, `conftest` names whichever conftest.py pytest loaded last)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hana_server.launchers import RunnerProcess

# `await start_runner(model_path, **options)` -> a ready RunnerProcess (the `start_runner` fixture)
StartRunner = Callable[..., Awaitable[RunnerProcess]]
