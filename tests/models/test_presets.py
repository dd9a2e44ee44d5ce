import pytest
import torch

from stc_cli.models.presets import random_language_model, random_vision_tower


def test_vision_preset_has_the_checkpoint_widths():
    tower = random_vision_tower("siglip-so400m-384", layers=1, device="meta")
    cfg = tower.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (1152, 4304, 16)
    assert (cfg.image_size // cfg.patch_size) ** 2 == 729 and cfg.num_hidden_layers == 1
    assert random_vision_tower("siglip-so400m-384", device="meta").config.num_hidden_layers == 26


def test_qwen2vl_vision_preset_has_the_livecc_widths():
    tower = random_vision_tower("qwen2vl-7b", layers=2, device="meta")
    cfg = tower.config
    assert type(tower).__name__ == "Qwen2VisionTransformerPretrainedModel" and len(tower.blocks) == 2
    assert (cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.hidden_size) == (1280, 16, 4, 3584)
    assert (cfg.patch_size, cfg.temporal_patch_size, cfg.spatial_merge_size) == (14, 2, 2)
    assert random_vision_tower("qwen2vl-7b", device="meta").config.depth == 32


@pytest.mark.parametrize(
    ("name", "widths"),
    [("qwen2-7b", (3584, 18944, 28, 4, 28)), ("qwen2-0.5b", (896, 4864, 14, 2, 24))],
)
def test_llm_presets_have_the_checkpoint_widths(name, widths):
    cfg = random_language_model(name, device="meta").config
    assert (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.num_hidden_layers,
    ) == widths
    assert random_language_model(name, layers=2, device="meta").config.num_hidden_layers == 2


def test_same_seed_same_weights():
    a, b = random_vision_tower("tiny", seed=3), random_vision_tower("tiny", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_unknown_preset_and_bad_depth():
    with pytest.raises(
        ValueError, match="unknown vision preset 'vit-h'; choose one of: siglip-so400m-384, tiny"
    ):
        random_vision_tower("vit-h")
    with pytest.raises(ValueError, match="layers must be >= 1"):
        random_vision_tower("tiny", layers=0)


def test_building_leaves_the_callers_random_state_alone():
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    random_vision_tower("tiny", seed=1)
    assert torch.equal(torch.rand(3), want)
