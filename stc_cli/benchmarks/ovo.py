"""OVO-Bench (CVPR 2025): 12 tasks in three categories, backward, realtime and forward.

Layout under ``<data_dir>/ovo/``:

- ``ovo_bench_new.json``: the 1640 metadata records (GitHub JoeLeelyf/OVO-Bench ``data/``, not the older
  ``ovo_bench.json`` on Hugging Face);
- ``src_videos/<record video>``: the source videos;
- ``chunked_videos/<id>.mp4``, ``chunked_videos/<id>_<i>.mp4``: the clips the official harness opens.

A backward or realtime record is one multiple-choice query, id ``ovo/<id>``. A forward record is asked
again at every probe time of its ``test_info``: one query per probe, id ``ovo/<id>/<i>``. Scores follow
OVO-Bench ``score.py`` v2 (c34093f), which reproduces the paper table: the Total is the mean of the three
category means, each an unweighted mean of its task accuracies, forward tasks counted per probe.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from stc_cli.benchmarks.base import (
    MetadataError,
    Query,
    ScoreReport,
    check_mode,
    check_time,
    mean,
    percent,
    response_status,
)
from stc_cli.benchmarks.extract import extract_choice, extract_number, extract_yes_no, first_text

NAME = "ovo"
FOLDER = "ovo"
METADATA = "ovo_bench_new.json"
CATEGORIES = {
    "backward": ("EPM", "ASI", "HLD"),
    "realtime": ("OCR", "ACR", "ATR", "STU", "FPD", "OJR"),
    "forward": ("REC", "SSR", "CRR"),
}
TASKS = {task: category for category, tasks in CATEGORIES.items() for task in tasks}
COMPARABLE = {
    "official": "OVO-Bench's score.py: comparable with the OVO-Bench paper and leaderboard, the STC README's "
    "OVO-Bench rows and LiveCC's OVO-Bench numbers",
}

# Prompt templates of JoeLeelyf/OVO-Bench constant.py (BR_/REC_/SSR_/CRR_PROMPT_TEMPLATE, copied verbatim
# into EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/ovobench/constant.py), byte for byte: the trailing
# spaces, the typos, the curly quotes and the ellipsis are upstream's.
_BR_PROMPT = (
    "\nQuestion: {}\nOptions:\n{}\n\n"
    "Respond only with the letter corresponding to your chosen option (e.g., A, B, C). \n"
    "Do not include any additional text or explanation in your response.\n"
)
_REC_PROMPT = (
    "\nYou're watching a video in which people may perform a certain type of action repetively. \n"
    "The person performing this kind of action are referred to as 'they' in the following statement.\n"
    "You're task is to count how many times have different people in the video perform this kind of "
    "action in total.\n"
    "One complete motion counts as one. \n"
    "Now, answer the following question: {}\n"
    "Provide your answer as a single number (e.g., 0, 1, 2, 3\u2026) indicating the total count.\n"
    "Do not include any additional text or explanation in your response.\n"
)
_SSR_PROMPT = (
    "\nYou're watching a tutorial video which contain a sequential of steps. \n"
    "The following is one step from the whole procedures: \n{}\n"
    "Your task is to determine if the man or woman in the video is currently performing this step.\n"
    "Answer only with \u201cYes\u201d or \u201cNo\u201d.\n"
    "Do not include any additional text or explanation in your response.\n"
)
_CRR_PROMPT = (
    "\nYou're responsible of answering questions based on the video content. \n"
    "The following question are relevant to the latest frames, i.e. the end of the video.\n{}\n"
    "Decide whether existing visual content, especially latest frames, i.e. frames that near the end of "
    "the video, provide enough information for answering the question.\n"
    "Answer only with \u201cYes\u201d or \u201cNo\u201d.\n"
    "Do not include any additional text or explanation in your response.\n"
)

_NUMBER = (int, float)
_MCQ_FIELDS = {"question": str, "options": list, "gt": int, "realtime": _NUMBER}
_FORWARD_FIELDS = {"REC": {"activity": str}, "SSR": {}, "CRR": {"question": str}}
_PROBE_FIELDS = {
    "REC": {"realtime": _NUMBER, "count": int},
    "SSR": {"realtime": _NUMBER, "step": str, "type": int},
    "CRR": {"realtime": _NUMBER, "type": int},
}


def load_queries(data_dir: Path, tasks=None) -> list[Query]:
    """Read the OVO-Bench queries, in file order (forward probes in ``test_info`` order).

    Args:
        data_dir: the data directory; the benchmark lives in ``<data_dir>/ovo``.
        tasks: task names to keep (``TASKS`` keys); None keeps all.

    Returns:
        The queries; ``window`` is ``(0, ceil(realtime))`` in seconds, the prefix the official clip holds.

    Raises:
        MetadataError: the metadata file is missing, not JSON, or holds a malformed record.
        ValueError: ``tasks`` names an unknown task.
    """
    wanted = set(TASKS) if tasks is None else set(tasks)
    unknown = sorted(wanted - set(TASKS))
    if unknown:
        raise ValueError(f"unknown OVO-Bench task(s) {unknown}; choose from {list(TASKS)}")
    path = Path(data_dir) / FOLDER / METADATA
    if not path.is_file():
        raise MetadataError(
            path,
            "OVO-Bench metadata not found; `stc download ovo` fetches it (data/ovo_bench_new.json of "
            "the GitHub repository JoeLeelyf/OVO-Bench)",
        )
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(path, f"not valid JSON ({exc}); download the file again") from exc
    if not isinstance(items, list):
        raise MetadataError(path, "expected a JSON list of records; is this ovo_bench_new.json?")
    queries = []
    for index, item in enumerate(items):
        _validate(path, index, item)
        if item["task"] in wanted:
            queries.extend(_queries_of(item))
    return queries


def score(records: list[dict], mode: str) -> ScoreReport:
    """Accuracy per task, per category (mean of its tasks) and overall (mean of the categories), in percent.

    ``official`` is OVO-Bench ``score.py`` / ``utils/OVOBenchScore.py`` (v2 averaging): a null response
    scores 0 and stays in the denominator. ``robust`` reads answers with ``extract.py``.
    """
    check_mode(mode, bench=NAME)
    scores: dict[str, list[int]] = {}
    status = Counter(response_status(record) for record in records)
    n_unparsed = n_unknown = 0
    for record in records:
        if record.get("task") not in TASKS:
            n_unknown += 1
            continue
        if mode == "official":
            point = _official_point(record)
            if point is None:  # the official scorer would crash on it: left out of the denominator
                n_unparsed += 1
                continue
        else:
            answered = response_status(record) == "answered"
            answer = _robust_answer(record) if answered else None
            n_unparsed += answered and answer is None
            point = int(answer == record["target"])
        scores.setdefault(record["task"], []).append(point)

    tasks = {task: percent(sum(scores[task]), len(scores[task])) for task in TASKS if task in scores}
    categories = {
        category: mean(tasks[task] for task in members if task in tasks)
        for category, members in CATEGORIES.items()
        if any(task in tasks for task in members)
    }
    notes = _notes(records, mode, categories, status, n_unparsed, n_unknown)
    return ScoreReport(
        bench=NAME,
        mode=mode,
        overall=mean(categories.values()),
        categories=categories,
        tasks=tasks,
        n_total=len(records),
        n_scored=sum(len(points) for points in scores.values()),
        n_unparsed=n_unparsed,
        n_missing=status["missing"],
        n_errors=status["error"],
        task_counts={task: len(scores[task]) for task in tasks},
        notes=notes,
    )


def looks_like(obj) -> bool:
    """Whether ``obj`` is an official result file: ``{"backward": [...], "realtime": [...], ...}``."""
    if not isinstance(obj, dict) or not obj or not set(obj) <= set(CATEGORIES):
        return False
    return all(isinstance(rows, list) for rows in obj.values())


def records_from_upstream(obj: dict) -> list[dict]:
    """Records from an official result file (``<model>_<tasks>_offline_1.json``, or STC's ``_distributed``).

    Backward/real-time rows carry no options, no realtime and no prompt: their records have empty
    ``options`` and ``prompt``, ``extra["realtime"]`` None and an open window. Forward rows are whole
    annotation records, so their probes get everything ``load_queries`` gives. ``video`` is the row's
    path as the harness wrote it. A row's (or probe's) ``error`` field is kept.

    Raises:
        MetadataError: a row lacks a field the scorer needs.
    """
    records = []
    for category in ("backward", "realtime"):
        where = f"official result file, {category!r} list"
        for index, row in enumerate(obj.get(category, [])):
            rid = row.get("id", index) if isinstance(row, dict) else index
            if not isinstance(row, dict) or not {"id", "task", "ground_truth"} <= set(row):
                raise MetadataError(where, "expected a row with id, task and ground_truth", record=rid)
            if TASKS.get(row["task"]) != category or row["ground_truth"] not in tuple("ABCDE"):
                raise MetadataError(where, f"unknown task {row['task']!r} or ground_truth", record=rid)
            letter, video = row["ground_truth"], row.get("video", "")
            extra = {"gt": ord(letter) - 65, "realtime": None, "clip": _clip(row["id"])}
            query = Query(
                f"ovo/{row['id']}", NAME, row["task"], category, video, (0.0, math.inf), "", (), letter, extra
            )
            records.append({**query.to_record(), "response": row.get("response"), "error": row.get("error")})
    for index, row in enumerate(obj.get("forward", [])):
        _validate("official result file, 'forward' list", index, row)
        for i, query in enumerate(_queries_of(row)):
            probe = row["test_info"][i]
            error = probe.get("error") or row.get("error")
            record = {**query.to_record(), "video": row["video"], "response": probe.get("response")}
            records.append({**record, "error": error})
    return records


def _validate(path, index: int, item) -> None:
    """Raise MetadataError unless ``item`` is a well-formed metadata record."""
    rid = item.get("id", index) if isinstance(item, dict) else index
    if not isinstance(item, dict) or item.get("task") not in TASKS:
        task = item.get("task") if isinstance(item, dict) else None
        raise MetadataError(path, f"unknown task {task!r}; expected one of {list(TASKS)}", record=rid)
    task = item["task"]
    fields = {"id": (int, str), "video": str}
    fields.update(_FORWARD_FIELDS.get(task, _MCQ_FIELDS))
    _check_fields(path, rid, item, fields)
    if item.get("ask_time") is not None:  # CRR: where LiveCC's window starts
        check_time(path, rid, "ask_time", item["ask_time"])
    if task not in _FORWARD_FIELDS:
        check_time(path, rid, "realtime", item["realtime"])
        if not (2 <= len(item["options"]) <= 5 and 0 <= item["gt"] < len(item["options"])):
            message = f"gt {item['gt']} is not an index into the {len(item['options'])} options (2 to 5)"
            raise MetadataError(path, message, record=rid)
        return
    if not isinstance(item.get("test_info"), list) or not item["test_info"]:
        raise MetadataError(path, "test_info must be a non-empty list of probes", record=rid)
    for probe in item["test_info"]:
        if not isinstance(probe, dict):
            raise MetadataError(path, "every test_info probe must be an object", record=rid)
        _check_fields(path, rid, probe, _PROBE_FIELDS[task], where="test_info probe ")
        check_time(path, rid, "test_info probe realtime", probe["realtime"])
        if task != "REC" and probe["type"] not in (0, 1):
            raise MetadataError(path, f"probe type {probe['type']} is not 0 or 1", record=rid)


def _check_fields(path, rid, obj: dict, fields: dict, where: str = "") -> None:
    for key, kind in fields.items():
        if key not in obj:
            raise MetadataError(path, f"{where}missing field {key!r}", record=rid)
        if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
            raise MetadataError(path, f"{where}field {key!r} has the wrong type", record=rid)


def _queries_of(item: dict) -> list[Query]:
    """The queries of a validated metadata record: one for an MCQ, one per probe for a forward task."""
    task, qid = item["task"], item["id"]
    if task not in _FORWARD_FIELDS:
        # utils/OVOBench.py build_prompt: the options on one line, "A. x; B. y; C. z;".
        listed = "; ".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(item["options"])) + ";"
        prompt = _BR_PROMPT.format(item["question"], listed)
        extra = {"gt": item["gt"], "realtime": item["realtime"], "clip": _clip(qid)}
        options = tuple(item["options"])
        return [_query(item, f"ovo/{qid}", prompt, item["question"], options, chr(65 + item["gt"]), extra)]
    queries = []
    for i, probe in enumerate(item["test_info"]):
        extra = {"probe": i, "realtime": probe["realtime"]}
        if task == "REC":
            question = "How many times did they " + item["activity"] + "?"
            prompt, extra["activity"] = _REC_PROMPT.format(question), item["activity"]
            target, extra["count"] = str(probe["count"]), probe["count"]
        else:
            if task == "SSR":
                question = probe["step"]
                prompt = _SSR_PROMPT.format(question)
            else:  # CRR: the question is asked from ask_time on (LiveCC's evaluation starts its clip there)
                question, extra["ask_time"] = item["question"], item.get("ask_time")
                prompt = _CRR_PROMPT.format(question)
            target, extra["type"] = ("Yes" if probe["type"] == 1 else "No"), probe["type"]
        extra["clip"] = _clip(qid, i)
        queries.append(_query(item, f"ovo/{qid}/{i}", prompt, question, (), target, extra))
    return queries


def _query(
    item: dict, qid: str, prompt: str, question: str, options: tuple, target: str, extra: dict
) -> Query:
    # utils/chunk_videos.py cuts every clip at ceil(realtime) seconds: that prefix is what the model sees.
    window = (0.0, float(math.ceil(extra["realtime"])))
    video = "src_videos/" + item["video"]
    task = item["task"]
    return Query(qid, NAME, task, TASKS[task], video, window, prompt, options, target, extra, question)


def _clip(qid, probe: int | None = None) -> str:
    return f"chunked_videos/{qid}.mp4" if probe is None else f"chunked_videos/{qid}_{probe}.mp4"


def _official_point(record: dict) -> int | None:
    """The official score of one record (0 or 1), or None where the official scorer would crash."""
    response, target, task = record.get("response"), record["target"], record["task"]
    if response is None:  # get_score*: `if response == None: return 0`
        return 0
    if not isinstance(response, str | list):
        return None
    if task == "REC":
        # get_score_REC joins every digit run: "2 or 3" -> "23" != "2". re.findall crashes on a list
        # (issue #12): read its first element instead.
        text = first_text(response)
        return 0 if text is None else int("".join(re.findall(r"\d+", text)) == target)
    if task in ("SSR", "CRR") and response == target[0]:  # the bare "N" / "Y" shortcut
        return 1
    # `gt in response`: case-sensitive substring test for a str, element test for a list.
    return int(target in response)


def _robust_answer(record: dict) -> str | None:
    """What the response commits to, written as a target is; None when nothing can be read."""
    response, task = record["response"], record["task"]
    if task == "REC":
        number = extract_number(response)
        return None if number is None else str(number)
    if task in ("SSR", "CRR"):
        return extract_yes_no(response)
    return extract_choice(response, record.get("options") or ())


def _notes(records, mode, categories, status, n_unparsed, n_unknown) -> list[str]:
    notes = []
    absent = [category for category in CATEGORIES if category not in categories]
    if absent:
        notes.append(
            f"no {'/'.join(absent)} records: overall averages the categories present, not the "
            "official Total, which needs all three"
        )
    ids = Counter(record.get("id") for record in records)
    repeats = sum(count - 1 for count in ids.values() if count > 1)
    if repeats:
        notes.append(f"{repeats} records repeat an earlier id; all are scored, as upstream does (no dedup)")
    if n_unknown:
        notes.append(f"{n_unknown} records with a task that is not an OVO-Bench task were left out")
    if mode != "official":
        return notes
    if status["missing"] + status["error"]:
        notes.append(
            f"{status['missing'] + status['error']} records are missing or failed: upstream scores "
            "a null or empty response 0 and keeps it in the denominator"
        )
    rec_lists = sum(r.get("task") == "REC" and isinstance(r.get("response"), list) for r in records)
    if rec_lists:
        notes.append(
            f"{rec_lists} REC responses are lists, on which upstream crashes (issue #12); "
            "their first element was scored"
        )
    if n_unparsed:
        notes.append(
            f"{n_unparsed} responses are neither text nor a list: upstream would crash on them, "
            "so they are left out of the denominator"
        )
    return notes
