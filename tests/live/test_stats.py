"""The running totals and the summary event."""

from stc_cli.live.stats import Stats, percentile


def test_percentile_interpolates_between_ranks_as_numpy():
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([10.0 * i for i in range(1, 21)], 95) == 190.5


def test_the_summary_event_fields():
    stats = Stats(frames_in=10, frames_fed=9, frames_encoded=8, frames_dropped=1, busy_s=1.5)
    for lag in (0.2, 0.9, 0.4):
        stats.add_lag(lag)
    stats.add_step(
        {"vit": 80.0, "compress": 8.0, "prefill": 16.0, "answer": 99.0},
        {"visual_tokens_in": 128, "visual_tokens_kept": 40},
    )
    stats.latencies_ms += [100.0, 300.0, 200.0]
    stats.held_start, stats.held_bytes = 1000, 1000 + 3600
    summary = stats.summary(stream_seconds=10.0, wall_seconds=8.0, ended="end", reason=None)
    assert summary == {
        "event": "summary",
        "ended": "end",
        "reason": None,
        "stream_seconds": 10.0,
        "wall_seconds": 8.0,
        "real_time_factor": 1.25,
        "frames_in": 10,
        "frames_encoded": 8,
        "frames_dropped": 1,
        "frames_waiting": 1,
        "frames_missed": 0,
        "reconnects": 0,
        "max_lag_s": 0.9,
        "busy_seconds": 1.5,
        "answers": 3,
        "answer_errors": 0,
        "unanswered": 0,
        "answer_latency_ms": {"p50": 200.0, "p95": 290.0},
        "ms_per_frame": {"vit": 10.0, "compress": 1.0, "prefill": 2.0},
        "visual_tokens_per_frame": {"in": 16.0, "kept": 5.0},
        "memory": {
            "held_bytes": 4600,
            "held_growth_bytes_per_stream_hour": 1_296_000,  # 3600 bytes in 10 s
            "rss_bytes": None,
            "peak_rss_bytes": None,
        },
    }
    assert stats.lag_s == 0.4


def test_an_empty_stream():
    summary = Stats().summary(stream_seconds=0.0, wall_seconds=0.0, ended="broken", reason="x")
    assert summary["real_time_factor"] is None and summary["answer_latency_ms"] == {"p50": None, "p95": None}
    assert summary["ms_per_frame"] == {} and summary["visual_tokens_per_frame"] == {"in": None, "kept": None}
