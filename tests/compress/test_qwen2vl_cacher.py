"""STCCacher on the Qwen2-VL vision tower: packed temporal patches, fused qkv, 2-D vision RoPE."""

import pytest
import torch

from stc_cli.compress import STCCacher
from tests.compress.qwen2vl_models import as_rows, tiny_qwen2vl, video_chunks
from tests.compress.spec_reference import ReferenceQwen2VLCacher

GRID_T = "t"  # several temporal patches as grid_thw [[S, gh, gw]]
GRID_ROWS = "rows"  # the same as S rows [1, gh, gw]


def run(tower, chunk):
    pixels, grid = chunk
    with torch.no_grad():
        return tower(pixels, grid_thw=grid, output_hidden_states=True)


@pytest.mark.parametrize(("patches", "layout"), [(1, GRID_T), (2, GRID_T), (2, GRID_ROWS)])
@pytest.mark.parametrize("interval", [2, 3])
def test_selective_path_matches_step_by_step_spec(patches, layout, interval):
    stock, tower = tiny_qwen2vl(), tiny_qwen2vl()
    spec = ReferenceQwen2VLCacher(stock, update_ratio=0.25, interval=interval)
    cacher = STCCacher(update_ratio=0.25, interval=interval).attach(tower)
    n_selective = 0
    for c, (pixels, grid) in enumerate(video_chunks(patches, 6)):
        grid = as_rows(grid) if layout == GRID_ROWS else grid
        expected, expected_sel = spec.run_chunk(pixels, grid)
        out = run(tower, (pixels, grid))
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=1e-5)
            got = cacher.selected[layer]
            if c % interval == 0:
                assert got is None and expected_sel[layer] is None
            else:
                n_selective += 1
                assert got.shape == (patches, 6)  # int(24 tokens * 0.25) per temporal patch
                assert [set(row.tolist()) for row in got] == expected_sel[layer]
    assert n_selective == 2 * (6 - len(range(0, 6, interval)))  # 2 blocks x selective chunks


def test_similarity_threshold_matches_spec():
    stock, tower = tiny_qwen2vl(), tiny_qwen2vl()
    spec = ReferenceQwen2VLCacher(stock, interval=2, similarity_threshold=0.9)
    STCCacher(interval=2, similarity_threshold=0.9).attach(tower)
    for chunk in video_chunks(2, 4, seed=1):
        expected, _ = spec.run_chunk(*chunk)
        out = run(tower, chunk)
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=1e-5)


def test_full_update_ratio_equals_stock():
    stock, tower = tiny_qwen2vl(), tiny_qwen2vl()
    cacher = STCCacher(update_ratio=1.0, interval=2).attach(tower)
    for chunk in video_chunks(2, 4):
        want, got = run(stock, chunk), run(tower, chunk)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=0, atol=1e-5)
    assert cacher.selected[0].shape == (2, 24)


def test_unsupported_towers_fail_clearly():
    tower = tiny_qwen2vl()
    del tower.blocks[0].mlp.fc1, tower.blocks[0].mlp.fc2
    with pytest.raises(ValueError, match=r"not a Qwen2-VL vision block: missing \['mlp.fc1', 'mlp.fc2'\]"):
        STCCacher().attach(tower)
    tower = tiny_qwen2vl()
    del tower.blocks[1].attn.qkv
    with pytest.raises(ValueError, match=r"encoder layer 1 .* missing \['attn.qkv'\]"):
        STCCacher().attach(tower)
    assert not hasattr(tower, "_stc_cacher")
