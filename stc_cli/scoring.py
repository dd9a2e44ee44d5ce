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
from dataclasses import dataclass
from pathlib import Path

from stc_cli import benchmarks
from stc_cli.benchmarks.base import MODES, ScoreReport

SHAPES = (
    "a samples.jsonl written by `stc eval` (or its run folder), an OVO-Bench result JSON "
    '{"backward": [...], "realtime": [...], "forward": [...]} (or a folder of them), or a StreamingBench '
    "annotated JSON (a list of segments with questions)"
)


def read_results(
    path: Path, bench: str | None = None, response_key: str | None = None
) -> tuple[str, list[dict], str]:
    """``(bench, records, source)`` from ``path``; ``source`` is ``"samples"`` or ``"upstream"``.

    Raises ValueError naming the file (and line) at fault and the shapes that are accepted.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "samples.jsonl").is_file():
        path = path / "samples.jsonl"
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
    return found, records, "upstream"


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
    return score_records(path, *read_results(path, bench, response_key), mode)


def score_records(
    path: Path, name: str, records: list[dict], source: str, mode: str | None = None
) -> ScoreReport | Submission:
    """``score_results`` for records ``read_results`` has already read from ``path``."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not records:
        raise ValueError(f"{path}: no records to score")
    module = benchmarks.get(name)
    if name == "egoschema" and any(not r.get("target") for r in records):
        out = (Path(path) if Path(path).is_dir() else Path(path).parent) / "egoschema_submission.json"
        return Submission(out, module.write_submission(records, out), module.SUBMIT_HELP)
    report = module.score(records, mode or ("robust" if source == "samples" else "official"))
    comparable = getattr(module, "COMPARABLE", {}).get(report.mode, _UNPUBLISHED[report.mode])
    report.notes.insert(0, f"{report.mode} scoring: {comparable}")
    return report


_UNPUBLISHED = {
    "robust": "one answer extractor for every benchmark, failures counted wrong: comparable with robust "
    "scores only, not with published numbers",
    "official": "this benchmark's rule; no published numbers to compare with",
}


def _from_samples(path: Path, bench: str | None) -> tuple[str, list[dict], str]:
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not JSON ({error.msg}); each line must be one record"
                ) from None
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError(f"{path}, line {number}: a record must be a JSON object with an 'id'")
            records.append(record)
    names = {r.get("bench") for r in records} - {None}
    if bench is None:
        if len(names) != 1:
            found = ", ".join(sorted(names)) or "none"
            raise ValueError(f"{path}: records name benchmarks {found}; pass --bench to choose one")
        bench = names.pop()
    benchmarks.get(bench)  # an unknown name fails here, listing the known ones
    return bench, [r for r in records if r.get("bench", bench) == bench], "samples"


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
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
