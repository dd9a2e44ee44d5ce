"""A broken or mismatched checkpoint ends `stc eval` with one `error:` line naming the file at fault and
exit 2, before any sample runs: tiny random checkpoints saved to disk, then cut, emptied or swapped."""

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from stc_cli.cli import app
from stc_cli.models import llava_ov, qwen2vl
from stc_cli.models.checkpoints import CheckpointError, check_safetensors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Intact tiny checkpoints, by --model: rekv (LLaVA-OneVision) and livecc (Qwen2-VL)."""
    root = tmp_path_factory.mktemp("checkpoints")
    llava_ov.save(llava_ov.build_random("tiny"), root / "rekv")
    qwen2vl.save(qwen2vl.build_random("tiny"), root / "livecc")
    return root


@pytest.fixture
def checkpoint(saved, tmp_path):
    """A copy of the saved checkpoint of a --model that a test may break."""

    def copy(model: str = "rekv"):
        folder = tmp_path / f"{model}-checkpoint"
        shutil.copytree(saved / model, folder)
        return folder

    return copy


def stc_eval(tmp_path, model, model_path):
    return CliRunner().invoke(
        app,
        ["eval", "--bench", "demo", "--limit", "1", "--model", model, "--model-path", str(model_path),
         "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "run")],
    )  # fmt: skip


def error_line(result) -> str:
    """The one `error:` line of a run refused with exit 2 (and no traceback, no records)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def refused(tmp_path, model, folder) -> str:
    line = error_line(stc_eval(tmp_path, model, folder))
    assert not (tmp_path / "run" / "samples.jsonl").exists()
    return line


@pytest.mark.parametrize("model", ["rekv", "livecc"])
def test_an_intact_checkpoint_folder_runs(checkpoint, tmp_path, model):
    result = stc_eval(tmp_path, model, checkpoint(model))
    assert result.exit_code == 0, result.output
    assert "error" not in result.output
    record = json.loads((tmp_path / "run" / "samples.jsonl").read_text())
    assert record["error"] is None


# -- the weight files --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["rekv", "livecc"])
def test_a_truncated_safetensors_file_is_named(checkpoint, tmp_path, model):
    weights = checkpoint(model) / "model.safetensors"
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    line = refused(tmp_path, model, weights.parent)
    assert f"error: {weights}: truncated ({size // 2:,} of {size:,} bytes); download the checkpoint" in line


@pytest.mark.parametrize(
    "corrupt, says",
    [
        (lambda data: b"\xff" * 5000, "not a safetensors file (no header length at its start)"),
        (lambda data: data[:4], "truncated or not a safetensors file (4 bytes)"),
        (lambda data: b"", "truncated or not a safetensors file (0 bytes)"),
        (lambda data: data[:100], "truncated (100 bytes, fewer than its"),
        (lambda data: data[:8] + b"}" + data[9:], "corrupt safetensors header"),
        (lambda data: data + b"tail", f"corrupt ({634_660:,} bytes where its header describes {634_656:,})"),
    ],
    ids=["not-safetensors", "cut-in-the-length", "empty", "cut-in-the-header", "bad-header", "extra-bytes"],
)
def test_a_corrupt_safetensors_file_is_named(checkpoint, tmp_path, corrupt, says):
    weights = checkpoint() / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes()))
    assert f"error: {weights}: {says}" in refused(tmp_path, "rekv", weights.parent)


def test_a_missing_or_cut_shard_of_a_sharded_checkpoint_is_named(checkpoint, tmp_path):
    folder = checkpoint()
    (folder / "model.safetensors").unlink()
    llava_ov.build_random("tiny").model.save_pretrained(folder, max_shard_size="300KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    size = shards[-1].stat().st_size
    os.truncate(shards[-1], size - 1)
    assert f"error: {shards[-1]}: truncated ({size - 1:,} of {size:,} bytes)" in refused(
        tmp_path, "rekv", folder
    )
    shards[0].unlink()
    line = refused(tmp_path, "rekv", folder)
    assert (
        f"error: {shards[0]}: missing (1 of the {len(shards)} weight files that model.safetensors.index"
        in line
    )


def test_a_folder_without_weights_is_named(checkpoint, tmp_path):
    folder = checkpoint()
    (folder / "model.safetensors").unlink()
    line = refused(tmp_path, "rekv", folder)
    assert f"error: {folder / 'model.safetensors'}: missing (nor model.safetensors.index.json" in line


def test_weights_missing_parameters_are_refused_not_filled_with_random_values(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = checkpoint() / "model.safetensors"
    tensors = {k: v for k, v in load_file(weights).items() if "multi_modal_projector" not in k}
    save_file(tensors, weights, metadata={"format": "pt"})
    line = refused(tmp_path, "rekv", weights.parent)
    assert (
        f"error: {weights}: does not fit config.json: 4 parameters missing (e.g. model.multi_modal_projector"
        in line
    )


def test_weights_of_another_checkpoint_under_a_swapped_config_are_refused(saved, checkpoint, tmp_path):
    """Qwen2-VL weights in a folder whose config.json and preprocessor config are LLaVA-OneVision's."""
    folder = checkpoint("livecc")
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(saved / "rekv" / name, folder / name)
    line = refused(tmp_path, "rekv", folder)
    assert f"error: {folder / 'model.safetensors'}: does not fit config.json: " in line
    assert (
        "parameters missing" in line
        and "lm_head.weight: [263, 64] in the weights, [261, 64] in config" in line
    )
    assert "LOAD REPORT" not in stc_eval(tmp_path, "rekv", folder).output  # transformers' table held back


# -- the architecture --------------------------------------------------------------------------------


def test_llava_onevision_weights_given_to_livecc_say_to_use_rekv(saved, tmp_path):
    line = refused(tmp_path, "livecc", saved / "rekv")
    assert line == (
        f"error: {saved / 'rekv' / 'config.json'}: a LLaVA-OneVision checkpoint (model_type "
        "'llava_onevision', LlavaOnevisionForConditionalGeneration), but --model livecc runs Qwen2-VL "
        "('qwen2_vl') checkpoints; run this one with --model rekv"
    )


def test_qwen2vl_weights_given_to_rekv_say_to_use_livecc(saved, tmp_path):
    line = refused(tmp_path, "rekv", saved / "livecc")
    assert "a Qwen2-VL checkpoint (model_type 'qwen2_vl', Qwen2VLForConditionalGeneration)" in line
    assert line.endswith(
        "but --model rekv runs LLaVA-OneVision ('llava_onevision') checkpoints; "
        "run this one with --model livecc"
    )


def test_a_config_without_model_type_is_judged_by_its_architectures(checkpoint, tmp_path):
    folder = checkpoint("livecc")
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    assert "a Qwen2-VL checkpoint (no model_type, Qwen2VLForConditionalGeneration)" in refused(
        tmp_path, "rekv", folder
    )


def test_an_architecture_no_model_runs_is_named_with_the_ones_that_run(checkpoint, tmp_path):
    folder = checkpoint("livecc")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="idefics3", architectures=["Idefics3ForConditionalGeneration"])
    (folder / "config.json").write_text(json.dumps(config))
    line = refused(tmp_path, "livecc", folder)
    assert line == (
        f"error: {folder / 'config.json'}: model_type 'idefics3', Idefics3ForConditionalGeneration, but "
        "--model livecc runs Qwen2-VL ('qwen2_vl') checkpoints; stc eval runs model_type 'llava_onevision' "
        "(--model rekv), 'qwen2_vl' (--model livecc), 'llava_qwen' (--model streamforest), 'qwen2_5_vl' "
        "(--model qwen25vl), 'qwen3_vl' (--model qwen3vl), 'long' (--model dispider)"
    )


# -- config, tokenizer, preprocessor config ------------------------------------------------------------


@pytest.mark.parametrize("model", ["rekv", "livecc"])
def test_a_checkpoint_without_preprocessor_config_says_what_is_missing(checkpoint, tmp_path, model):
    folder = checkpoint(model)
    (folder / "preprocessor_config.json").unlink()
    line = refused(tmp_path, model, folder)
    assert line.startswith(
        f"error: {folder / 'preprocessor_config.json'}: missing (nor video_preprocessor_config.json); "
        "it gives the frame size and normalisation"
    )


@pytest.mark.parametrize("model, other", [("rekv", "livecc"), ("livecc", "rekv")])
def test_a_preprocessor_config_of_the_other_architecture_is_named(saved, checkpoint, tmp_path, model, other):
    folder = checkpoint(model)
    shutil.copy(saved / other / "preprocessor_config.json", folder)
    line = refused(tmp_path, model, folder)
    assert line.startswith(f"error: {folder / 'preprocessor_config.json'}: ")
    assert "the two files come from different checkpoints" in line


def test_a_preprocessor_config_for_another_frame_size_is_named(checkpoint, tmp_path):
    folder = checkpoint()
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["size"] = {"height": 384, "width": 384}  # the 7B checkpoint's, for a 56 px tower
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    line = refused(tmp_path, "rekv", folder)
    assert line == (
        f"error: {folder / 'preprocessor_config.json'}: resizes frames to 384x384, but the vision tower of "
        "config.json takes 56x56; the two files come from different checkpoints"
    )


def test_a_preprocessor_config_for_other_patches_is_named(checkpoint, tmp_path):
    folder = checkpoint("livecc")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["patch_size"] = 16
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    line = refused(tmp_path, "livecc", folder)
    assert line.startswith(
        f"error: {folder / 'preprocessor_config.json'}: patches of 16 px, 2 frames, merged 2x2"
    )


@pytest.mark.parametrize("model", ["rekv", "livecc"])
def test_a_folder_without_config_json_is_named(checkpoint, tmp_path, model):
    folder = checkpoint(model)
    (folder / "config.json").unlink()
    line = refused(tmp_path, model, folder)
    assert line.startswith(
        f"error: {folder / 'config.json'}: missing, so {folder} is not a complete checkpoint"
    )


@pytest.mark.parametrize(
    "text, says", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object, got list")]
)
def test_an_unreadable_config_json_is_named(checkpoint, tmp_path, text, says):
    folder = checkpoint()
    (folder / "config.json").write_text(text)
    assert refused(tmp_path, "rekv", folder).startswith(f"error: {folder / 'config.json'}: {says}")


def test_a_config_json_transformers_cannot_read_is_named(checkpoint, tmp_path):
    folder = checkpoint()
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"] = "siglip"
    (folder / "config.json").write_text(json.dumps(config))
    assert refused(tmp_path, "rekv", folder).startswith(f"error: {folder / 'config.json'}: does not load (")


@pytest.mark.parametrize("model", ["rekv", "livecc"])
def test_a_folder_without_tokenizer_files_is_named(checkpoint, tmp_path, model):
    folder = checkpoint(model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    line = refused(tmp_path, model, folder)
    assert line.startswith(f"error: {folder}: no tokenizer files (tokenizer.json or tokenizer_config.json)")


def test_a_tokenizer_that_does_not_load_is_named(checkpoint, tmp_path):
    folder = checkpoint()
    (folder / "tokenizer.json").write_text("{not json")
    line = refused(tmp_path, "rekv", folder)
    assert line.startswith(f"error: {folder}: the tokenizer does not load (")


# -- --model-path that is no checkpoint ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["rekv", "livecc"])
def test_a_model_path_that_does_not_exist_is_named(tmp_path, model):
    line = refused(tmp_path, model, tmp_path / "no-such-checkpoint")
    assert line == f"error: --model-path {tmp_path / 'no-such-checkpoint'}: no such folder"


def test_a_model_path_that_is_no_reachable_hub_id_says_what_to_pass(tmp_path, hf_env, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the same answer as no network, without one
    line = refused(tmp_path, "rekv", "nobody/nothing")
    assert line.startswith(
        "error: --model-path 'nobody/nothing' is neither a folder nor a reachable hub model"
    )
    assert line.endswith("pass a checkpoint folder, a hub id, or random:tiny / random:full")


def test_check_safetensors_accepts_a_whole_file_and_raises_a_value_error(saved, tmp_path):
    check_safetensors(saved / "rekv" / "model.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((saved / "rekv" / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.safetensors: truncated") as raised:
        check_safetensors(tmp_path / "cut.safetensors")
    assert isinstance(raised.value, CheckpointError)
