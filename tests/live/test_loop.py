"""The stream loop on a clock that moves only when the (fake) model works or the feed waits: drop vs
queue, question order, lag and latency, to the exact number."""

import math
import time

import pytest

from stc_cli.live.feed import AHEAD, Feed, Reader, SystemClock
from stc_cli.live.loop import Sink, StreamLoop
from stc_cli.live.questions import Question, to_query
from tests.live.fakes import FakeClock, ListSource, TimedModel


class Recorder(Sink):
    def __init__(self):
        self.frames, self.answers, self.ticks = [], [], 0

    def frame(self, event):
        self.frames.append(event)

    def answer(self, event):
        self.answers.append(event)

    def tick(self, stats, stream_now):
        self.ticks += 1


def play(source, model, clock, mode="paced", speed=1.0, fps=1.0, questions=(), when_behind="drop"):
    reader = Reader(
        source.frames(fps),
        bound=None if mode == "live" else AHEAD,
        stamp=clock.now,
        end=lambda: source.end,
        close=source.close,
    )
    feed = Feed(reader, mode, speed=speed, clock=clock)
    sink = Recorder()
    loop = StreamLoop(
        model,
        feed,
        lambda q, n: to_query(q, n, "fake"),
        sink=sink,
        questions=list(questions),
        when_behind=when_behind,
    )
    return loop, sink


TEN = [float(t) for t in range(10)]  # 1 fps, 10 s


def test_drop_skips_the_oldest_waiting_frames_to_stay_live():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=2.5)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, when_behind="drop")
    summary = loop.run()
    # 0 -> 2.5 s; then 1, 2 waiting: 1 dropped; 2 -> 5.0; 3, 4, 5 waiting; 5 -> 7.5; 6, 7; 7 -> 10; 8, 9
    assert model.times == [0, 2, 5, 7, 9]
    assert [e["t"] for e in sink.frames if e["status"] == "dropped"] == [1, 3, 4, 6, 8]
    assert (summary["frames_in"], summary["frames_encoded"], summary["frames_dropped"]) == (10, 5, 5)
    assert [e["lag_s"] for e in sink.frames if e["status"] == "encoded"] == [2.5, 3.0, 2.5, 3.0, 3.5]
    assert summary["max_lag_s"] == 3.5
    assert (summary["stream_seconds"], summary["wall_seconds"], summary["real_time_factor"]) == (
        10.0,
        12.5,
        0.8,
    )
    assert summary["ended"] == "end" and summary["reason"] is None and loop.feed.reader._queue.empty()


def test_queue_encodes_every_frame_and_the_lag_grows():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=2.5)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, when_behind="queue")
    summary = loop.run()
    assert model.times == TEN
    assert (summary["frames_encoded"], summary["frames_dropped"]) == (10, 0)
    # frame k is done at 2.5 (k + 1): its lag is 2.5 + 1.5 k
    assert [e["lag_s"] for e in sink.frames] == [2.5 + 1.5 * k for k in range(10)]
    assert (summary["max_lag_s"], summary["wall_seconds"], summary["real_time_factor"]) == (16.0, 25.0, 0.4)


def test_a_model_that_keeps_up_plays_the_file_in_real_time():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=0.25)
    summary = play(ListSource(TEN, end=10.0), model, clock)[0].run()
    assert (summary["frames_encoded"], summary["frames_dropped"], summary["max_lag_s"]) == (10, 0, 0.25)
    assert summary["wall_seconds"] == pytest.approx(10.0)  # waits for the end of the last frame's second
    assert summary["ms_per_frame"] == {"vit": 250.0, "prefill": 1.0}
    assert summary["visual_tokens_per_frame"] == {"in": 16.0, "kept": 5.0}


def test_speed_2_plays_twice_as_fast():
    clock = FakeClock()
    summary = play(ListSource(TEN, end=10.0), TimedModel(clock), clock, speed=2.0)[0].run()
    assert (summary["stream_seconds"], summary["frames_encoded"]) == (10.0, 10)
    assert summary["wall_seconds"] == pytest.approx(5.0)


def test_speed_0_takes_each_frame_when_the_model_is_ready_and_drops_nothing():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=2.5)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, mode="free", when_behind="drop")
    summary = loop.run()
    assert model.times == TEN
    assert (summary["frames_dropped"], summary["max_lag_s"], summary["wall_seconds"]) == (0, 2.5, 25.0)
    assert summary["real_time_factor"] == 0.4


def test_a_question_sees_the_frames_up_to_its_time_and_waits_for_them():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=2.5, answer_s=0.5)
    ask = Question("What now?", (), 3.5)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, questions=[ask])
    summary = loop.run()
    (answer,) = sink.answers
    # at 5.0 frames 3, 4, 5 wait: 3 (before the question) is encoded, then the question is answered
    assert answer["answer"] == "0,2,3" and answer["t"] == 3.5 and answer["frames_encoded"] == 3
    assert answer["latency_ms"] == 4500.0  # asked at 3.5 s, answered at 8.0 s
    assert answer["answer_ms"] == 500.0 and "note" not in answer
    assert model.times == [0, 2, 3, 8, 9] and summary["frames_dropped"] == 5  # at 8.0: 4 to 8 wait
    assert summary["answer_latency_ms"] == {"p50": 4500.0, "p95": 4500.0}


def test_a_frame_at_the_question_time_is_seen_and_questions_go_in_time_order():
    clock = FakeClock()
    model = TimedModel(clock)
    questions = [Question("second", (), 5.0), Question("first", ("a", "b"), 2.0), Question("also 5", (), 5.0)]
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, questions=questions)
    loop.run()
    assert [(e["question"], e["answer"]) for e in sink.answers] == [
        ("first", "0,1,2"),
        ("second", "0,1,2,3,4,5"),
        ("also 5", "0,1,2,3,4,5"),
    ]
    assert [e["latency_ms"] for e in sink.answers] == [0.0, 0.0, 0.0]  # asked and answered at once
    assert model.queries[0].options == ("a", "b") and "B. b" in model.queries[0].prompt


def test_a_question_beyond_the_end_is_answered_at_the_end_with_a_note():
    clock = FakeClock()
    loop, sink = play(
        ListSource(TEN, end=10.0), TimedModel(clock), clock, questions=[Question("late?", (), 40.0)]
    )
    summary = loop.run()
    (answer,) = sink.answers
    assert (answer["t"], answer["asked_t"], answer["answer"]) == (10.0, 40.0, "0,1,2,3,4,5,6,7,8,9")
    assert answer["note"] == "asked for 40 s; the stream ended at 10.0 s: answered at the end"
    assert summary["answers"] == 1 and summary["unanswered"] == 0


def test_a_question_asked_meanwhile_is_put_at_the_stream_time_of_that_moment():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=1.0)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, when_behind="queue")
    real_add = model.add_frames

    def add_and_ask(frames, times):  # typed while the model works on the frame at 4 s (4.0 to 5.0), at 4.5
        step = real_add(frames, times)
        if times == (4.0,):
            clock.t -= 0.5
            loop.ask(Question("typed", origin="stdin"), clock.now())
            clock.t += 0.5
        return step

    model.add_frames = add_and_ask
    loop.run()
    (answer,) = sink.answers
    # answered when the frames up to 4.5 s are in (at 5.0), before the frame at 5 s
    assert answer["t"] == 4.5 and answer["answer"] == "0,1,2,3,4" and answer["latency_ms"] == 500.0
    assert answer["origin"] == "stdin"


def test_livecc_style_pairs_report_lag_when_the_pair_is_encoded():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=0.25, pairs=True)
    loop, sink = play(ListSource([float(t) for t in range(5)], end=5.0), model, clock, when_behind="queue")
    summary = loop.run()
    assert [e["status"] for e in sink.frames] == ["waiting", "encoded"] * 2 + ["waiting"]
    # frame 0 arrived at 0 and frame 1 at 1: the pair is in at 1.25; the event gives the older frame's lag
    assert [e["lag_s"] for e in sink.frames] == [None, 1.25, None, 1.25, None]
    assert summary["max_lag_s"] == 1.25
    assert (summary["frames_in"], summary["frames_encoded"], summary["frames_waiting"]) == (5, 4, 1)


def test_a_broken_source_ends_with_its_reason_and_the_questions_still_answered():
    clock = FakeClock()
    source = ListSource(TEN, end=10.0, fail_at=4.0)
    loop, sink = play(source, TimedModel(clock), clock, questions=[Question("after?", (), 6.0)])
    summary = loop.run()
    assert summary["ended"] == "broken" and summary["reason"] == "fake broke at 4.0 s: Input/output error"
    assert summary["frames_encoded"] == 4 and source.closed
    assert sink.answers[0]["answer"] == "0,1,2,3" and "note" in sink.answers[0]


def test_ctrl_c_ends_the_loop_with_a_summary():
    clock = FakeClock()
    model = TimedModel(clock, frame_s=0.5)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, questions=[Question("never", (), 9.0)])
    real_add = model.add_frames

    def interrupted(frames, times):
        if times == (3.0,):
            raise KeyboardInterrupt
        return real_add(frames, times)

    model.add_frames = interrupted
    summary = loop.run()
    assert (summary["ended"], summary["reason"]) == ("interrupted", "interrupted (Ctrl-C)")
    assert (summary["frames_encoded"], summary["unanswered"], summary["answers"]) == (3, 1, 0)
    assert summary["stream_seconds"] == 3.0 and loop.feed.reader._stop.is_set()


def test_a_model_failure_ends_the_stream_and_a_failed_answer_does_not():
    clock = FakeClock()
    model = TimedModel(clock)
    loop, sink = play(ListSource(TEN, end=10.0), model, clock, questions=[Question("q", (), 1.0)])

    def no_answer(query):
        raise RuntimeError("CUDA out of memory")

    def no_frame(frames, times):
        if times == (5.0,):
            raise RuntimeError("CUDA error: device lost")
        return TimedModel.add_frames(model, frames, times)

    model.answer, model.add_frames = no_answer, no_frame
    summary = loop.run()
    assert (
        sink.answers[0]["answer"] is None and sink.answers[0]["error"] == "RuntimeError: CUDA out of memory"
    )
    assert summary["answer_errors"] == 1 and summary["answers"] == 0
    assert summary["ended"] == "failed"
    assert summary["reason"] == "the model failed on the frame at 5.0 s: CUDA error: device lost"


def test_a_live_source_is_read_at_its_own_pace_and_drop_keeps_up():
    """Real time: frames every 20 ms, the model 100 ms per frame. Whatever the machine's speed, frames
    arrive while the model works, so drop drops and queue does not."""
    times = [t / 50 for t in range(20)]
    results = {}
    for when_behind in ("drop", "queue"):
        model = TimedModel(SystemClock, frame_s=0.1, sleep=time.sleep)
        source = ListSource(times, end=0.4, live=True, gap_s=0.02)
        loop, sink = play(source, model, SystemClock, mode="live", fps=50.0, when_behind=when_behind)
        results[when_behind] = loop.run()
    drop, queue = results["drop"], results["queue"]
    assert drop["frames_in"] == queue["frames_in"] == 20
    assert drop["frames_dropped"] >= 1 and drop["frames_encoded"] + drop["frames_dropped"] == 20
    assert (queue["frames_dropped"], queue["frames_encoded"]) == (0, 20)
    assert math.isclose(queue["stream_seconds"], 0.4) and queue["ended"] == "end"
    assert queue["reason"] == "the live source ended at 0.4 s"
