"""Long streams stay bounded: what the loop and each model keep, at --speed 0 over synthetic streams."""

import pytest

from stc_cli.configs import EvalConfig, StreamConfig
from stc_cli.live import session
from stc_cli.live.loop import Sink
from stc_cli.live.memory import held_bytes, rss_bytes, size
from tests.live.fakes import SyntheticSource


class Sampler(Sink):
    """Every ``every`` frames: (frames handed, bytes the model holds, resident bytes)."""

    def __init__(self, model, every: int):
        self.model, self.every, self.n, self.rows = model, every, 0, []

    def frame(self, event):
        self.n += 1
        if self.n % self.every == 0:
            self.rows.append((self.n, held_bytes(self.model), rss_bytes()))


def streamed(model_config: EvalConfig, source, every: int):
    prepared = session.prepare(StreamConfig(source="synthetic", model=model_config, speed=0, stdin=False))
    model = session.build_model(prepared)
    session.warm_up(model)
    sampler = Sampler(model, every)
    return model, sampler, session.stream(prepared, model, source, sampler)


def test_rekv_grows_by_its_blocks_alone_and_the_process_levels_off():
    """ReKV keeps every frame's KV block by design (host memory; its representative key on the device),
    so its memory grows by exactly that per frame once the window is full; the process does not grow by
    the frames that pass (518 KB each: 104 MB over the second half of 400), only by those blocks."""
    config = EvalConfig(model="rekv", model_path="random:tiny", n_local=50)  # a window of 10 frames
    model, sampler, summary = streamed(config, SyntheticSource(400, 1.0, size=(360, 480)), every=100)
    lm = model.lm.config
    head = lm.hidden_size // lm.num_attention_heads
    block = 2 * model.budget * lm.num_key_value_heads * head * 4  # K and V of the kept tokens, float32
    representative = lm.num_attention_heads * head * 4
    pruner = model.pruner.channel_ratio * lm.hidden_size * 4  # STC-Pruner's chunk mean (unbounded history)
    per_frame = lm.num_hidden_layers * (block + representative) + pruner
    held = [row[1] for row in sampler.rows]
    assert [b - a for a, b in zip(held, held[1:], strict=False)] == [100 * per_frame] * 3
    counts = (summary["frames_encoded"], summary["frames_dropped"], summary["stream_seconds"])
    assert counts == (400, 0, 400.0)
    assert summary["memory"]["held_growth_bytes_per_stream_hour"] > 3600 * per_frame  # the window filling too
    rss = {n: r for n, _, r in sampler.rows}
    assert rss[400] - rss[200] < 20_000_000 + 200 * per_frame, size(rss[400] - rss[200])


def test_rekv_with_max_blocks_and_a_pruner_window_levels_off():
    """The caps for streams of hours: --max-blocks 20 keeps the last 20 frames' blocks, --pruner-window 8
    the pruner's last 8 chunk means. Past the window's 10 frames and 20 blocks the model holds the same
    bytes at every frame: nothing grows with the stream."""
    config = EvalConfig(model="rekv", model_path="random:tiny", n_local=50, max_blocks=20, pruner_window=8)
    model, sampler, summary = streamed(config, SyntheticSource(400, 1.0), every=50)
    held = [row[1] for row in sampler.rows]  # at frames 50, 100, ..., 400
    assert held == [held[0]] * 8
    assert all(len(memory.blocks) == 20 for memory in model.llm.memory)
    assert len(model.pruner.history) == 8
    assert summary["frames_encoded"] == 400 and summary["memory"]["held_bytes"] == held[0]


def test_livecc_with_max_cache_tokens_holds_a_bounded_cache():
    """LiveCC's cache stays under --max-cache-tokens for a stream of any length; what still grows is
    STC-Pruner's history of chunk means (one per chunk)."""
    config = EvalConfig(model="livecc", model_path="random:tiny", max_cache_tokens=200)
    model, sampler, summary = streamed(config, SyntheticSource(400, 2.0), every=50)
    lm = model.lm.config
    per_token = (
        2 * lm.num_hidden_layers * lm.num_key_value_heads * (lm.hidden_size // lm.num_attention_heads) * 4
    )
    cache = held_bytes(model) - model.pruner.state_nbytes() - model.cacher.state_nbytes()
    assert sum(model.segments) <= 200 and cache == sum(model.segments) * per_token
    held = [row[1] for row in sampler.rows[2:]]  # past the first 100 frames the cache is full
    assert max(held) - min(held) < 200 * per_token
    assert summary["frames_encoded"] == 400 and summary["ended"] == "end"


@pytest.mark.parametrize("model_name", ["rekv", "livecc"])
def test_stc_holds_less_per_frame(model_name):
    """The memory's slope (bytes per frame from frame 10 to 40; STC's bounded state is in by then)."""
    slope = {}
    for stc in (True, False):
        config = EvalConfig(model=model_name, model_path="random:tiny", stc=stc)
        _, sampler, _ = streamed(config, SyntheticSource(40, 2.0), every=10)
        slope[stc] = (sampler.rows[-1][1] - sampler.rows[0][1]) / 30
    assert slope[False] > slope[True] > 0
