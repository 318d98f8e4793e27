"""Errors that reach users: each knows its HTTP status and says it in Ollama's words."""

from __future__ import annotations


class HanaError(Exception):
    """Base of every error the API turns into `{"error": message}` with `status`."""

    status = 500

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


class RequestCanceled(HanaError):
    """The client went away while its request waited."""

    status = 499

    def __init__(self) -> None:
        super().__init__("request canceled")


class ServerBusy(HanaError):
    """The scheduler queue is full."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class RunnerFailed(HanaError):
    """A runner process failed to start, or died while serving a request."""

    status = 500


class ModelTooLarge(HanaError):
    """The model can never fit the memory budget, even with every other runner unloaded."""

    status = 500
