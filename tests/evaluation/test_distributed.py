import json
import threading
import time
from pathlib import Path

import pytest

from stc_cli.evaluation.distributed import Shard, done_key, heartbeat, mark_done, wait_for_ranks
from stc_cli.evaluation.runner import run
from stc_cli.video import Sampling
from tests.toy_model import ToyModel, answers, make_videos, torchrun, toy_queries, untimed

TWO_FPS = Sampling(2.0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("toy"))


def launch(world: int, video_root: Path, output: Path, *options: str) -> list[dict]:
    """Run the toy queries under torchrun over ``world`` CPU processes; the ranks' summaries, by rank."""
    done = torchrun(world, "-m", "tests.toy_model", str(video_root), str(output), *options)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return sorted(summaries, key=lambda summary: summary["rank"])


def in_turn(output: Path, world: int, launch_id: str, videos: Path, overwrite: bool = False) -> list:
    """A sharded run in this process: the other ranks first, so that rank 0 finds their markers."""
    shards = [Shard(rank, world, launch_id) for rank in [*range(1, world), 0]]
    return [
        run(ToyModel(), toy_queries(), videos, output, sampling=TWO_FPS, overwrite=overwrite, shard=s)
        for s in shards
    ]


def test_videos_go_round_robin_in_first_appearance_order():
    videos = ["v2", "v0", "gone", "v1", "v3", "v4"]  # the toy queries' videos in first-appearance order
    assert [Shard(r, 2).take(videos) for r in range(2)] == [["v2", "gone", "v3"], ["v0", "v1", "v4"]]
    assert [Shard(r, 3).take(videos) for r in range(3)] == [["v2", "v1"], ["v0", "v3"], ["gone", "v4"]]
    assert Shard(3, 4).take(["a", "b"]) == []  # more processes than videos: the last ones idle


def test_shard_from_torchrun_variables():
    assert Shard.from_env({}) == Shard(0, 1, "")
    env = {"RANK": "3", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "f00d", "TORCHELASTIC_RESTART_COUNT": "1"}
    assert Shard.from_env({**env, "LOCAL_RANK": "1"}) == Shard(3, 4, "f00d.1", local_rank=1)
    assert Shard.from_env(env).local_rank == 3  # started by hand on one machine
    assert Shard.from_env({**env, "TORCHELASTIC_RUN_ID": "none"}).launch == ""  # no id: older torchrun


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'one'"),
        ({"RANK": "0", "WORLD_SIZE": ""}, "WORLD_SIZE must be an integer, got ''"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is 2 but RANK is not set"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 is outside a world of 2 processes"),
    ],
)
def test_bad_torchrun_variables_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        Shard.from_env(env)


def test_two_processes_under_torchrun_write_what_one_process_writes(videos, tmp_path):
    run(ToyModel(), toy_queries(), videos, tmp_path / "one", sampling=TWO_FPS)
    summaries = launch(2, videos, tmp_path / "two")
    assert untimed(tmp_path / "two") == untimed(tmp_path / "one") and len(untimed(tmp_path / "one")) == 10
    counts = [
        {k: s[k] for k in ("rank", "n_queries", "n_skipped", "n_written", "n_errors")} for s in summaries
    ]
    assert counts == [  # rank 0 sums up the whole run; rank 1 its shard (v0, v1, v4)
        {"rank": 0, "n_queries": 10, "n_skipped": 0, "n_written": 10, "n_errors": 1},
        {"rank": 1, "n_queries": 5, "n_skipped": 0, "n_written": 5, "n_errors": 0},
    ]
    shards = tmp_path / "two" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [
        ".lock.rank1",  # rank 1's lock (rank 0 holds the folder's .lock, as a one-process run does)
        "rank0.done",
        "rank1.done",
        "samples.rank0.jsonl",
        "samples.rank1.jsonl",
    ]
    videos_of = lambda name: {json.loads(line)["video"] for line in untimed(shards, name)}  # noqa: E731
    assert videos_of("samples.rank0.jsonl") == {"v2.mp4", "gone.mp4", "v3.mp4"}
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world"] == 2
    assert not (tmp_path / "one" / "shards").exists()


def test_each_shard_resumes_on_its_own(videos, tmp_path):
    run(ToyModel(), toy_queries(), videos, tmp_path / "one", sampling=TWO_FPS)
    output = tmp_path / "two"
    in_turn(output, 2, "first", videos)
    part = output / "shards" / "samples.rank1.jsonl"
    part.write_text(part.read_text().splitlines(keepends=True)[0] + '{"id": "toy/1", "resp')  # killed
    rank1, rank0 = in_turn(output, 2, "second", videos)
    assert (rank1.n_queries, rank1.n_skipped, rank1.n_written) == (5, 1, 4)
    # the query of the missing video failed in the first launch: it is tried again (and fails again)
    assert (rank0.n_queries, rank0.n_skipped, rank0.n_written, rank0.n_errors) == (10, 5, 5, 1)
    assert rank0.n_retried == 1
    assert answers(output) == answers(tmp_path / "one")


def test_a_rerun_over_other_queries_answers_none_twice(videos, tmp_path):
    output = tmp_path / "run"
    in_turn(output, 2, "first", videos)
    reordered = toy_queries()[::-1]  # videos v2, v1, v4, v3, v0, gone: rank 1 now has v3 and gone of rank 0
    summaries = [
        run(ToyModel(), reordered, videos, output, sampling=TWO_FPS, shard=Shard(rank, 2, "second"))
        for rank in (1, 0)
    ]
    assert [(s.n_skipped, s.n_written) for s in summaries] == [(4, 0), (10, 0)]
    assert sorted(r[0] for r in answers(output)) == sorted(q.id for q in reordered)


def test_a_run_resumes_only_over_as_many_processes(videos, tmp_path):
    run(ToyModel(), toy_queries(), videos, tmp_path / "one", sampling=TWO_FPS)
    output = tmp_path / "run"
    in_turn(output, 2, "first", videos)
    for shard in (Shard(0, 3), Shard(2, 3), Shard()):
        with pytest.raises(ValueError, match=rf"split over 2 processes, not {shard.world}: .* --overwrite"):
            run(ToyModel(), toy_queries(), videos, output, sampling=TWO_FPS, shard=shard)
    in_turn(output, 3, "second", videos, overwrite=True)
    assert untimed(output) == untimed(tmp_path / "one")
    assert len(list((output / "shards").glob("[!.]*"))) == 6  # three shards, three markers (and locks)
    summary = run(ToyModel(), toy_queries(), videos, output, sampling=TWO_FPS, overwrite=True)
    assert summary.n_written == 10 and not list((output / "shards").glob("[!.]*"))
    assert untimed(output) == untimed(tmp_path / "one")


def test_rank_0_waits_while_the_others_write_and_names_a_rank_that_stalls(tmp_path):
    keys = [done_key("now", 0), done_key("now", 1)]
    mark_done(Shard(0, 2), tmp_path, keys[0], {})
    mark_done(Shard(1, 2), tmp_path, done_key("an earlier launch", 1), {})  # stale: does not count
    with pytest.raises(
        TimeoutError, match=r"rank 1 of 2 did not finish: no record and no heartbeat in .*shards"
    ):
        wait_for_ranks(tmp_path, keys, stall_s=0.3, poll_s=0.05)

    def rank_1():  # writes a record every 0.1 s for 0.8 s, longer than the stall limit, then finishes
        with open(Shard(1, 2).samples(tmp_path), "a") as sink:
            for _ in range(8):
                time.sleep(0.1)
                sink.write("{}\n")
                sink.flush()
        mark_done(Shard(1, 2), tmp_path, keys[1], {"n_written": 8})

    started, writer = time.monotonic(), threading.Thread(target=rank_1)
    writer.start()
    markers = wait_for_ranks(tmp_path, keys, stall_s=0.5, poll_s=0.05)
    writer.join()
    assert markers[1] == {"key": keys[1], "n_written": 8} and time.monotonic() - started >= 0.8


def test_a_rank_busy_on_one_long_video_keeps_rank_0_waiting_by_its_heartbeat(tmp_path):
    keys = [done_key("now", 0), done_key("now", 1)]
    mark_done(Shard(0, 2), tmp_path, keys[0], {})

    def rank_1():  # no record for 0.8 s (one long video), longer than the stall limit, then done
        with heartbeat(Shard(1, 2), tmp_path, every_s=0.1):
            time.sleep(0.8)
        mark_done(Shard(1, 2), tmp_path, keys[1], {"n_written": 1})

    started, worker = time.monotonic(), threading.Thread(target=rank_1)
    worker.start()
    markers = wait_for_ranks(tmp_path, keys, stall_s=0.4, poll_s=0.05)
    worker.join()
    assert markers[1]["n_written"] == 1 and time.monotonic() - started >= 0.8
