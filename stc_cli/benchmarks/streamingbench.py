"""StreamingBench, Real-Time Visual Understanding (RTVU): 2500 four-option questions on 500 videos.

Upstream: THUNLP-MT/StreamingBench ([SB]). Layout under ``<data_dir>/streamingbench/``:

- ``Real_Time_Visual_Understanding.csv`` (Hugging Face ``mjuicem/StreamingBench``; preferred) or
  ``questions_real.json`` (GitHub ``src/data/questions_real.json``): the same 2500 questions;
- ``videos/sample_<N>/video.mp4``: the RTVU zips unpacked into ``videos/``.

Each question is asked at its ``time_stamp``; the model sees only the video before it (all of it, or the
last ``context_seconds``). Query ids are ``streamingbench/sample_<N>/<k>``, k counting a video's questions
from 1.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import warnings
from pathlib import Path

from stc_cli.benchmarks.base import (
    MetadataError,
    Query,
    ScoreReport,
    check_mode,
    judge_choice,
    percent,
    response_status,
    simplestream_choice,
)

NAME = "streamingbench"
FOLDER = "streamingbench"
CATEGORY = "Real-Time Visual Understanding"
TASKS = {
    task: CATEGORY
    for task in (
        "Object Perception",
        "Attribute Perception",
        "Action Perception",
        "Event Understanding",
        "Spatial Understanding",
        "Text-Rich Understanding",
        "Clips Summarize",
        "Causal Reasoning",
        "Prospective Reasoning",
        "Counting",
    )
}
MODES = ("official", "robust", "stc")
COMPARABLE = {
    "official": "THUNLP's count.py (the first character): comparable with the StreamingBench paper and "
    "leaderboard",
    "stc": "the STC authors' count.py (strip, exact match, answered only): comparable with the STC README's "
    "StreamingBench column (ReKV 69.1, + STC 65.2)",
}
# The protocols whose runs ``official`` scores with their upstream's own rule instead of count.py.
OWN_OFFICIAL = {
    "simplestream": "SimpleStream's own reading (main_experiments/eval_streamingbench.py:225-228): "
    "comparable with SimpleStream's StreamingBench numbers (Qwen3-VL-8B 80.59, Qwen2.5-VL-7B 78.47)",
}
CSV_FILE = "Real_Time_Visual_Understanding.csv"
JSON_FILE = "questions_real.json"

# questions_real.json says "... Recognition" where the CSV and the paper say "... Perception".
_JSON_TASK_NAMES = {
    "Object Recognition": "Object Perception",
    "Attribute Recognition": "Attribute Perception",
    "Action Recognition": "Action Perception",
}

# [SB] src/benchmark/StreamingBench.py: PROMPT_TEMPLATE.format(question, *options), then
# `inp += "\n\nThe best option is:"` (the same template is in src/benchmark/StreamingOpenStreamText.py).
PROMPT_TEMPLATE = (
    "You are an advanced video question-answering AI assistant. You have been provided with some frames "
    "from the video and a multiple-choice question related to the video. Your task is to carefully analyze "
    "the video and provide the best answer to question, choosing from the four options provided. Respond "
    "with only the letter (A, B, C, or D) of the correct option.\n\nQuestion: {}\n\nOptions:\n{}\n{}\n{}\n{}"
)
PROMPT_SUFFIX = "\n\nThe best option is:"

_FIELDS = ("task_type", "question", "time_stamp", "options", "answer")
# The question keys of questions_real.json; any other key in a question holds a model's answer.
_SCHEMA_KEYS = {*_FIELDS, "required_ability", "cause", "effect"}
_CSV_ID = re.compile(r"_sample_(\d+)_(\d+)$")
_VIDEO_PATH = re.compile(r"sample_(\d+)_real\.mp4$")
_CLOCK = re.compile(r"\d{1,2}:\d{2}:\d{2}")


def load_queries(
    data_dir: Path, context_seconds: float | None = None, tasks: list[str] | None = None
) -> list[Query]:
    """The RTVU questions, from the CSV when present, else from questions_real.json, in file order.

    Args:
        data_dir: the data directory holding the ``streamingbench`` folder.
        context_seconds: seconds of video before the question the model may see; None, 0 or a negative
            value means all of it from 0 s (upstream ``CONTEXT_TIME=-1``).
        tasks: keep only these tasks (names as in ``TASKS``); None keeps all.

    Raises:
        MetadataError: neither file exists, or a record is malformed.
    """
    folder = Path(data_dir) / FOLDER
    csv_path, json_path = folder / CSV_FILE, folder / JSON_FILE
    if csv_path.exists():
        queries = _from_csv(csv_path, context_seconds)
    elif json_path.exists():
        queries = [query for query, _ in _from_segments(_read_json(json_path), json_path, context_seconds)]
    else:
        raise MetadataError(
            csv_path,
            f"not found, and neither is {json_path}; `stc download streamingbench` fetches StreamingBench/"
            f"{CSV_FILE} from the Hugging Face dataset mjuicem/StreamingBench (or put src/data/{JSON_FILE} "
            "from THUNLP-MT/StreamingBench there)",
        )
    if tasks is None:
        return queries
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown StreamingBench tasks {sorted(unknown)}; known: {', '.join(TASKS)}")
    return [query for query in queries if query.task in tasks]


def looks_like(obj) -> bool:
    """True for the StreamingBench questions JSON: a list of segments, each with a ``questions`` list."""
    return (
        isinstance(obj, list)
        and bool(obj)
        and all(isinstance(seg, dict) and isinstance(seg.get("questions"), list) for seg in obj)
    )


def records_from_upstream(obj, response_key: str | None = None) -> list[dict]:
    """Records from the JSON the upstream harness annotates (each answer under a model-name key).

    Args:
        obj: the parsed annotated ``questions_real.json``.
        response_key: the key holding the answers; found automatically when the questions carry exactly
            one key beyond the known schema. Questions without it get ``response`` None.

    Raises:
        ValueError: ``obj`` is not such a file, or the answer key is not given and not unique.
    """
    if not looks_like(obj):
        raise ValueError("not a StreamingBench result: expected a list of segments with 'questions' lists")
    key = response_key or _response_key(obj)
    pairs = _from_segments(obj, "StreamingBench result", None)
    return [{**query.to_record(), "response": raw.get(key), "error": None} for query, raw in pairs]


def score(records: list[dict], mode: str, protocol: str | None = None) -> ScoreReport:
    """Per-task and micro accuracy in percent; ``overall`` is the micro accuracy ("All").

    Official ([SB] src/data/count.py): the first character of a text answer (first element of a list)
    must equal the answer letter; questions without an answer leave the denominator. Stc (the STC
    authors' patched count.py, [STC] ``streamingbench/src/data/count.py:6-13,68-83``, behind the STC
    README's 65.2): the stripped answer must equal the letter exactly, over answered questions only.
    Robust: the letter ``extract_choice`` finds; every record counts, missing, failed and unparsed ones
    as wrong. For a run of a protocol in ``OWN_OFFICIAL``, official is that upstream's own rule.
    """
    check_mode(mode, MODES, NAME)
    own = mode == "official" and protocol in OWN_OFFICIAL
    judge = (
        _judge_simplestream
        if own
        else {"official": _judge_official, "stc": _judge_stc, "robust": _judge_robust}[mode]
    )
    statuses = {"answered": 0, "missing": 0, "error": 0, "unparsed": 0}
    tally: dict[str, list[int]] = {}  # task -> [right, scored]
    for record in records:
        status, right = judge(record)
        statuses[status] += 1
        if right is not None:
            counts = tally.setdefault(record["task"], [0, 0])
            counts[0] += right
            counts[1] += 1
    order = sorted(tally, key=lambda task: list(TASKS).index(task) if task in TASKS else len(TASKS))
    n_scored = sum(n for _, n in tally.values())
    overall = percent(sum(right for right, _ in tally.values()), n_scored)
    return ScoreReport(
        bench=NAME,
        mode=mode,
        overall=overall,
        categories={CATEGORY: overall},
        tasks={task: percent(*tally[task]) for task in order},
        n_total=len(records),
        n_scored=n_scored,
        n_unparsed=statuses["unparsed"],
        n_missing=statuses["missing"],
        n_errors=statuses["error"],
        task_counts={task: tally[task][1] for task in order},
        notes=_left_out_notes(statuses, mode) if mode != "robust" and not own else [],
    )


def _judge_official(record: dict) -> tuple[str, bool | None]:
    """(status, right); right None leaves the denominator, as count.py skips or would crash on it."""
    status = response_status(record)
    if status != "answered":
        return status, None
    response = record["response"]
    if not isinstance(response, str | list):
        return "unparsed", None
    first = response[0]  # count.py: `question[model][0]`, a character of a str, an element of a list
    if not first:
        return "missing", None  # count.py: `if model_answer:` skips it
    return "answered", first == record["target"]


def _judge_stc(record: dict) -> tuple[str, bool | None]:
    """(status, right); right None leaves the denominator: count.py skips an empty answer and would crash
    on a null one (``None.strip()``)."""
    status = response_status(record)
    if status != "answered":
        return status, None
    response = record["response"]
    text = response[0] if isinstance(response, list) else response  # count.py: a list's first element
    if not isinstance(text, str):
        return "unparsed", None
    if not text.strip():
        return "missing", None
    return "answered", text.strip() == record["target"]


def _judge_simplestream(record: dict) -> tuple[str, bool]:
    """(status, right), every record counted: SimpleStream's letter (``simplestream_choice``) must equal the
    answer ([SS] ``eval_streamingbench.py:225-228``); a failed question is wrong (``:256-270``)."""
    status = response_status(record)
    letter = simplestream_choice(record["response"]) if status == "answered" else None
    return ("unparsed" if status == "answered" and letter is None else status), letter == record["target"]


def _judge_robust(record: dict) -> tuple[str, bool]:
    right, status = judge_choice(record)
    return status, right


def _left_out_notes(statuses: dict[str, int], mode: str) -> list[str]:
    reasons = {
        "missing": "without an answer (count.py skips a missing key and would crash on an empty or null one)",
        "error": "that failed (upstream stores no answer for them)",
        "unparsed": "whose response is neither text nor a list (count.py would crash indexing it)",
    }
    return [
        f"{statuses[status]} records {why} are left out of the denominator"
        for status, why in reasons.items()
        if statuses[status]
    ]


def _response_key(segments: list[dict]) -> str:
    keys = {key for seg in segments for q in seg["questions"] if isinstance(q, dict) for key in q}
    candidates = sorted(keys - _SCHEMA_KEYS)
    if len(candidates) != 1:
        raise ValueError(
            f"cannot tell which question key holds the model's answers (candidates: {candidates or 'none'});"
            " pass response_key"
        )
    return candidates[0]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MetadataError(path, f"not valid JSON ({exc}); download it again") from exc


def _from_csv(path: Path, context_seconds: float | None) -> list[Query]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        missing = {"question_id", *_FIELDS} - set(reader.fieldnames or ())
        if missing:
            raise MetadataError(path, f"missing columns {sorted(missing)}; use the Hugging Face file as is")
        rows = list(reader)
    queries = []
    for row in rows:
        match = _CSV_ID.search(row["question_id"])
        if not match:
            raise MetadataError(
                path, "question_id is not '<subset>_sample_<N>_<k>'", record=row["question_id"]
            )
        try:
            options = ast.literal_eval(row["options"])
        except (ValueError, SyntaxError) as exc:
            raise MetadataError(
                path, "options is not a Python list literal", record=row["question_id"]
            ) from exc
        queries.append(
            _query(path, int(match[1]), int(match[2]), {**row, "options": options}, context_seconds)
        )
    return queries


def _from_segments(segments, path: Path | str, context_seconds: float | None) -> list[tuple[Query, dict]]:
    """(query, question dict) pairs; k counts each video's questions in file order across segments."""
    if not looks_like(segments):
        raise MetadataError(path, "expected a list of segments, each with a 'questions' list")
    seen: dict[int, int] = {}
    pairs = []
    for index, segment in enumerate(segments):
        match = _VIDEO_PATH.search(str(segment.get("video_path", "")))
        if not match:
            raise MetadataError(
                path, "video_path is not '.../sample_<N>_real.mp4'", record=f"segment {index}"
            )
        sample = int(match[1])
        for question in segment["questions"]:
            seen[sample] = seen.get(sample, 0) + 1
            if not isinstance(question, dict):
                raise MetadataError(path, "a question is not an object", record=f"segment {index}")
            pairs.append((_query(path, sample, seen[sample], question, context_seconds), question))
    return pairs


def _query(path: Path | str, sample: int, k: int, raw: dict, context_seconds: float | None) -> Query:
    qid = f"{NAME}/sample_{sample}/{k}"
    missing = [name for name in _FIELDS if name not in raw]
    if missing:
        raise MetadataError(path, f"missing fields {missing}", record=qid)
    task = _JSON_TASK_NAMES.get(raw["task_type"], raw["task_type"])
    if task not in TASKS:
        raise MetadataError(
            path, f"unknown task_type {raw['task_type']!r}; is this the RTVU file?", record=qid
        )
    options = raw["options"]
    if not (isinstance(options, list) and len(options) == 4 and all(isinstance(o, str) for o in options)):
        raise MetadataError(path, "options must be a list of four strings", record=qid)
    if raw["answer"] not in ("A", "B", "C", "D"):
        raise MetadataError(path, f"answer {raw['answer']!r} is not a letter A-D", record=qid)
    # [SB] StreamingBench.py: letters are added unless the first option starts with "A.".
    if not options[0].startswith("A."):
        options = [f"{letter}. {option}" for letter, option in zip("ABCD", options, strict=True)]
    end = _seconds(raw["time_stamp"], path, qid)
    # [SB] StreamingBench.py: the clip starts at max(0, t - context_time) when context_time > 0, else at 0.
    start = max(0, end - context_seconds) if context_seconds and context_seconds > 0 else 0
    return Query(
        id=qid,
        bench=NAME,
        task=task,
        category=CATEGORY,
        video=f"videos/sample_{sample}/video.mp4",
        window=(float(start), float(end)),
        prompt=PROMPT_TEMPLATE.format(raw["question"], *options) + PROMPT_SUFFIX,
        question=str(raw["question"]),
        options=tuple(options),
        target=raw["answer"],
        extra={"time_stamp": raw["time_stamp"], "context_seconds": context_seconds},
    )


def _seconds(raw, path: Path | str, qid: str) -> int:
    """Seconds as [SB] StreamingBench.py reads them: sum(int(part) * 60**i) over the reversed parts."""
    try:
        parts = [int(part) for part in raw.split(":")]
    except (AttributeError, ValueError) as exc:
        raise MetadataError(path, f"time_stamp {raw!r} is not a time; expected H:MM:SS", record=qid) from exc
    if "-" in raw:  # int() reads "-5" (and "-0"): a negative part is no clock time
        raise MetadataError(path, f"time_stamp {raw!r} has a negative part; expected H:MM:SS", record=qid)
    seconds = sum(part * 60**i for i, part in enumerate(reversed(parts)))
    if not _CLOCK.fullmatch(raw):
        warnings.warn(
            f"{path}, record {qid}: time_stamp {raw!r} is not H:MM:SS; read as {seconds} s as upstream does",
            stacklevel=2,
        )
    return seconds
