"""Errors that reach users: each knows its HTTP status and says it in Ollama's words.

The server raises them and turns them into `{"error": message}` with `status`; the client turns
such an answer back into the same type (`error_for_status`), so both sides catch one hierarchy.
"""

from __future__ import annotations

import json
import re


class HanaError(Exception):
    """Base of every error the API turns into `{"error": message}` with `status`.

    `status` is the class's HTTP status unless given: an error line inside a started stream keeps
    the stream's 200, and a client keeps whatever status the server sent.
    """

    status = 500

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(*((message,) if message else ()))
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidRequest(HanaError):
    """The request is malformed or names a field or value we cannot accept."""

    status = 400


class ModelNotFound(HanaError):
    """No manifest for this model name in the store."""

    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name

    @classmethod
    def from_message(cls, message: str) -> ModelNotFound:
        """The error a client rebuilds from the server's 404 message."""
        match = re.fullmatch(r"model '(.*)' not found", message)
        error = cls(match.group(1) if match else "")
        error.args = (message,)
        return error


class RequestCanceled(HanaError):
    """The client went away while its request waited."""

    status = 499

    def __init__(self, message: str = "request canceled") -> None:
        super().__init__(message)


class ServerBusy(HanaError):
    """The scheduler queue is full."""

    status = 503

    def __init__(
        self, message: str = "server busy, please try again.  maximum pending requests exceeded"
    ) -> None:
        super().__init__(message)


class RunnerFailed(HanaError):
    """A runner process failed to start, or died while serving a request."""

    status = 500


class ModelTooLarge(HanaError):
    """The model can never fit the memory budget, even with every other runner unloaded."""

    status = 500


class ServerUnreachable(HanaError):
    """No hana (or Ollama) server answers at the URL, or the connection broke mid-request."""

    status = 0

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the hana server at {url}: {reason}")
        self.url = url
        self.reason = reason


_BY_STATUS: dict[int, type[HanaError]] = {
    400: InvalidRequest,
    499: RequestCanceled,
    503: ServerBusy,
}


def error_message(body: str, status: int) -> str:
    """Ollama's `{"error": "..."}` message from a response body, or the body itself."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message or body.strip() or f"HTTP {status}")


def error_for_status(status: int, body: str) -> HanaError:
    """The error a server's answer stands for, as the type the server raised where known."""
    message = error_message(body, status)
    if status == 404:
        return ModelNotFound.from_message(message)
    kind = _BY_STATUS.get(status)
    if kind is not None:
        return kind(message)
    return HanaError(message, status=status)
