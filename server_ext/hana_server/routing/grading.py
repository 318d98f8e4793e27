"""Asking a model to grade a task when the rules are unsure (`route_grading`, off by default).

The grader is the smallest model that is loaded right now and can complete text: grading must
not load anything (that would cost more than the answer it saves). It gets a one-word question
with `num_predict` 4 and temperature 0, and a time limit; an answer that names no level, a
timeout or an error leaves the rules' verdict in place, and the reason says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from hana_protocol.errors import HanaError
from hana_server.routing.classifier import LEVELS
from hana_server.snapshots import RunnerSnapshot

log = logging.getLogger("hana.routing")

PROMPT_CHARS = 2000  # the task is cut here: grading reads the gist, not a whole document
QUESTION = (
    "Rate how hard the following task is for an AI assistant. Answer with exactly one word: "
    "SIMPLE (a fact, a greeting, a short rewrite), MEDIUM (a short explanation, a small piece of "
    "code, a summary) or COMPLEX (multi-step reasoning, proofs, design, long documents).\n\n"
    "Task:\n{task}\n\nAnswer:"
)
LEVEL_WORD = re.compile(r"\b(simple|medium|complex)\b", re.IGNORECASE)

# (model, prompt, options) -> the streamed text pieces of a plain generate request.
Generate = Callable[[str, str, dict[str, object]], Awaitable[AsyncGenerator[str, None]]]


@dataclass
class Grade:
    """A grader's answer: the level (None if it gave none) and what to say about it."""

    level: int | None
    note: str


def smallest_loaded(runners: Iterable[RunnerSnapshot]) -> str | None:
    """The loaded, ready model with the fewest bytes that can complete text, or None."""
    ready = [r for r in runners if r.phase == "ready" and "completion" in r.model.capabilities]
    if not ready:
        return None
    return min(ready, key=lambda r: (r.model.size, r.name)).name


class Grader:
    """Grades a task with the smallest loaded model, within `timeout` seconds."""

    def __init__(
        self,
        runners: Callable[[], Iterable[RunnerSnapshot]],
        generate: Generate,
        timeout: float,
    ) -> None:
        self.runners = runners
        self.generate = generate
        self.timeout = timeout

    async def grade(self, task: str) -> Grade:
        model = smallest_loaded(self.runners())
        if model is None:
            return Grade(None, "no model loaded to grade")
        prompt = QUESTION.format(task=task[:PROMPT_CHARS])
        options: dict[str, object] = {"num_predict": 4, "temperature": 0.0}
        try:
            async with asyncio.timeout(self.timeout):
                pieces = await self.generate(model, prompt, options)
                async with contextlib.aclosing(pieces):  # the lease comes back on a timeout too
                    text = "".join([piece async for piece in pieces])
        except TimeoutError:
            return Grade(None, f"grader {model} timed out")
        except HanaError as error:
            log.warning("grading with %s failed: %s", model, error.message)
            return Grade(None, f"grader {model} failed: {error.message}")
        match = LEVEL_WORD.search(text)
        if match is None:
            return Grade(None, f"grader {model} said {text.strip()[:40]!r}")
        level = LEVELS.index(match.group(1).lower())
        return Grade(level, f"graded {LEVELS[level]} by {model}")
