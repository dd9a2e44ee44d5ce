"""Dispider's checkpoints (stc_cli/models/dispider_load.py, dispider_config.py): a tiny model saved in the
release's composite layout loads back the same, sizes come from its configs, and a wrong config or a missing
tensor is refused naming the key."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from stc_cli.models.checkpoints import CheckpointError
from stc_cli.models.dispider_load import build_random, load, save


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    net = build_random("tiny")
    folder = tmp_path_factory.mktemp("dispider")
    save(net, folder)
    return net, folder


@pytest.fixture
def copy(saved, tmp_path):
    shutil.copytree(saved[1], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_a_saved_checkpoint_has_the_composite_keys_and_loads_back_the_same(saved):
    net, folder = saved
    names = set(load_file(folder / "model.safetensors"))
    for name in (
        "model.compressor.compressor.model.vision_tower.vision_tower.vision_model.encoder.layers.2.mlp.fc2.weight",
        "model.compressor.compressor.model.vision_tower.vision_tower.vision_model.embeddings.class_embedding",
        "model.compressor.compressor.model.mm_projector.mlp.0.weight",
        "model.compressor.compressor.model.layers.1.self_attn.q_proj.weight",
        "model.compressor.compressor.silent_head.weight",
        "model.clip_projector.2.bias",
        "model.compress_projector.0.weight",
        "model.layers.1.mlp.down_proj.weight",
        "lm_head.weight",
    ):
        assert name in names, name
    for path in (
        "config.json",
        "perception_decision/config.json",
        "perception_decision/vision_tower/config.json",
        "dispider_checkpoint_manifest.json",
        "tokenizer.json",
        "perception_decision/tokenizer.json",
    ):
        assert (folder / path).is_file(), path
    loaded = load(str(folder))
    for part, module in net.parts().items():
        theirs = loaded.parts()[part].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(theirs[key], value), f"{part}.{key}"
    assert (loaded.select_layer, loaded.frames_per_clip, loaded.resolution) == (-2, 4, 4)
    assert loaded.manifest == {"format_version": 2, "written_by": "stc"}
    assert loaded.tokenizer.convert_tokens_to_ids("<to_do>") == net.tokenizer.convert_tokens_to_ids("<to_do>")


def test_sizes_come_from_the_configs(copy):
    path = copy / "perception_decision" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "pool_num": 4, "frames_per_clip": 2, "mm_vision_select_layer": -1}))
    net = load(str(copy))
    assert (net.pool.pool_num, net.frames_per_clip, net.select_layer) == (4, 2, -1)
    # 2 frames of 4 mixed tokens, 4 slots per frame (a 2 x 2 grid of 1-token blocks), 1 clip mean
    assert net.pool(torch.zeros(8, 128)).shape == (8 + 8 + 1, 64)


@pytest.mark.parametrize(
    "where, change, message",
    [
        (
            "config.json",
            {"model_type": "llava_qwen"},
            "model_type 'llava_qwen'.*run it with --model streamforest",
        ),
        ("config.json", {"clip_projector_type": "linear"}, "clip_projector_type is 'linear'"),
        ("config.json", {"compress_hidden_size": 32}, "compress_hidden_size is 32"),
        ("perception_decision/config.json", {"mm_projector_type": "slot"}, "mm_projector_type is 'slot'"),
        ("perception_decision/config.json", {"resolution": 16}, "resolution is 16"),
        ("perception_decision/config.json", {"pool_num": 3}, "pool_num is 3"),
        ("perception_decision/config.json", {"mm_hidden_size": 64}, "mm_hidden_size is 64"),
    ],
)
def test_a_config_off_the_released_path_is_refused_naming_the_key(copy, where, change, message):
    path = copy / where
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message):
        load(str(copy))


def test_a_missing_config_is_refused_naming_the_file(copy):
    (copy / "perception_decision" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"perception_decision/config.json: missing"):
        load(str(copy))


@pytest.mark.parametrize(
    "dropped",
    [
        "model.compressor.compressor.silent_head.weight",
        "model.compressor.compressor.model.vision_tower.vision_tower.vision_model.encoder.layers.1.self_attn.k_proj.weight",
        "model.compressor.compressor.model.mm_projector.mlp.2.bias",
        "model.compressor.compressor.model.norm.weight",
        "model.clip_projector.0.weight",
        "model.layers.0.input_layernorm.weight",
    ],
)
def test_weights_missing_a_tensor_are_refused_naming_it(copy, dropped):
    tensors = load_file(copy / "model.safetensors")
    del tensors[dropped]
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"no {dropped} "):
        load(str(copy))


def test_a_tensor_of_another_shape_is_refused_naming_it(copy):
    tensors = load_file(copy / "model.safetensors")
    tensors["model.compress_projector.0.weight"] = torch.zeros(64, 32)
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"model.compress_projector.0.weight has shape \[64, 32\].*\[64, 64\]"
    ):
        load(str(copy))


def test_a_compact_tokenizer_without_dispider_s_tokens_is_refused(copy):
    from stc_cli.models.tokenizer import byte_tokenizer

    byte_tokenizer().save_pretrained(copy / "perception_decision")  # no <has_answer>, <to_do>
    with pytest.raises(CheckpointError, match="the compact tokenizer has no <has_answer> token"):
        load(str(copy))
