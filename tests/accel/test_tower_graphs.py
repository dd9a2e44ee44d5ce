import copy

import pytest
import torch

from stc_cli.accel import GraphReplay, OpCensus, TowerGraphs, compile_layers
from stc_cli.compress import STCCacher, ToMe
from tests.compress.models import moving_frames, tiny_siglip


def hidden_states(tower):
    return lambda pixels: tower(pixel_values=pixels, output_hidden_states=True).hidden_states


def test_on_cpu_it_calls_the_tower_as_it_is():
    tower, cacher = tiny_siglip(), STCCacher(interval=2)
    copied = copy.deepcopy(tower)
    cacher.attach(tower)
    eager_cacher = STCCacher(interval=2).attach(copied)
    graphs = TowerGraphs(hidden_states(tower), cacher)
    with torch.inference_mode():
        for pixels in moving_frames(4).split(1):
            got, want = graphs(pixels), hidden_states(copied)(pixels)
            assert len(got) == len(want) == 4  # embeddings and 3 layers
            for g, w in zip(got, want, strict=True):
                assert torch.equal(g, w)
    assert (graphs.graphs, graphs.replays) == (0, 0)
    assert cacher.selected[0].shape == eager_cacher.selected[0].shape == (1, 4)


@pytest.mark.parametrize("side", ["stock", "stc", "tome"])
def test_no_chunk_a_graph_records_makes_the_host_wait(side):
    """The stock tower's chunks, STC-Cacher's reference and selective chunks and ToMe's run no operator
    whose result the host must read: a CUDA graph could not record them."""
    tower = tiny_siglip()
    if side == "stc":
        STCCacher(interval=2).attach(tower)
    elif side == "tome":
        ToMe(2).attach(tower)
    with torch.inference_mode():
        for chunk, pixels in enumerate(moving_frames(4).split(1)):
            with OpCensus() as census:
                hidden_states(tower)(pixels)
            assert census.total_launches > 0 and census.host_syncs == {}, chunk


def test_record_after_must_leave_an_eager_warm_up():
    with pytest.raises(ValueError, match="record_after must be >= 1"):
        GraphReplay(record_after=0)


def stream(frames_per_chunk):
    """Chunks of a moving scene at the tower's size, with one chunk of another frame count in the middle."""
    frames = moving_frames(sum(frames_per_chunk))
    return list(frames.split(frames_per_chunk))


@pytest.mark.gpu
@pytest.mark.parametrize("side", ["stock", "stc", "tome"])
def test_replayed_chunks_equal_eager_chunks(side):
    """A stream through the graphs equals the same stream run eagerly, chunk by chunk, across a reset
    (a new video) and a chunk of another size: every recorded kind replays the work it recorded."""
    dtype = torch.float16
    graphed = tiny_siglip(dtype=dtype).cuda()
    eager = copy.deepcopy(graphed)
    cacher = eager_cacher = None
    if side == "stc":
        cacher, eager_cacher = STCCacher(interval=2).attach(graphed), STCCacher(interval=2).attach(eager)
    elif side == "tome":
        ToMe(2).attach(graphed), ToMe(2).attach(eager)
    graphs = TowerGraphs(hidden_states(graphed), cacher)
    videos = [stream([1] * 9), stream([1, 1, 2, 1, 1, 1, 1]), stream([1] * 6)]
    with torch.inference_mode():
        for video in videos:
            for c in (cacher, eager_cacher):
                c and c.reset()
            for pixels in video:
                pixels = pixels.to("cuda", dtype)
                got, want = graphs(pixels), hidden_states(eager)(pixels)
                for g, w in zip(got, want, strict=True):
                    torch.testing.assert_close(g, w, rtol=0, atol=0)
                if side == "stc":
                    for g, w in zip(cacher.selected, eager_cacher.selected, strict=True):
                        assert (g is None) == (w is None)
                        if g is not None:
                            assert [set(r.tolist()) for r in g] == [set(r.tolist()) for r in w]
    # stock and ToMe: one graph per frame count; STC: the reference and the selective chunk at one frame
    # (and any kind whose second sighting came), the 2-frame chunk never twice, so eager
    assert graphs.graphs >= (2 if side == "stc" else 1)
    assert graphs.replays >= 15


@pytest.mark.gpu
def test_compiled_layers_replayed_from_graphs_match_the_eager_layers():
    """torch.compile's fused kernels on both sides (stock and STC), recorded in CUDA graphs, against the
    same towers run eagerly: equal up to float16 rounding of the fused arithmetic."""
    dtype = torch.float16
    towers = {name: tiny_siglip(dtype=dtype).cuda() for name in ("stock", "stc", "eager", "eager_stc")}
    compile_layers(towers["stock"])
    cacher = STCCacher(interval=2, compile=True).attach(towers["stc"])
    eager_cacher = STCCacher(interval=2).attach(towers["eager_stc"])
    graphs = {
        "stock": TowerGraphs(hidden_states(towers["stock"])),
        "stc": TowerGraphs(hidden_states(towers["stc"]), cacher),
    }
    with torch.inference_mode():
        for pixels in stream([1] * 10):
            pixels = pixels.to("cuda", dtype)
            for side, eager in (("stock", "eager"), ("stc", "eager_stc")):
                got, want = graphs[side](pixels), hidden_states(towers[eager])(pixels)
                torch.testing.assert_close(got[-1], want[-1], rtol=1e-2, atol=1e-2)
            assert (cacher.selected[0] is None) == (eager_cacher.selected[0] is None)
    assert graphs["stock"].replays == 9 and graphs["stc"].replays == 10 - 3
