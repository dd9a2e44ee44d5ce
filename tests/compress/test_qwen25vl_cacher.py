"""STCCacher on the Qwen2.5-VL vision tower: window order, windowed and full-attention blocks, gated MLP."""

import pytest
import torch
from transformers.vision_utils import get_vision_window_index

from stc_cli.compress import STCCacher
from stc_cli.compress.cacher import PreLNViTLayers
from stc_cli.compress.qwen2vl_cacher import Qwen2VLBlocks
from stc_cli.compress.qwen3vl_cacher import Qwen3VLBlocks
from stc_cli.compress.qwen25vl_cacher import Qwen25VLBlocks
from tests.compress.qwen2vl_models import as_rows, tiny_qwen2vl, tiny_qwen3vl, tiny_qwen25vl, video_chunks
from tests.compress.spec_reference import ReferenceQwen25VLCacher, qwen_block_inputs

GRID_T = "t"  # several temporal patches as grid_thw [[S, gh, gw]]
GRID_ROWS = "rows"  # the same as S rows [1, gh, gw]
ATOL = 2e-5  # hidden states reach |15| in these towers: a few float32 ulps


def run(tower, chunk):
    pixels, grid = chunk
    with torch.no_grad():
        return tower(pixels, grid_thw=grid, output_hidden_states=True)


def reverse_index(tower, grid):
    """The tower's window order back to raster merge-unit order, as it applies after its merger."""
    merge, window, patch = tower.spatial_merge_size, tower.window_size, tower.patch_size
    return torch.argsort(get_vision_window_index(grid, merge, window, patch)[0])


def test_the_fixture_exercises_window_order_and_windows():
    tower = tiny_qwen25vl()
    pixels, grid = video_chunks(2, 1)[0]  # 2 temporal patches on a 4 x 6 grid: 24 tokens, 6 merge units each
    _, bounds, _ = qwen_block_inputs(tower, pixels, grid)
    # Blocks 0 and 2 attend within windows of 16 and 8 tokens, block 1 within each temporal patch.
    assert bounds == [[0, 16, 24, 40, 48], [0, 24, 48], [0, 16, 24, 40, 48]]
    window_index, _ = get_vision_window_index(grid, 2, tower.window_size, tower.patch_size)
    assert window_index.tolist() == [0, 1, 3, 4, 2, 5, 6, 7, 9, 10, 8, 11]  # per patch, units regrouped
    _, bounds, _ = qwen_block_inputs(tower, *video_chunks(1, 1, grid=(4, 8))[0])
    assert bounds == [[0, 16, 32], [0, 32], [0, 16, 32]]  # two windows of one length: no mask


@pytest.mark.parametrize(
    ("patches", "layout", "grid"),
    [(1, GRID_T, (4, 6)), (2, GRID_T, (4, 6)), (2, GRID_ROWS, (4, 6)), (2, GRID_T, (4, 8))],
)
@pytest.mark.parametrize("interval", [2, 3])
def test_selective_path_matches_step_by_step_spec(patches, layout, grid, interval):
    stock, tower = tiny_qwen25vl(), tiny_qwen25vl()
    spec = ReferenceQwen25VLCacher(stock, update_ratio=0.25, interval=interval)
    cacher = STCCacher(update_ratio=0.25, interval=interval).attach(tower)
    tokens = grid[0] * grid[1]
    n_selective = 0
    for c, (pixels, grid_thw) in enumerate(video_chunks(patches, 6, grid=grid)):
        grid_thw = as_rows(grid_thw) if layout == GRID_ROWS else grid_thw
        expected, expected_sel = spec.run_chunk(pixels, grid_thw)
        out = run(tower, (pixels, grid_thw))
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=ATOL)
            got = cacher.selected[layer]
            if c % interval == 0:
                assert got is None and expected_sel[layer] is None
            else:
                n_selective += 1
                assert got.shape == (patches, tokens // 4)  # per temporal patch, in window order
                assert [set(row.tolist()) for row in got] == expected_sel[layer]
        # What the LLM gets: the merger over the last block, back in raster order.
        with torch.no_grad():
            pooled = stock.merger(expected[-1])[reverse_index(stock, grid_thw)]
        torch.testing.assert_close(out.pooler_output, pooled, rtol=0, atol=ATOL)
    assert n_selective == 3 * (6 - len(range(0, 6, interval)))  # 3 blocks x selective chunks


class SpecWithoutWindows(ReferenceQwen25VLCacher):
    """The spec with every block attending over whole temporal patches, as if there were no windows."""

    def block_inputs(self, pixel_values, grid_thw):
        h, bounds, rope = super().block_inputs(pixel_values, grid_thw)
        return h, [bounds[1]] * len(bounds), rope  # block 1 is the full-attention one


def test_a_query_outside_its_window_would_show():
    """The spec test's teeth: the same selection attending over the whole temporal patch in the windowed
    blocks gives other outputs, far beyond its tolerance."""
    tower = tiny_qwen25vl()
    STCCacher(update_ratio=0.25, interval=2).attach(tower)
    spec, unwindowed = ReferenceQwen25VLCacher(tiny_qwen25vl()), SpecWithoutWindows(tiny_qwen25vl())
    for chunk in video_chunks(2, 2):
        got = run(tower, chunk).hidden_states[1]
        (want, *_), _ = spec.run_chunk(*chunk)
        (other, *_), _ = unwindowed.run_chunk(*chunk)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    assert (got - other).abs().max() > 1000 * ATOL


def test_similarity_threshold_matches_spec():
    stock, tower = tiny_qwen25vl(), tiny_qwen25vl()
    spec = ReferenceQwen25VLCacher(stock, interval=2, similarity_threshold=0.9)
    cacher = STCCacher(interval=2, similarity_threshold=0.9).attach(tower)
    counts = set()
    for c, chunk in enumerate(video_chunks(2, 4, seed=1)):
        expected, expected_sel = spec.run_chunk(*chunk)
        out = run(tower, chunk)
        for layer, want in enumerate(expected):
            torch.testing.assert_close(out.hidden_states[layer + 1], want, rtol=0, atol=ATOL)
            if c % 2:
                assert [set(row.tolist()) for row in cacher.selected[layer]] == expected_sel[layer]
                counts.update(len(s) for s in expected_sel[layer])
    assert len(counts) > 1  # the token count followed the motion


@pytest.mark.parametrize("grid", [(4, 6), (4, 8)])
def test_full_update_ratio_equals_stock(grid):
    stock, tower = tiny_qwen25vl(), tiny_qwen25vl()
    cacher = STCCacher(update_ratio=1.0, interval=2).attach(tower)
    for c, chunk in enumerate(video_chunks(2, 4, grid=grid)):
        want, got = run(stock, chunk), run(tower, chunk)
        for name in ("last_hidden_state", "pooler_output"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=ATOL)
        for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
        assert (cacher.selected[0] is None) == (c % 2 == 0)
    assert cacher.selected[0].shape == (2, grid[0] * grid[1])  # every token went the selective way


TOWERS = {"qwen2vl": tiny_qwen2vl, "qwen25vl": tiny_qwen25vl, "qwen3vl": tiny_qwen3vl}
FAMILIES = {"qwen2vl": Qwen2VLBlocks, "qwen25vl": Qwen25VLBlocks, "qwen3vl": Qwen3VLBlocks}


def test_families_do_not_claim_each_others_towers():
    for tower_name, make in TOWERS.items():
        tower = make()
        for family_name, family in FAMILIES.items():
            found = family().locate(tower)
            block = tower.blocks[0]
            if family_name == tower_name:
                assert found[0] is tower and found[1] == list(tower.blocks)
                assert not family().missing_parts(block)
            elif family_name == "qwen2vl":  # the loosest locate, tried last: its parts check refuses them
                assert found is not None and family().missing_parts(block) == ["mlp.fc1", "mlp.fc2"]
            else:
                assert found is None
        assert PreLNViTLayers().locate(tower) is None
        assert isinstance(STCCacher().attach(tower)._family, FAMILIES[tower_name])


def test_a_gated_mlp_without_its_parts_fails_clearly():
    tower = tiny_qwen25vl()
    del tower.blocks[2].mlp.up_proj
    message = r"encoder layer 2 .* not a Qwen2\.5-VL vision block: missing \['mlp.up_proj'\]"
    with pytest.raises(ValueError, match=message):
        STCCacher().attach(tower)
    assert not hasattr(tower, "_stc_cacher")
