"""StreamForest checkpoints (stc_cli/models/streamforest_load.py, streamforest_config.py): a tiny random
model saved in upstream's LLaVA-NeXT layout and read back, an upstream-shaped config.json, and the
checkpoints refused with a message naming the key at fault."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from stc_cli.models.checkpoints import CheckpointError
from stc_cli.models.streamforest_config import TINY_MEMORY, MemorySettings, configs
from stc_cli.models.streamforest_load import build_random, load, save

VISION = "model.vision_tower.vision_tower.vision_model."


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    net = build_random("tiny")
    folder = tmp_path_factory.mktemp("streamforest") / "tiny"
    save(net, folder)
    return net, folder


@pytest.fixture
def copy(saved, tmp_path):
    """A copy of the saved checkpoint, as (config dict, tensors dict, write()) to change and write back."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(saved[1], folder)
    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")

    def write():
        (folder / "config.json").write_text(json.dumps(config))
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        return folder

    return config, tensors, write


def test_a_saved_checkpoint_has_upstream_s_keys_and_loads_back_the_same(saved):
    net, folder = saved
    names = set(load_file(folder / "model.safetensors"))
    for name in (
        f"{VISION}embeddings.patch_embedding.weight",
        f"{VISION}encoder.layers.2.self_attn.q_proj.weight",
        f"{VISION}post_layernorm.weight",
        "model.mm_projector.mlp.0.weight",
        "model.mm_projector.mlp.2.bias",
        "model.embed_tokens.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ):
        assert name in names, name
    assert len(names) == 53 + 4 + 27  # tower (3 layers of 16, embeddings 3, post-LN 2), connector, Qwen2
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["architectures"], config["mm_projector_type"]) == (
        "llava_qwen", ["LlavaQwenForCausalLM"], "tome729_fstw_pemf"
    )  # fmt: skip
    assert (config["mm_hidden_size"], config["hidden_size"], config["rope_theta"]) == (32, 64, 10000.0)
    back = load(str(folder))
    for ours, theirs in ((net.vision, back.vision), (net.projector, back.projector), (net.llm, back.llm)):
        mine, read = ours.state_dict(), theirs.state_dict()
        assert set(mine) == set(read) and all(torch.equal(mine[k], read[k]) for k in mine)
    assert (back.memory, back.patches, back.vocab, back.transform) == (
        TINY_MEMORY, 49, 259, net.transform
    )  # fmt: skip
    assert back.source == str(folder) and back.max_length == 32768


def test_an_upstream_config_means_so400m_less_a_layer_qwen2_and_the_default_memory(tmp_path):
    """config.json as a LLaVA-NeXT training run writes it (transformers 4.x fields, no tower shape)."""
    upstream = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava_qwen", "hidden_size": 3584,
        "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "rope_theta": 1000000.0, "rope_scaling": None,
        "max_position_embeddings": 32768, "sliding_window": 131072, "use_sliding_window": False,
        "tie_word_embeddings": False, "mm_projector_type": "tome729_fstw_pemf", "mm_hidden_size": 1152,
        "mm_vision_tower": "google/siglip-so400m-patch14-384", "tokenizer_model_max_length": 32768,
    }  # fmt: skip
    vision, llm, memory = configs(upstream, tmp_path / "config.json")
    assert (vision.num_hidden_layers, vision.hidden_size, vision.image_size, vision.patch_size) == (
        26,
        1152,
        384,
        14,
    )
    assert (vision.intermediate_size, vision.num_attention_heads, vision.vision_use_head) == (4304, 16, False)
    assert (llm.hidden_size, llm.num_key_value_heads, llm.vocab_size) == (3584, 4, 152064)
    assert llm.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}
    assert memory == MemorySettings() and memory.tokens == (729, 128) and memory.long_quota == 5120


def test_a_27th_layer_and_a_pooling_head_are_left_out_as_upstream_deletes_them(copy):
    config, tensors, write = copy
    tensors |= {
        f"{VISION}encoder.layers.3.{k.split('layers.2.')[1]}": v.clone()
        for k, v in tensors.items() if "encoder.layers.2." in k
    }  # fmt: skip
    tensors[f"{VISION}head.probe"] = torch.zeros(1, 1, 32)
    net = load(str(write()))
    assert len(net.vision.encoder.layers) == 3 and not hasattr(net.vision, "head")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llava_onevision"}, "model_type 'llava_onevision', but --model streamforest runs"),
        ({"model_type": "llava_onevision"}, "run it with --model rekv"),
        ({"mm_projector_type": "mlp2x_gelu"}, "mm_projector_type is 'mlp2x_gelu', but --model streamforest"),
        ({"mm_projector_type": None}, "mm_projector_type is None"),
        ({"mm_local_num_frames": 4}, "mm_local_num_frames is 4"),
        ({"vision_encode_type": "image_video"}, "vision_encode_type is 'image_video'"),
        ({"mm_patch_merge_type": "spatial_unpad"}, "mm_patch_merge_type is 'spatial_unpad'"),
        ({"transformers_version": "4.40.0.dev0_llava_ov"}, "pool the frames 2x2"),
        ({"mm_vision_tower": "umt-hd-large"}, "mm_vision_tower 'umt-hd-large' is not a SigLIP tower"),
        ({"mm_hidden_size": 1152}, "mm_hidden_size 1152 is not the SigLIP width 32"),
        ({"memory_config": {"tokens": [64, 16]}}, "the memory takes frames of 64 tokens, the tower gives 49"),
    ],
)
def test_a_config_of_another_model_is_refused_naming_the_key(copy, change, message):
    config, _, write = copy
    config.update(change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(str(write()))


@pytest.mark.parametrize(
    ("dropped", "message"),
    [
        (VISION, f"no {VISION}\\* weights: this checkpoint carries no vision tower"),
        ("model.mm_projector.mlp.2.bias", "no model.mm_projector.mlp.2.bias"),
        (f"{VISION}encoder.layers.2.", f"no {VISION}encoder.layers.2.mlp.fc2.weight"),
        ("model.layers.1.mlp.up_proj", "model.layers.1.mlp.up_proj.weight missing"),
    ],
)
def test_weights_that_miss_a_part_are_refused_naming_it(copy, dropped, message):
    _, tensors, write = copy
    for name in [name for name in tensors if name.startswith(dropped)]:
        del tensors[name]
    with pytest.raises(CheckpointError, match=message):
        load(str(write()))
