"""The runner's proactive loop (stc_cli/evaluation/runner.py, ``_Proactive``): forward queries answered when
the model decides to, on a recording fake; and ``stc eval --protocol dispider-proactive`` end to end on a
small OVO-Bench folder with the tiny random Dispider."""

import json
from dataclasses import replace

import pytest

from stc_cli.evaluation.runner import run
from tests.evaluation.test_runner import TWO_FPS, RecordingModel, records


class ProactiveModel(RecordingModel):
    """A RecordingModel that decides to answer a query once its last frame is at one of ``at[query.id]``
    seconds; it records each decision and answer with the time of the last frame held."""

    proactive = True

    def __init__(self, at=None, fail_deciding_on=(), proactive=True):
        super().__init__()
        self.at, self.fail_deciding_on, self.proactive = at or {}, set(fail_deciding_on), proactive

    def wants_to_answer(self, query):
        self.calls.append(("decide", query.id, self.memory[-1][0]))
        if query.id in self.fail_deciding_on:
            raise RuntimeError("CUDA out of memory")
        return self.memory[-1][0] in self.at.get(query.id, ())

    def answer(self, query):
        self.calls.append(("answer", query.id, self.memory[-1][0]))
        return super().answer(query)


@pytest.fixture
def clip_1(data):
    """clip_1's queries at 2 fps (frames at 0, 0.5, ... 5.5): ``early`` (by 1 s) and ``late`` (by 6 s)
    forward, ``twin`` a second probe of ``late``'s question, ``other`` not forward; (folder, queries)."""
    folder, queries = data
    by_id = {q.id: q for q in queries}
    early = replace(by_id["demo/clip_1/2"], category="forward")
    late = replace(by_id["demo/clip_1/0"], category="forward")
    twin = replace(late, id="demo/clip_1/0b")
    return folder, {"early": early, "late": late, "twin": twin, "other": by_id["demo/clip_1/1"]}


def test_a_forward_query_is_decided_on_after_each_frame_and_answered_at_its_last_decision(clip_1, tmp_path):
    folder, q = clip_1
    model = ProactiveModel(at={q["late"].id: {0.5, 2.0}})
    run(model, list(q.values()), folder, tmp_path / "run", sampling=TWO_FPS)
    expected = [("reset",)]
    for t in (k / 2 for k in range(12)):
        expected.append(("add", (t,)))  # one frame at a time while a forward query waits
        expected += [("decide", q["early"].id, t)] if t < 1 else []
        expected.append(("decide", q["late"].id, t))  # once for late and its twin: the same question
        expected += [("answer", q["late"].id, t)] if t in (0.5, 2.0) else []
        expected += [("answer", q["early"].id, t)] if t == 0.5 else []  # never decided: asked at its time
    expected.append(("answer", q["other"].id, 5.5))
    assert model.calls == expected
    written = {r["id"]: r for r in records(tmp_path / "run")}
    late, twin, early, other = (written[q[name].id] for name in ("late", "twin", "early", "other"))
    assert late["decided_at"] == twin["decided_at"] == [0.5, 2.0]
    assert late["response"] == twin["response"] and late["response"].startswith("5 frames, last at 2.0")
    assert late["frame_times"] == [0.0, 0.5, 1.0, 1.5, 2.0] and late["frames"] == 5  # held at the decision
    assert early["decided_at"] == [] and early["response"].startswith("2 frames, last at 0.5")
    assert "decided_at" not in other and other["response"].startswith("12 frames")
    # each record pays for what the model did since the previous one: decisions and answers included
    assert "decide" in early["timings_ms"] and early["counts"]["new_tokens"] == 6  # late's at 0.5, its own
    assert sum(r["counts"].get("new_tokens", 0) for r in written.values()) == 3 * 4  # four answers given
    assert all(r["error"] is None for r in written.values())


def test_a_model_that_never_decides_answers_as_without_the_loop(clip_1, tmp_path):
    folder, q = clip_1
    run(ProactiveModel(), list(q.values()), folder, tmp_path / "never", sampling=TWO_FPS)
    run(RecordingModel(), list(q.values()), folder, tmp_path / "plain", sampling=TWO_FPS)
    never, plain = records(tmp_path / "never"), records(tmp_path / "plain")
    assert [r["response"] for r in never] == [r["response"] for r in plain]
    assert [r.get("decided_at") for r in never] == [[], [], [], None]  # early, late, twin, other


def test_only_a_proactive_model_is_asked_and_only_on_the_stream_schedule(clip_1, tmp_path):
    folder, q = clip_1
    model = ProactiveModel(at={q["late"].id: {0.5}}, proactive=False)  # as under any other protocol
    run(model, list(q.values()), folder, tmp_path / "off", sampling=TWO_FPS)
    assert not any(call[0] == "decide" for call in model.calls)
    assert [len(call[1]) for call in model.calls if call[0] == "add"] == [2, 10]  # batches, as before
    assert all("decided_at" not in r for r in records(tmp_path / "off"))
    with pytest.raises(ValueError, match="the proactive loop runs on the stream schedule"):
        run(ProactiveModel(), list(q.values()), folder, tmp_path / "clip", schedule="clip")


def test_a_failed_decision_is_recorded_on_its_question_s_queries_and_the_others_go_on(clip_1, tmp_path):
    folder, q = clip_1
    model = ProactiveModel(at={q["early"].id: {0.0}}, fail_deciding_on={q["late"].id})
    run(model, list(q.values()), folder, tmp_path / "run", sampling=TWO_FPS)
    written = {r["id"]: r for r in records(tmp_path / "run")}
    failed = "deciding to answer failed: RuntimeError: CUDA out of memory"
    assert written[q["late"].id]["error"] == written[q["twin"].id]["error"] == failed
    assert sum(call[:2] == ("decide", q["late"].id) for call in model.calls) == 1  # no longer asked
    assert written[q["early"].id]["decided_at"] == [0.0] and written[q["early"].id]["error"] is None
    assert written[q["early"].id]["response"].startswith("1 frames, last at 0.0")
    assert written[q["other"].id]["error"] is None


def test_stc_eval_runs_dispider_proactive_on_ovo_forward_probes(tmp_path):
    import torch
    from typer.testing import CliRunner

    from stc_cli.cli import app
    from stc_cli.scoring import score_results
    from tests.ovo_fixture import RECORDS, write_ovo
    from tests.videos import write_video

    # REC probes at 5 and 9 s of a 10 s video: random:tiny's 4-frame clips end at 3 and 7 s (1 fps)
    rec = {**RECORDS[2], "test_info": [{"realtime": 5, "count": 1}, {"realtime": 9, "count": 2}]}
    folder = write_ovo(tmp_path, [*RECORDS[:2], rec])
    for name, seconds in (("Ego4D/a.mp4", 12), ("Ego4D/b.mp4", 4), ("perception_test/c.mp4", 10)):
        write_video(folder / "src_videos" / name, frames=2 * seconds, fps=2, size=(40, 60))
    args = ["eval", "--model", "dispider", "--model-path", "random:tiny", "--bench", "ovo"]
    args += ["--protocol", "dispider-proactive", "--data-dir", str(tmp_path), "--max-new-tokens", "3"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: on two busy shared cores, OpenMP hand-offs cost more
    try:
        result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    written = {r["id"]: r for r in records(tmp_path / "run")}
    assert set(written) == {"ovo/0", "ovo/1", "ovo/2/0", "ovo/2/1"}
    assert all(r["error"] is None for r in written.values())
    assert "decided_at" not in written["ovo/0"] and "decided_at" not in written["ovo/1"]
    first, second = written["ovo/2/0"], written["ovo/2/1"]
    assert set(first["decided_at"]) <= {3.0} and set(second["decided_at"]) <= {3.0, 7.0}
    assert first["decided_at"] == second["decided_at"][: len(first["decided_at"])]  # one loop, one question
    for probe, last_frame in ((first, 4.0), (second, 8.0)):  # answered at the last decision, else at its time
        assert probe["frame_times"][-1] == (probe["decided_at"] or [last_frame])[-1]
    assert "decide" in first["timings_ms"]
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert settings["protocol"]["proactive"] is True and settings["protocol"]["clips"] == "video"
    report = score_results(tmp_path / "run")  # stc score reads the probes' answers as any others
    assert (report.bench, report.n_total, report.task_counts["REC"]) == ("ovo", 4, 2)
