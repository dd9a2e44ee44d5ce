"""Questions put to a live stream: ``--ask`` text, a ``--questions`` JSON-lines file, and lines typed on
stdin while the stream runs; and the ``Query`` each becomes.

- ``--ask "12.5: What is the man holding?"``: asked when the stream reaches 12.5 s. Multiple choice:
  ``--ask "30: Which direction? | A. left | B. right"`` (options lettered A, B, ... in order, or given
  bare: ``| left | right``).
- ``--questions FILE.jsonl``: one object a line, ``{"t": 12.5, "question": "...", "options": [...]}``
  (``options`` optional, given bare).
- stdin: each line is a question (options as in ``--ask``), asked at the current stream time.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from stc_cli.benchmarks.base import Query

LETTERS = "ABCDEFGH"
ASK_FORM = '--ask "12.5: What is the man holding?" or --ask "30: Which direction? | A. left | B. right"'
FILE_FORM = '{"t": 12.5, "question": "What is the man holding?", "options": ["a cup", "a phone"]}'
_ASK = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*:\s*(.*?)\s*")
_LETTERED = re.compile(r"([A-Z])\s*[.)]\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class Question:
    text: str
    options: tuple[str, ...] = ()
    t: float | None = None  # stream seconds; None: asked now (stdin)
    origin: str = "ask"  # --ask, the file and line, or stdin


def split_options(text: str) -> tuple[str, tuple[str, ...]]:
    """``"Which? | A. left | B. right"`` -> ``("Which?", ("left", "right"))``; ValueError for options
    lettered out of order, an empty one, or more than ``len(LETTERS)``."""
    question, *parts = (part.strip() for part in text.split("|"))
    if not question:
        raise ValueError("the question is empty")
    if not parts:
        return question, ()
    if len(parts) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(parts)}")
    lettered = [_LETTERED.fullmatch(part) for part in parts]
    if all(lettered):
        letters = "".join(match[1] for match in lettered)
        if letters != LETTERS[: len(parts)]:
            raise ValueError(
                f"options must be lettered {', '.join(LETTERS[: len(parts)])} in order, got {letters}"
            )
        parts = [match[2].strip() for match in lettered]
    if not all(parts):
        raise ValueError("an option is empty")
    return question, tuple(parts)


def parse_ask(text: str) -> Question:
    """One ``--ask`` value; ValueError (one line, showing the form) when it is not ``T: question``."""
    match = _ASK.fullmatch(text)
    if match is None:
        raise ValueError(f"--ask {text!r}: expected seconds, a colon and the question: {ASK_FORM}")
    try:
        question, options = split_options(match[2])
    except ValueError as error:
        raise ValueError(f"--ask {text!r}: {error}; the form: {ASK_FORM}") from None
    return Question(question, options, float(match[1]), "--ask")


def parse_line(line: str) -> Question | None:
    """A stdin line as a question asked now; None for a blank line. ValueError for bad options."""
    if not line.strip():
        return None
    question, options = split_options(line.strip())
    return Question(question, options, None, "stdin")


def load_file(path: Path | str) -> list[Question]:
    """The questions of a ``--questions`` file; ValueError naming the file and line at fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--questions {path}: cannot be read ({error})") from None
    questions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"--questions {path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error.msg}); each line is like {FILE_FORM}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: not an object; each line is like {FILE_FORM}")
        t, text, options = record.get("t"), record.get("question"), record.get("options", [])
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < math.inf:
            raise ValueError(f'{where}: "t" must be the stream time in seconds (0 or more), got {t!r}')
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'{where}: "question" must be a non-empty string')
        if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
            raise ValueError(f'{where}: "options" must be a list of non-empty strings')
        if len(options) > len(LETTERS):
            raise ValueError(f"{where}: at most {len(LETTERS)} options, got {len(options)}")
        questions.append(
            Question(text.strip(), tuple(o.strip() for o in options), float(t), f"{path}:{number}")
        )
    return questions


def prompt(question: Question) -> str:
    """The text the model gets: the question, or the question with lettered options."""
    if not question.options:
        return question.text
    options = [f"{LETTERS[i]}. {option}" for i, option in enumerate(question.options)]
    return "\n".join([f"Question: {question.text}", "Options:", *options, "Answer with the option's letter."])


def to_query(question: Question, number: int, source: str, protocol=None) -> Query:
    """``question`` as a ``Query`` on the whole stream so far, put as ``protocol`` puts it (its template
    and retrieval text apply when the model answers)."""
    query = Query(
        id=f"live/{number}",
        bench="live",
        task="live",
        category="live",
        video=source,
        window=(0.0, math.inf),
        prompt=prompt(question),
        options=question.options,
        target="",
        question=question.text,
    )
    return protocol.prepare(query) if protocol is not None else query


class StdinQuestions:
    """Reads ``stream`` line by line in a daemon thread; each question goes to ``asked(question, clock
    time)``, each bad line to ``bad(message)``. The thread ends at the end of the input."""

    def __init__(
        self,
        stream: TextIO,
        asked: Callable[[Question, float], None],
        bad: Callable[[str], None],
        now: Callable[[], float],
    ):
        self.stream, self.asked, self.bad, self.now = stream, asked, bad, now
        self.thread = threading.Thread(target=self._read, name="stc-stream-stdin", daemon=True)

    def start(self) -> StdinQuestions:
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            for line in self.stream:
                try:
                    question = parse_line(line)
                except ValueError as error:
                    self.bad(f"stdin {line.strip()!r}: {error}; type a question, options as | A. x | B. y")
                    continue
                if question is not None:
                    self.asked(replace(question), self.now())
        except (OSError, ValueError):  # stdin closed under us
            return
