"""Sync twins generated from async methods, keeping their signature and docstring (nbclient's
`run_sync`).

`models = run_sync(async_models)` in a class body gives a blocking `models(...)` that runs the
coroutine on the `BackgroundLoop`; an async-generator method `async_stream_x` gives an iterator
`stream_x(...)` that pulls one item per `next()`. A KeyboardInterrupt while a twin waits cancels
the coroutine, and leaving an iterator early (break, exception, interrupt) closes the async
generator, so its HTTP stream is closed and the server stops working on it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from hana_client.loop import background_loop

T = TypeVar("T")


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator on the background loop, one item per `next()`."""
    loop = background_loop()
    try:
        while True:
            try:
                yield loop.run(_anext(agen))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            loop.run(aclose())


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def _sync_annotation(annotation: Any) -> Any:
    # `from __future__ import annotations` leaves annotations as strings; the iterator twin of an
    # `AsyncIterator[X]` method returns an `Iterator[X]`.
    if isinstance(annotation, str):
        return annotation.replace("AsyncIterator[", "Iterator[", 1)
    return annotation


def run_sync(method: Callable[..., Any]) -> Callable[..., Any]:
    """The blocking twin of an `async def` method or an async-generator method.

    The twin has the method's docstring and parameters (`inspect.signature` shows them), so
    `help(client.generate)` reads like `help(client.async_generate)`.
    """
    signature = inspect.signature(method)
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return iterate_sync(method(*args, **kwargs))

        twin: Callable[..., Any] = iterate
        signature = signature.replace(
            return_annotation=_sync_annotation(signature.return_annotation)
        )
    elif inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            return background_loop().run(method(*args, **kwargs))

        twin = run
    else:
        raise TypeError(f"run_sync needs an async def or async generator, not {method!r}")
    name = method.__name__.removeprefix("async_")
    twin.__name__ = name
    owner = method.__qualname__.rpartition(".")[0]
    twin.__qualname__ = f"{owner}.{name}" if owner else name
    twin.__signature__ = signature  # type: ignore[attr-defined]
    return twin
