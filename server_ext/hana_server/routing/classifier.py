"""The rule-based task classifier: how complex is this request, and why.

Cheap (regular expressions over the text, no tokenizer, no model) and explainable (each rule that
fired is named in the reason). Points are added for what makes a task harder and taken away for
what marks an easy one; the sum picks a level:

| signal | points |
|---|---|
| length (prompt + system + history, ~4 chars a token): >=100 / >=300 / >=1500 tokens | +1/+2/+4 |
| multi-step reasoning: step by step, prove, derive, design a, trade-offs, complexity | +4 |
| reasoning: analyze, justify, constraints, optimize, recommend, which option | +3 |
| explanation or writing: explain, why, compare, summarize, draft, pros and cons | +2 |
| code: a fence, lines that look like code, or a request to write/fix/implement code | +2 |
| maths: LaTeX, integrals, derivatives, equations, arithmetic, percentages, 4+ numbers | +2 |
| several instructions in one prompt (3+ distinct task verbs) | +2 |
| a short prompt that asks for a fact, a definition, a translation or a small rewrite | -1 |

Level 0 (simple) up to 1 point, 1 (medium) at 2-3, 2 (complex) from 4. A score that sits exactly
on a level's lower edge (2 or 4) is "unsure": one point less and the level would drop, so a
grading model may be asked (see grading.py). Token counts are approximate on purpose: a real
tokenizer lives in a runner process, and a round trip there would cost more than routing may.
Markers are looked for in the first and last WINDOW_CHARS characters of the prompt only: that is
where instructions sit around a pasted document, such a document is already complex by length,
and the cost of routing stays bounded whatever the size of the request.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

LEVELS = ("simple", "medium", "complex")
CHARS_PER_TOKEN = 4  # English prose with llama/gemma vocabularies; code and CJK run denser
LENGTH_POINTS = ((1500, 4), (300, 2), (100, 1))
SIMPLE_MAX_TOKENS = 60
WINDOW_CHARS = 2000
MEDIUM_FROM, COMPLEX_FROM = 2, 4

# Patterns are matched against the lowercased prompt (cheaper than IGNORECASE); each starts with
# one \b or one character class, so most positions are rejected at their first character.
DEEP_REASONING = re.compile(
    r"\b(?:step[- ]by[- ]step|(?:each|every) step|prove|proof|derive|show that|rigorous"
    r"|trade-?offs?|design (?:a|an|the)|architecture|failure modes|race conditions?"
    r"|(?:time|space) complexity|complexity\b.*\bo\(|o\(.*\bcomplexity)\b"
)
REASONING = re.compile(
    r"\b(?:justif(?:y|ication)|analy[sz]e|constraints?|optimi[sz]e|recommend|which option"
    r"|should we)\b"
)
EXPLAIN = re.compile(
    r"\b(?:explain|why|compare|difference between|summari[sz]e|draft|pros and cons"
    r"|for and against|how (?:does|do|would|can)"
    r"|write an? (?:email|letter|essay|story|paragraph|report)|for a \w+-year-old)\b"
)
CODE_REQUEST = re.compile(
    r"\b(?:(?:write|implement|create|code) (?:an? |the )?(?:\w+ )?(?:function|class|script"
    r"|program|query|regex|method|module|test)s?|implement|refactor|fix the bug|debug|sql|regex"
    r"|unit tests?|what does this code)\b"
)
CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|function |const |let |var |#include|return\b"
    r"|for\s*\(|if\s*\(|public |private |select |\}|.*;\s*$|.*\)\s*\{\s*$|.*=>)",
    re.MULTILINE,
)
MATH_WORDS = re.compile(
    r"\b(?:integra(?:l|tion)|derivative|equations?|extrem(?:a|um)|matri(?:x|ces)|eigen\w*"
    r"|probability|primes?|irrational|x\^\d)\b"
)
MATH_SIGNS = re.compile(
    r"[\\$∫∑√∞≤≥≠%\d](?:(?<=\\)(?:frac|int|sum|sqrt|lim|prod|partial)|(?<=\$)[^$\n]+\$"
    r"|(?<=[∫∑√∞≤≥≠])|(?<=\d)\s*[+*/^=]\s*\d|(?<=\d)\s+-\s+\d|(?<=\d)\s*%)"
)
TASK_VERBS = re.compile(
    r"\b(explain|write|give|list|analy[sz]e|discuss|show|find|determine|sketch|compute"
    r"|recommend|check|implement|design|consider|summari[sz]e|compare|reason|describe"
    r"|justify|evaluate|prove|derive|test|keep)\b"
)
FENCED = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*")
WORD_PROBLEM_NUMBERS = 4  # four quantities in one prompt: a word problem, not a lookup
SIMPLE_ASK = re.compile(
    r"\s*(?:what is|what's|what are|who|when|where|how many|how much|define|translate|list"
    r"|give me|convert|fix the grammar|correct|rewrite|rephrase|make this|name|hi\b|hello"
    r"|hey\b|thanks|thank you)"
)


def approx_tokens(text: str) -> int:
    """Tokens of `text` estimated from its length (see CHARS_PER_TOKEN)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class Verdict:
    """The classifier's answer: a level, the points behind it, and the rules that fired."""

    level: int
    score: int
    tokens: int
    signals: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return LEVELS[self.level]

    @property
    def unsure(self) -> bool:
        """On a level's lower edge: one point less would have chosen the cheaper level."""
        return self.score in (MEDIUM_FROM, COMPLEX_FROM)

    @property
    def reason(self) -> str:
        rules = ", ".join(self.signals) if self.signals else "no markers"
        return f"{self.name}: {rules} (score {self.score}, ~{self.tokens} tokens)"


def classify(prompt: str, context: str = "") -> Verdict:
    """Grade `prompt` (the user's latest request); `context` (system prompt, earlier turns,
    suffix) counts for the length only, so an old code block does not make a greeting complex."""
    tokens = approx_tokens(prompt) + approx_tokens(context)
    if len(prompt) > 2 * WINDOW_CHARS:
        prompt = prompt[:WINDOW_CHARS] + "\n" + prompt[-WINDOW_CHARS:]
    prompt = prompt.lower()
    score, signals = 0, []

    def add(points: int, signal: str) -> None:
        nonlocal score
        score += points
        signals.append(f"{signal} {points:+d}")

    for limit, points in LENGTH_POINTS:
        if tokens >= limit:
            add(points, f"~{tokens} tokens")
            break
    if DEEP_REASONING.search(prompt):
        add(4, "multi-step reasoning asked")
    elif REASONING.search(prompt):
        add(3, "reasoning asked")
    elif EXPLAIN.search(prompt):
        add(2, "explanation asked")
    if "```" in prompt or len(CODE_LINE.findall(prompt)) >= 2 or CODE_REQUEST.search(prompt):
        add(2, "code")
    # Operators and numbers inside a code block are code, not maths.
    prose = FENCED.sub(" ", prompt)
    maths = MATH_WORDS.search(prose) or MATH_SIGNS.search(prose)
    if maths or len(NUMBER.findall(prose)) >= WORD_PROBLEM_NUMBERS:
        add(2, "maths")
    verbs = set(TASK_VERBS.findall(prose))
    if len(verbs) >= 3:
        add(2, f"{len(verbs)} instructions")
    if tokens < SIMPLE_MAX_TOKENS and SIMPLE_ASK.match(prompt) and score <= MEDIUM_FROM:
        add(-1, "short factual/rewrite ask")
    level = 2 if score >= COMPLEX_FROM else 1 if score >= MEDIUM_FROM else 0
    return Verdict(level, score, tokens, signals)
