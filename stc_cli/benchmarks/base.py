"""What every benchmark module shares: the query, the scored record, the report and the errors.

A benchmark module (``ovo.py``, ``streamingbench.py``, ...) provides:

- ``NAME`` (the ``--bench`` name), ``FOLDER`` (its folder under the data directory) and ``TASKS``
  (task name -> category name, in display order);
- ``load_queries(data_dir: Path, **options) -> list[Query]``: reads the metadata as upstream publishes
  it; raises ``MetadataError`` naming the file and the record at fault;
- ``score(records: list[dict], mode: str) -> ScoreReport``: ``mode`` is ``"official"`` (the upstream
  scorer, quirks included), ``"robust"`` (``extract.py``; missing, failed and unparsed count as wrong)
  or, where the module lists it in ``MODES``, ``"stc"`` (the STC authors' released scoring, which their
  published numbers come from);
- ``looks_like(obj) -> bool`` and ``records_from_upstream(obj, **options) -> list[dict]``: recognise and
  convert the upstream harness's own result file (already parsed from JSON), where there is one.

A *record* is one scored unit as a dict: the fields of ``Query.to_record()`` plus ``response`` (the raw
model output: a string, a list as some upstream files store it, or None) and ``error`` (None or a
message). This is one line of a run's ``samples.jsonl``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stc_cli.benchmarks.extract import extract_choice, first_text

MODES = ("official", "robust", "stc")
BASIC_MODES = ("official", "robust")  # what every benchmark scores


@dataclass(frozen=True)
class Query:
    """One question the model answers, with what it may see and how it is scored.

    ``id`` is stable across runs (``ovo/1558/2`` for probe 2 of OVO item 1558). ``video`` is relative to
    the benchmark's folder in the data directory. ``window`` is the (start, end) in seconds of the video
    the model may see; an end of ``math.inf`` means to the end of the video (``null`` in JSON).
    ``target`` is what the scorer compares with: an option letter, a count, Yes/No. ``prompt`` is the
    benchmark's own text for the model (a protocol may give it another, ``stc_cli/protocols``);
    ``question`` is the bare question inside it, without options or instructions.
    """

    id: str
    bench: str
    task: str
    category: str
    video: str
    window: tuple[float, float]
    prompt: str
    options: tuple[str, ...]
    target: str
    extra: dict = field(default_factory=dict)
    question: str = ""

    def to_record(self) -> dict:
        record = asdict(self)
        record["window"] = [None if math.isinf(t) else t for t in self.window]
        record["options"] = list(self.options)
        return record


class MetadataError(ValueError):
    """Metadata that cannot be read: names the file, the record when there is one, and what to do."""

    def __init__(self, path: Path | str, message: str, record: object = None) -> None:
        where = f"{path}" if record is None else f"{path}, record {record}"
        super().__init__(f"{where}: {message}")


def check_time(path: Path | str, record: object, name: str, value) -> float:
    """``value``, a metadata time in seconds, as a float; MetadataError unless it is a finite number >= 0.
    A NaN window passes every comparison and an infinite one reads the whole video: both silently."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        message = f"{name} {value!r} is not a time in seconds (a finite number, 0 or more)"
        raise MetadataError(path, message, record=record)
    return float(value)


@dataclass
class ScoreReport:
    """Accuracies in percent. ``n_total`` counts records; ``n_scored`` those that entered a denominator."""

    bench: str
    mode: str
    overall: float
    categories: dict[str, float]
    tasks: dict[str, float]
    n_total: int
    n_scored: int
    n_unparsed: int = 0
    n_missing: int = 0
    n_errors: int = 0
    task_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def check_mode(mode: str, allowed: tuple[str, ...] = BASIC_MODES, bench: str = "this benchmark") -> None:
    if mode not in allowed:
        raise ValueError(f"--mode {mode} is not defined for {bench}; use one of {', '.join(allowed)}")


def stc_choice(response: str) -> str:
    """The STC/ReKV harness's letter ([STC] ``model/video_qa/base_refactored.py:82-88``
    ``extract_choice``): strip; with a ``)``, the character before the first one; else the first
    character; an empty response becomes ``"A"`` (upstream quirk, kept)."""
    text = response.strip()
    if ")" in text:
        cut = text.index(")")
        return text[cut - 1 : cut]
    return text[0] if text else "A"


_LONE_LETTER = re.compile(r"\b([A-D])\b")
_LONE_DIGIT = re.compile(r"\b([1-4])\b")


def simplestream_choice(response) -> str | None:
    """SimpleStream's letter ([SS] ``lib/recent_window_eval.py:329-339`` ``extract_mcq_answer``, which its
    OVO-Bench and StreamingBench scoring share): in the stripped, upper-cased response, the first A-D that
    stands alone as a word (``a dog`` reads A), else the first lone 1-4 as a letter (``2`` reads B); None for
    a null or blank response or where neither is found."""
    if response is None or not str(response).strip():
        return None
    text = str(response).strip().upper()
    match = _LONE_LETTER.search(text) or _LONE_DIGIT.search(text)
    if match is None:
        return None
    found = match.group(1)
    return found if found.isalpha() else chr(64 + int(found))


def judge_stc(record: dict) -> tuple[bool, str]:
    """STC's offline scoring of one multiple-choice record: (right, status). Every record counts, as the
    harness averages ``qa_acc`` over all questions; a failed or missing response (which that harness
    never stores: it stops instead) is wrong."""
    status = response_status(record)
    text = first_text(record.get("response")) if status == "answered" else None
    if text is None:
        return False, status if status != "answered" else "unparsed"
    return stc_choice(text) == record["target"], "answered"


def judge_choice(record: dict) -> tuple[bool, str]:
    """Robust scoring of a multiple-choice record: (right, status), status ``answered``, ``unparsed``,
    ``missing`` or ``error``; only a letter ``extract_choice`` reads that equals the target is right."""
    status = response_status(record)
    if status != "answered":
        return False, status
    choice = extract_choice(record["response"], record.get("options") or ())
    return choice == record["target"], "answered" if choice else "unparsed"


def judge(record: dict, mode: str, official: Callable[[str, str], bool]) -> tuple[bool | None, str]:
    """Score one multiple-choice record: (right, or None where official mode leaves it out; status).

    Official: ``official(text, target)`` on the response text (a list is read through its first
    element); a failed or missing response is left out, as the upstream scorers cannot take it.
    Robust: ``judge_choice``.
    """
    if mode != "official":
        return judge_choice(record)
    status = response_status(record)
    text = first_text(record.get("response"))
    if status == "error" or text is None:
        return None, status
    return official(text, record["target"]), "answered"


def response_status(record: dict) -> str:
    """``"error"`` (the run failed on it), ``"missing"`` (no response) or ``"answered"``."""
    if record.get("error"):
        return "error"
    response = record.get("response")
    if response is None or (isinstance(response, str | list) and len(response) == 0):
        return "missing"
    return "answered"


def percent(correct: float, total: int) -> float:
    return 100.0 * correct / total if total else 0.0


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
