"""`stc score` on what real runs leave behind: repeated ids, cut or empty files, broken records, binary
files, partial runs side by side, and numbers JSON cannot hold."""

import json
import random

import pytest
from typer.testing import CliRunner

from stc_cli import benchmarks
from stc_cli.cli import app
from tests.demo_small import DATA_DIR as DEMO_SMALL
from tests.test_scoring import samples  # noqa: F401  (the fixture: OVO-Bench samples, robust score 50)

runner = CliRunner()


def score(*args):
    return runner.invoke(app, ["score", *map(str, args)])


def refused(result, message):
    """One ``error:`` line saying ``message``, exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}\n"


def test_repeated_ids_are_scored_once_from_the_last_record(samples, tmp_path):  # noqa: F811
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    ocr = records[1]  # ovo/1, target A; "Answer: B" was wrong, the rerun's "A" is right
    with samples.open("a") as file:
        file.write(json.dumps({**ocr, "response": "A"}) + "\n")
    report = json.loads(score(samples, "--json").stdout)
    assert (report["n_total"], report["tasks"]["OCR"], report["task_counts"]["OCR"]) == (4, 100.0, 1)
    assert report["overall"] == pytest.approx(250 / 3)
    note = "1 earlier records of repeated ids left out (e.g. ovo/1): each id is scored once, from its last "
    note += "record"
    assert note in report["notes"]
    assert not any("all are scored" in n for n in report["notes"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "samples.jsonl").write_text(samples.read_text())
    both = json.loads(score(samples.parent, other, "--json").stdout)
    assert [(run["n_total"], run["tasks"]["OCR"]) for run in both] == [(4, 100.0), (4, 100.0)]


@pytest.mark.parametrize(
    ("line", "change", "message"),
    [
        (2, lambda r: r.pop("response"), "no 'response' field"),
        (3, lambda r: r.pop("task"), "no 'task' field"),
        (1, lambda r: r.update(options="AB"), "'options' is a str, not a list"),
        (4, lambda r: r.update(id=["ovo/2", 1]), "'id' is a list, not a str"),
    ],
)
def test_records_missing_fields_are_refused_naming_the_line(samples, line, change, message):  # noqa: F811
    records = [json.loads(text) for text in samples.read_text().splitlines()]
    change(records[line - 1])
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))
    fields = "id, task, category, target, options, extra, response"
    refused(score(samples), f"{samples}, line {line}: {message}; a record of `stc eval` has {fields}")


@pytest.mark.parametrize("name", ["results.jsonl", "results.json"])
@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), random.Random(0).randbytes(4096)]
)
def test_binary_input_is_refused_naming_the_file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    result = score(path)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert result.stderr.startswith(f"error: {path}: binary data, not text; stc score reads a samples.jsonl")


def test_a_cut_last_line_is_left_out_with_a_note_and_the_file_is_kept(samples):  # noqa: F811
    cut = samples.read_bytes() + b'{"id": "ovo/9", "bench": "ovo", "task": "E'
    samples.write_bytes(cut)
    for path in (samples, samples.parent):
        result = score(path, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert (report["n_total"], report["overall"]) == (4, 50.0)
        assert f"{samples}, line 5: cut short (a run in progress, or a crash): left out" in report["notes"]
    assert samples.read_bytes() == cut
    # Only the last line may be cut: a bad line with a newline after it is no interrupted write.
    samples.write_bytes(cut + b"\n")
    refused(score(samples), f"{samples}, line 5: not JSON (Unterminated string starting at); each line must "
            "be one record")  # fmt: skip


def test_an_empty_file_or_run_says_no_records(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    refused(score(empty), f"no records in {empty}")
    refused(score(empty, "--bench", "ovo"), f"no records in {empty}")
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.jsonl").write_text("\n")
    refused(score(run), f"no records in {run / 'samples.jsonl'}")
    (run / "samples.jsonl").unlink()
    (run / "run.json").write_text("{}")
    refused(score(run), f"no records in {run}: a run folder without samples.jsonl")
    (run / "shards").mkdir()
    refused(
        score(run),
        f"no records in {run}: a run folder without samples.jsonl (a torchrun run merges shards/ into it at "
        "its end)",
    )


def demo_run(folder, header, answers):
    """A run folder: run.json ``header``; per query id of the small demo (``tests/demo_small.py``),
    (response, error) or ``"right"``."""
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(header))
    queries = {q.id: q for q in benchmarks.get("demo").load_queries(DEMO_SMALL)}
    lines = []
    for qid, answer in answers.items():
        response, error = (queries[qid].target, None) if answer == "right" else answer
        lines.append(json.dumps({**queries[qid].to_record(), "response": response, "error": error}) + "\n")
    (folder / "samples.jsonl").write_text("".join(lines))
    return folder


def test_side_by_side_shows_records_errors_unparsed_and_whether_each_run_is_complete(tmp_path):
    # An older run.json: --limit and --tasks in settings.config; the queries are counted from the data
    # (the demo's packaged copy, as `stc eval` falls back to it: --limit 2 of its color questions).
    config = {"bench": "demo", "tasks": ["color"], "limit": 2, "data_dir": str(tmp_path / "nothing")}
    full = demo_run(
        tmp_path / "full",
        {"settings": {"config": config}},
        {"demo/clip_0/0": "right", "demo/clip_1/0": "right"},
    )
    # run.json as `stc eval` now writes it: the selection, with its number of queries.
    answers = {f"demo/clip_{c}/{k}": "right" for c in (0, 1) for k in range(4)}
    answers["demo/clip_1/2"] = ("no idea", None)
    answers["demo/clip_1/3"] = (None, "CUDA out of memory")
    half = demo_run(
        tmp_path / "half",
        {"settings": {"config": {"bench": "demo"}}, "selection": {"limit": None, "tasks": [], "queries": 12}},
        answers,
    )
    result = score(full, half)
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:5]] for line in result.stdout.splitlines()]
    assert ["records", "2", "8", ""] in rows
    assert ["errors", "0", "1", ""] in rows
    assert ["unparsed", "0", "1", ""] in rows
    assert ["run", "complete", "partial 7/12", ""] in rows
    both = json.loads(score(full, half, "--json").stdout)
    assert [run["run"] for run in both] == ["complete", "partial 7/12"]


def test_a_run_whose_queries_cannot_be_counted_is_unknown(samples, tmp_path):  # noqa: F811
    # ovo's metadata is not where run.json says, and no count was recorded: no guess.
    config = {"bench": "ovo", "tasks": [], "limit": None, "data_dir": str(tmp_path / "nothing")}
    (samples.parent / "run.json").write_text(json.dumps({"settings": {"config": config}}))
    here = tmp_path / "here"
    here.mkdir()
    (here / "samples.jsonl").write_text(samples.read_text())
    data = {**config, "data_dir": str(tmp_path / "data")}  # the samples fixture wrote the metadata here
    (here / "run.json").write_text(json.dumps({"settings": {"config": data}}))
    upstream = tmp_path / "upstream"  # no run.json at all
    upstream.mkdir()
    (upstream / "samples.jsonl").write_text(samples.read_text())
    both = json.loads(score(samples.parent, here, upstream, "--json").stdout)
    assert [run["run"] for run in both] == ["unknown", "complete", "unknown"]


def strict(text):
    """JSON as a strict parser reads it: no NaN, no Infinity."""

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_no_nan_or_infinity_reaches_the_json(samples, tmp_path):  # noqa: F811
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    # A NaN time (json.loads reads NaN) and no frames at all: per-frame means over nothing.
    timed = [{**r, "timings_ms": {"vit": float("nan")}, "counts": {"frames_encoded": 0}} for r in records]
    samples.write_text("".join(json.dumps(r) + "\n" for r in timed))
    report = strict(score(samples, "--json").stdout)
    assert report["timings"]["ms_per_frame"] == {"vit": None}
    assert (report["timings"]["answer_ms"], report["timings"]["tokens_in_per_frame"]) == (None, None)
    # Every record failed: MLVU's official rule leaves them all out, so there is no accuracy, not 0 %.
    failed = tmp_path / "mlvu.jsonl"
    record = {"id": "mlvu/plotQA/0", "bench": "mlvu", "task": "plotQA", "category": "MLVU-dev", "target": "A"}
    record.update(options=["Red", "Blue"], extra={}, response=None, error="CUDA out of memory")
    failed.write_text(json.dumps(record) + "\n")
    report = strict(score(failed, "--mode", "official", "--json").stdout)
    assert (report["n_scored"], report["overall"]) == (0, None)
    table = score(failed, "--mode", "official")
    assert table.exit_code == 0, table.output
    overall = next(line for line in table.stdout.splitlines() if "overall" in line)
    assert [cell.strip() for cell in overall.split("│")[1:4]] == ["overall", "0", "n/a"]


@pytest.mark.parametrize(
    ("key", "value"), [("timings_ms", {"vit": "x"}), ("counts", "oops"), ("timings_ms", {"vit": True})]
)
def test_timings_or_counts_that_are_not_numbers_are_refused_naming_the_line(samples, key, value):  # noqa: F811
    records = [json.loads(text) for text in samples.read_text().splitlines()]
    records[1][key] = value
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))
    shown = json.dumps(value)
    refused(score(samples), f"{samples}, line 2: {key!r} must map names to numbers, got {shown}")
