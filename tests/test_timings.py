"""Where a run's time went: per-frame stage times from samples.jsonl, one run or two side by side."""

import json

import pytest
from typer.testing import CliRunner

from stc_cli.cli import app
from stc_cli.timings import summarize
from tests.test_scoring import samples  # noqa: F401  (the fixture: OVO-Bench samples, robust score 50)

# Two records with costs (a stream: the second adds one frame), one without (an upstream file's row).
RECORDS = [
    {
        "timings_ms": {"decode": 10.0, "vit": 20.0, "prefill": 8.0, "answer": 5.0},
        "counts": {"frames_encoded": 2, "visual_tokens_in": 32, "visual_tokens_kept": 10},
    },
    {
        "timings_ms": {"vit": 10.0, "compress": 2.0, "answer": 7.0},
        "counts": {"frames_encoded": 1, "visual_tokens_in": 16, "visual_tokens_kept": 5},
    },
    {"response": "A"},
]


def test_stage_times_are_summed_then_divided_by_frames_encoded():
    summary = summarize(RECORDS)
    assert (summary.records, summary.frames) == (2, 3)
    assert summary.ms_per_frame == pytest.approx(
        {"decode": 10 / 3, "vit": 10.0, "compress": 2 / 3, "prefill": 8 / 3}
    )
    assert summary.answer_ms == 6.0  # (5 + 7) / 2 answers
    assert (summary.tokens_in_per_frame, summary.tokens_kept_per_frame) == (16.0, 5.0)


def test_a_stage_no_record_had_is_absent_and_no_timings_give_none():
    baseline = summarize([{"timings_ms": {"vit": 4.0}, "counts": {"frames_encoded": 2}}])
    assert baseline.ms_per_frame == {"vit": 2.0}
    assert summarize([{"response": "A"}]) is None


def with_costs(samples_path, vit_ms, kept):
    lines = samples_path.read_text().splitlines()
    costs = {
        "timings_ms": {"vit": vit_ms, "answer": 1.0},
        "counts": {"frames_encoded": 1, "visual_tokens_kept": kept},
    }
    samples_path.write_text("".join(json.dumps({**json.loads(line), **costs}) + "\n" for line in lines))


def test_two_runs_side_by_side_with_the_ratio(samples, tmp_path):  # noqa: F811
    base = tmp_path / "runs" / "rekv-ovo-base"
    base.mkdir()
    (base / "samples.jsonl").write_text(samples.read_text())
    with_costs(base / "samples.jsonl", vit_ms=8.0, kept=196)
    with_costs(samples, vit_ms=6.0, kept=60)
    result = CliRunner().invoke(app, ["score", str(base), str(samples.parent)])
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.split("│")[1:5]] for line in result.stdout.splitlines()]
    assert ["accuracy %", "50.00", "50.00", "1.000"] in rows
    assert ["ViT ms / frame", "8.0", "6.0", "0.750"] in rows
    assert ["visual tokens / frame kept", "196.0", "60.0", "0.306"] in rows
    assert ["compress ms / frame", "", "", ""] in rows
    both = json.loads(CliRunner().invoke(app, ["score", str(base), str(samples.parent), "--json"]).stdout)
    assert [run["timings"]["ms_per_frame"] for run in both] == [{"vit": 8.0}, {"vit": 6.0}]
