"""`stc score`: read a run's ``samples.jsonl`` or an upstream harness's own result files, then score.

Accepted inputs:
- this project's ``samples.jsonl`` (one JSON record per line), or the run folder holding it;
- an OVO-Bench result JSON ``{"backward": [...], "realtime": [...], "forward": [...]}``, or a folder of
  them, combined as the official ``score.py`` does (concatenated, no de-duplication);
- a StreamingBench annotated JSON (a list of segments whose questions carry the model's answer under a
  model-name key).
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from stc_cli import benchmarks
from stc_cli.benchmarks.base import MODES, ScoreReport
from stc_cli.evaluation.run_folder import read_json

SHAPES = (
    "a samples.jsonl written by `stc eval` (or its run folder), an OVO-Bench result JSON "
    '{"backward": [...], "realtime": [...], "forward": [...]} (or a folder of them), or a StreamingBench '
    "annotated JSON (a list of segments with questions)"
)


class Results(NamedTuple):
    bench: str
    records: list[dict]
    source: str  # "samples" or "upstream"
    notes: list[str]  # what reading left out, for the report


def read_results(path: Path, bench: str | None = None, response_key: str | None = None) -> Results:
    """The records of ``path``, one per id for samples.jsonl (the last of each: a rerun appends the newer).

    Raises ValueError naming the file (and line) at fault and the shapes that are accepted.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "samples.jsonl").is_file():
        path = path / "samples.jsonl"
    elif path.is_dir() and (path / "run.json").is_file():  # a run that has not written a record yet
        shards = " (a torchrun run merges shards/ into it at its end)" if (path / "shards").is_dir() else ""
        raise ValueError(f"no records in {path}: a run folder without samples.jsonl{shards}")
    if path.is_file() and path.suffix == ".jsonl":
        if response_key:
            raise ValueError(f"--response-key applies to StreamingBench result files only, not to {path}")
        return _from_samples(path, bench)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise ValueError(
            f"{path}: no samples.jsonl and no *.json result files here; stc score reads {SHAPES}"
        )
    found, records = None, []
    for file in files:
        name, rows = _from_upstream(file, _read_json(file), bench, response_key)
        if found not in (None, name):
            raise ValueError(
                f"{file}: a {name} result file beside {found} ones; score one benchmark at a time"
            )
        found = name
        records += rows
    return Results(found, records, "upstream", [])


@dataclass
class Submission:
    """EgoSchema's full set has hidden answers: a file for its evaluation server instead of a score."""

    path: Path
    counts: dict
    help: str


def score_results(
    path: Path, bench: str | None = None, mode: str | None = None, response_key: str | None = None
) -> ScoreReport | Submission:
    """Score ``path``. ``mode`` defaults to ``robust`` for samples.jsonl and ``official`` for upstream
    files (their numbers are meant to compare with the published ones). EgoSchema full-set records
    (no target) give a ``Submission`` written next to ``path``, never a score."""
    name, records, source, notes = read_results(path, bench, response_key)
    return score_records(path, name, records, source, mode, notes)


def score_records(
    path: Path, name: str, records: list[dict], source: str, mode: str | None = None, notes=()
) -> ScoreReport | Submission:
    """``score_results`` for records ``read_results`` has already read from ``path`` (with its ``notes``).
    ``official`` on a run whose protocol the benchmark lists in ``OWN_OFFICIAL`` (run.json says which) is
    that protocol's upstream scorer, whose numbers it was published with."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not records:
        raise ValueError(f"{path}: no records to score")
    module = benchmarks.get(name)
    if name == "egoschema" and any(not r.get("target") for r in records):
        out = (Path(path) if Path(path).is_dir() else Path(path).parent) / "egoschema_submission.json"
        return Submission(out, module.write_submission(records, out), module.SUBMIT_HELP)
    mode = mode or ("robust" if source == "samples" else "official")
    protocol = _run_protocol(path) if mode == "official" and source == "samples" else None
    own = getattr(module, "OWN_OFFICIAL", {}).get(protocol)
    report = module.score(records, mode, protocol=protocol) if own else module.score(records, mode)
    comparable = own or getattr(module, "COMPARABLE", {}).get(report.mode, _UNPUBLISHED[report.mode])
    report.notes[:0] = [f"{report.mode} scoring: {comparable}", *notes]
    if not report.n_scored:  # nothing entered a denominator: no accuracy (the scorers' 0.0 would read as 0 %)
        report.overall = None
    return report


def _run_protocol(path: Path) -> str | None:
    """The protocol name the run's run.json records; None without one (a bare samples.jsonl)."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    settings = read_json(folder / "run.json").get("settings")
    protocol = settings.get("protocol") if isinstance(settings, dict) else None
    return protocol.get("name") if isinstance(protocol, dict) else None


def finite(obj):
    """``obj`` with NaN and infinities as None: JSON has no such numbers, and ``json.dumps`` would write
    ``NaN``, which strict parsers refuse."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(value) for value in obj]
    return obj


def run_status(path: Path, records: list[dict]) -> str:
    """``complete``, ``partial <answered>/<queries>`` or ``unknown``: whether every query the run was asked
    (run.json: its benchmark, ``--tasks`` and ``--limit``) has a record without an error. Unknown without a
    run.json, or where neither run.json nor the benchmark's metadata here gives the number of queries."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    header = read_json(folder / "run.json")
    try:
        selection = header.get("selection") or {}
        total = selection.get("queries")
        if not isinstance(total, int):  # an older run.json: --limit and --tasks are in settings.config
            total = _count_queries({**header["settings"]["config"], **selection})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no run.json, or not one of ours
        return "unknown"
    if total is None:
        return "unknown"
    answered = sum(not record.get("error") for record in records)
    return "complete" if answered >= total else f"partial {answered}/{total}"


def _count_queries(config: dict) -> int | None:
    """How many queries ``stc eval`` picks with ``config``; None when the metadata is not here to count."""
    from stc_cli.datasets.datadir import benchmark_data_dir, resolve_data_dir

    try:
        module = benchmarks.get(config["bench"])
        data_dir, _ = benchmark_data_dir(module, resolve_data_dir(config.get("data_dir")))  # as `stc eval`
        with warnings.catch_warnings():  # only counting: the loader's warnings are for `stc eval`
            warnings.simplefilter("ignore")
            queries = module.load_queries(data_dir)
    except (ValueError, OSError, ImportError, KeyError, TypeError):  # MetadataError is a ValueError
        return None
    tasks, limit = config.get("tasks") or (), config.get("limit")
    queries = [query for query in queries if not tasks or query.task in tasks]
    return len(queries[:limit] if isinstance(limit, int) else queries)


_UNPUBLISHED = {
    "robust": "one answer extractor for every benchmark, failures counted wrong: comparable with robust "
    "scores only, not with published numbers",
    "official": "this benchmark's rule; no published numbers to compare with",
}


# What the scorers read from a record of `stc eval` (``Query.to_record()`` and ``response``).
_FIELDS = {
    "id": str,
    "task": str,
    "category": str,
    "target": str,
    "options": list,
    "extra": dict,
    "response": object,
}


def _from_samples(path: Path, bench: str | None) -> Results:
    *complete, last = _text(path).split("\n")  # ``last`` is "" unless the last line has no newline
    rows, notes = [], []
    for number, line in enumerate([*complete, last], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number > len(complete):  # no newline after it: a write a crash cut, or a run still writing
                notes.append(f"{path}, line {number}: cut short (a run in progress, or a crash): left out")
                continue
            raise ValueError(
                f"{path}, line {number}: not JSON ({error.msg}); each line must be one record"
            ) from None
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path}, line {number}: a record must be a JSON object with an 'id'")
        rows.append((number, record))
    if not rows:
        raise ValueError(f"no records in {path}")
    names = {r.get("bench") for _, r in rows if isinstance(r.get("bench"), str)}
    if bench is None:
        if len(names) != 1:
            found = ", ".join(sorted(names)) or "none"
            raise ValueError(f"{path}: records name benchmarks {found}; pass --bench to choose one")
        bench = names.pop()
    benchmarks.get(bench)  # an unknown name fails here, listing the known ones
    rows = [(number, r) for number, r in rows if r.get("bench", bench) == bench]
    if not rows:
        raise ValueError(f"no {bench} records in {path}")
    for number, record in rows:
        for key, kind in _FIELDS.items():
            if key not in record:
                problem = f"no {key!r} field"
            elif not isinstance(record[key], kind):
                problem = f"{key!r} is a {type(record[key]).__name__}, not a {kind.__name__}"
            else:
                continue
            fields = ", ".join(_FIELDS)
            raise ValueError(f"{path}, line {number}: {problem}; a record of `stc eval` has {fields}")
        for key in ("timings_ms", "counts"):  # optional, but numbers where present: timings sums them
            value = record.get(key)
            if value is not None and not (isinstance(value, dict) and all(map(_is_number, value.values()))):
                shown = json.dumps(value)[:60]
                raise ValueError(f"{path}, line {number}: {key!r} must map names to numbers, got {shown}")
    latest = {record["id"]: record for _, record in rows}  # the last record of an id wins
    if len(latest) < len(rows):
        example = next(i for i, n in Counter(r["id"] for _, r in rows).items() if n > 1)
        dropped = len(rows) - len(latest)
        notes.append(
            f"{dropped} earlier records of repeated ids left out (e.g. {example}): each id is scored once, "
            "from its last record"
        )
    return Results(bench, list(latest.values()), "samples", notes)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(path: Path) -> str:
    """The file as text; ValueError naming it when it cannot be read or holds binary data."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:  # no text format stc reads holds a NUL byte
        raise ValueError(f"{path}: binary data, not text; stc score reads {SHAPES}")
    return text


def _read_json(path: Path):
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}); stc score reads {SHAPES}"
        ) from None


def _from_upstream(path: Path, obj, bench: str | None, response_key: str | None) -> tuple[str, list[dict]]:
    candidates = [bench] if bench else benchmarks.names()
    for name in candidates:
        module = benchmarks.get(name)
        if hasattr(module, "looks_like") and module.looks_like(obj):
            convert = module.records_from_upstream
            options = {"response_key": response_key} if response_key else {}
            unknown = set(options) - set(inspect.signature(convert).parameters)
            if unknown:
                raise ValueError(f"--response-key applies to StreamingBench result files only, not to {path}")
            return name, convert(obj, **options)
    what = f"a {bench} result file" if bench else "a result file stc knows"
    raise ValueError(f"{path}: not {what}; stc score reads {SHAPES}")
