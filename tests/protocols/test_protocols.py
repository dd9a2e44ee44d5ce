"""Named protocols: the registry, overrides, answer reading, and the exact text each protocol gives the
model for hand-written queries of every benchmark."""

import json
import shutil
from pathlib import Path

import pytest

from stc_cli import benchmarks, protocols
from stc_cli.benchmarks import ovo, streamingbench
from stc_cli.benchmarks.base import Query
from stc_cli.models.livecc import LiveCC
from stc_cli.models.livecc_clip import LiveCCClip
from stc_cli.models.rekv import texts
from stc_cli.protocols import resolve

FIXTURES = Path(__file__).parent / "fixtures"
OVO_METADATA = Path(__file__).parents[1] / "benchmarks" / "fixtures" / "ovo" / "ovo_bench_new.json"


def test_every_pair_has_one_default_and_names_are_unique_per_pair():
    pairs = {(p.model, p.bench) for p in protocols.PRESETS}
    assert pairs >= {(m, b) for m in ("rekv", "livecc") for b in ("ovo", "streamingbench", "demo")}
    for model, bench in pairs:
        names = [p.name for p in protocols.available(model, bench)]
        assert len(names) == len(set(names)) and resolve(model, bench).name == names[0]
    defaults = {(m, b): resolve(m, b).name for m, b in pairs}
    assert defaults[("rekv", "ovo")] == defaults[("rekv", "streamingbench")] == "stc-online"
    assert {defaults[("rekv", b)] for b in ("mlvu", "egoschema", "videomme")} == {"stc-offline"}
    assert defaults[("livecc", "ovo")] == "livecc-ovo" and defaults[("livecc", "mlvu")] == "livecc-stream"


def test_unknown_and_unfit_names_say_what_is_known():
    with pytest.raises(
        ValueError, match="unknown --protocol 'x' for --model rekv on --bench mlvu; known: stc-off"
    ):
        resolve("rekv", "mlvu", "x")
    with pytest.raises(
        ValueError, match="rekv-chat is for --model rekv --bench demo, --model rekv --bench ovo"
    ):
        resolve("livecc", "ovo", "rekv-chat")
    with pytest.raises(ValueError, match="no protocol for --model rekv on --bench nowhere"):
        resolve("rekv", "nowhere")


def test_overrides_are_remembered_and_none_keeps_the_setting():
    base = resolve("rekv", "ovo")
    assert base.override(fps=None, max_new_tokens=128) is base  # nothing changed
    changed = base.override(fps=0.5, max_new_tokens=None)
    assert (changed.fps, changed.changed) == (0.5, ("fps",))
    assert ("fps", "0.5", "changed by a flag") in changed.rows()
    assert set(base.settings()) & {"summary", "comparable", "sources"} == set()
    assert changed.settings()["changed"] == ("fps",) and base.settings()["changed"] == ()
    with pytest.raises(ValueError, match="--schedule must be one of auto, stream, clip, got 'live'"):
        base.override(schedule="live")


@pytest.mark.parametrize(
    ("reading", "response", "answer"),
    [
        ("last-line", "  Let me look.\nThe man waves.\nB\n\n", "B"),  # [STC] ovobench/models/rekv.py:53-54
        ("last-line", "\n  \n", ""),
        ("last-line", " A ", "A"),  # the stripped response's one line
        ("as-is", " A\nB ", " A\nB "),
    ],
)
def test_answer_reading(reading, response, answer):
    protocol = resolve("rekv", "ovo") if reading == "last-line" else resolve("rekv", "streamingbench")
    assert protocol.reading == reading and protocol.read(response) == answer


# -- the exact text each protocol gives the model, for hand-written queries of every benchmark ---------

OVO_MCQ = {
    "id": 7, "task": "STU", "video": "star/s2.mp4", "realtime": 11,
    "question": "Is the lamp left of the bed?", "options": ["Yes", "No"], "gt": 1,
}  # fmt: skip
OVO_MCQ_PROMPT = (
    "\nQuestion: Is the lamp left of the bed?\nOptions:\nA. Yes; B. No;\n\n"
    "Respond only with the letter corresponding to your chosen option (e.g., A, B, C). \n"
    "Do not include any additional text or explanation in your response.\n"
)
SB_PROMPT = (
    "You are an advanced video question-answering AI assistant. You have been provided with some frames from "
    "the video and a multiple-choice question related to the video. Your task is to carefully analyze the "
    "video and provide the best answer to question, choosing from the four options provided. Respond with "
    "only the letter (A, B, C, or D) of the correct option.\n\nQuestion: What is on the table?\n\nOptions:\n"
    "A. A cup.\nB. A plate.\nC. A fork.\nD. A knife.\n\nThe best option is:"
)


def ovo_query(tmp_path, record=OVO_MCQ):
    (tmp_path / "ovo").mkdir(exist_ok=True)
    (tmp_path / "ovo" / "ovo_bench_new.json").write_text(json.dumps([record]))
    return ovo.load_queries(tmp_path)[0]


def sb_query(tmp_path):
    segment = {
        "video_path": "./videos/sample_1_real.mp4",
        "questions": [
            {"task_type": "Object Perception", "question": "What is on the table?", "time_stamp": "00:00:30",
             "options": ["A cup.", "A plate.", "A fork.", "A knife."], "answer": "B"}
        ],
    }  # fmt: skip
    (tmp_path / "streamingbench").mkdir()
    (tmp_path / "streamingbench" / "questions_real.json").write_text(json.dumps([segment]))
    return streamingbench.load_queries(tmp_path)[0]


def offline_query(bench, options):
    return Query(
        id=f"{bench}/1", bench=bench, task="t", category="c", video="v.mp4", window=(0.0, float("inf")),
        prompt="the benchmark's own prompt", options=options, target="B", question="What color is the cup?",
    )  # fmt: skip


def put(model, bench, name, query):
    """``(retrieval text, prefill text)`` of ReKV under the protocol, for ``query`` as it prepares it."""
    return texts(resolve(model, bench, name), resolve(model, bench, name).prepare(query))


def test_rekv_on_ovo_and_streamingbench_prefills_the_benchmark_prompt_as_it_is(tmp_path):
    mcq = ovo_query(tmp_path)
    assert mcq.prompt == OVO_MCQ_PROMPT
    assert put("rekv", "ovo", "stc-online", mcq) == (OVO_MCQ_PROMPT, OVO_MCQ_PROMPT)
    chat = "\n" + OVO_MCQ_PROMPT + "<|im_end|><|im_start|>assistant\nBest option: ("
    assert put("rekv", "ovo", "rekv-chat", mcq) == (OVO_MCQ_PROMPT, chat)
    sb = sb_query(tmp_path)
    assert put("rekv", "streamingbench", "stc-online", sb) == (SB_PROMPT, SB_PROMPT)


@pytest.mark.parametrize(
    ("bench", "options", "listed"),
    [
        ("mlvu", ("Red", "Blue"), "(A) Red\n(B) Blue"),
        ("egoschema", ("C paints", "C washes"), "(A) C paints\n(B) C washes"),
        ("videomme", ("A. Red.", "B. Blue."), "(A) A. Red.\n(B) B. Blue."),  # as in STC's new_videomme.json
    ],
)
def test_rekv_offline_retrieves_with_the_question_and_prefills_stc_s_template(bench, options, listed):
    prefill = (
        f"\nQuestion: What color is the cup?\nOptions:\n{listed}\nOnly give the best option."
        "<|im_end|><|im_start|>assistant\nBest option: ("
    )
    assert put("rekv", bench, "stc-offline", offline_query(bench, options)) == (
        "What color is the cup?",
        prefill,
    )


def test_videomme_prompt_is_the_official_prompt_in_stc_s_chat_turn():
    query = offline_query("videomme", ("A. Red.", "B. Blue."))
    chat = "\nthe benchmark's own prompt<|im_end|><|im_start|>assistant\nBest option: ("
    assert put("rekv", "videomme", "videomme-prompt", query) == ("What color is the cup?", chat)


def livecc_queries(tmp_path):
    (tmp_path / "ovo").mkdir()
    shutil.copy(OVO_METADATA, tmp_path / "ovo")
    return [resolve("livecc", "ovo").prepare(q) for q in benchmarks.get("ovo").load_queries(tmp_path)]


def test_livecc_ovo_texts_windows_and_targets_are_livecc_s_own(tmp_path):
    """Against what LiveCC's transfer_annotation_format.py wrote for the same metadata
    (``fixtures/livecc_ovo_formatted.jsonl``, produced by running that upstream file unchanged)."""
    formatted = [
        json.loads(line) for line in (FIXTURES / "livecc_ovo_formatted.jsonl").read_text().splitlines()
    ]
    queries = livecc_queries(tmp_path)
    assert len(queries) == len(formatted) == 21
    for query, datum in zip(queries, formatted, strict=True):
        if datum["task"] in ("REC", "SSR", "CRR"):
            text = datum["question"]
        else:  # distributed_evaluate_ovobench.py:94 with its postfix (:135)
            text = (
                datum["question"] + "\n" + "\n".join(datum["options"]) + "\nPlease select the correct answer."
            )
        assert query.prompt == text, query.id
        assert query.window == (datum["video_start"], datum["video_end"]), query.id
        assert query.target == datum["answer"], query.id


def test_livecc_turns_around_the_prompt(tmp_path):
    from stc_cli.models import qwen2vl
    from stc_cli.models.base import STCSettings

    query, qwen, off = livecc_queries(tmp_path)[0], qwen2vl.build_random("tiny"), STCSettings(False, False)
    clip = LiveCCClip(qwen, off, protocol=resolve("livecc", "ovo"))
    assert clip.question_text(query) == query.prompt + "<|im_end|>\n<|im_start|>assistant\nThe answer is:\n"
    stream = LiveCC(qwen, off, protocol=resolve("livecc", "ovo", "livecc-stream"))
    assert (
        stream.question_text(query) == f"<|im_start|>user\n{query.prompt}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_every_protocol_is_documented_with_its_pair():
    doc = (Path(__file__).parents[2] / "docs" / "protocols.md").read_text()
    rows = [
        line
        for line in doc.splitlines()
        if line.startswith(("| rekv", "| livecc", "| streamforest", "| dispider", "| qwen"))
    ]
    for protocol in protocols.PRESETS:
        assert any(f"`{protocol.name}`" in row and row.startswith(f"| {protocol.model} ") for row in rows), (
            protocol.name
        )


def test_simplestream_picks_frames_as_qwen_vl_utils_and_scores_as_its_numbers_were():
    from typer.testing import CliRunner

    from stc_cli.cli import app
    from stc_cli.video import Sampling

    for model in ("qwen3vl", "qwen25vl"):
        for bench, scorer in (("ovo", "official"), ("streamingbench", "official"), ("demo", "robust")):
            protocol = resolve(model, bench)
            assert protocol.sampling_rule() == Sampling(1.0, "uniform_index", 768)
            assert protocol.scorer == scorer, (model, bench)
        assert resolve(model, "ovo", "simplestream-mrope").scorer == "robust"  # nothing published
    options = ("A. red", "B. blue", "C. green", "D. grey")
    sb = Query(
        "streamingbench/sample_1/1", "streamingbench", "Counting", "c", "v.mp4", (0.0, 95.0), "", options, "A"
    )
    # upstream decodes [t - 4, t + 1e-4] (eval_streamingbench.py:213-223)
    assert resolve("qwen3vl", "streamingbench").prepare(sb).window == (91.0, 95.0 + 1e-4)
    shown = CliRunner().invoke(app, ["eval", "--model", "qwen3vl", "--bench", "ovo", "--show-protocol"])
    text = " ".join(shown.stdout.split())
    assert "sampling │ uniform_index │ [SS] lib/recent_window_eval.py:428-533" in text
    assert "scorer │ official │ [SS] README.md:159-164 scores with" in text  # the table folds the rest
    assert "stc score --mode official (OVO-Bench's score.py, as SimpleStream's README scores)" in text
    shown = CliRunner().invoke(
        app, ["eval", "--model", "qwen3vl", "--bench", "streamingbench", "--show-protocol"]
    )
    text = " ".join(shown.stdout.split())
    assert "scorer │ official │ SimpleStream's: [SS]" in text
    assert "stc score --mode official (SimpleStream's own answer reading)" in text
