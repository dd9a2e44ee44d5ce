"""The options that choose and configure a model, shared by `stc eval` and `stc stream`: one definition
each, so that the two commands cannot drift apart. Each is an ``Annotated`` type; ``with_model_options``
gives a command all of them at once, with ``EvalConfig``'s defaults."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated

import typer

from stc_cli.configs import EvalConfig

Model = Annotated[
    str,
    typer.Option(
        metavar="NAME",
        help="Base system: rekv (LLaVA-OneVision), livecc (Qwen2-VL), streamforest (StreamForest), "
        "qwen3vl (Qwen3-VL), qwen25vl (Qwen2.5-VL) or dispider (Dispider, experimental).",
    ),
]
ModelPath = Annotated[
    str | None,
    typer.Option(
        metavar="ID|DIR",
        help="Hub id, checkpoint folder, demo, or random:tiny / random:full (random weights). Default: the "
        "model's released checkpoint, llava-hf/llava-onevision-qwen2-7b-ov-hf (rekv), "
        "chenjoya/LiveCC-7B-Instruct (livecc), MCG-NJU/StreamForest-Qwen2-7B (streamforest), "
        "Qwen/Qwen3-VL-8B-Instruct (qwen3vl), Qwen/Qwen2.5-VL-7B-Instruct (qwen25vl) or Mar2Ding/Dispider "
        "(dispider).",
    ),
]
Protocol = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Named evaluation protocol (default: the one that reproduces the published numbers; "
        "stc eval --show-protocol lists them).",
    ),
]
Fps = Annotated[
    float | None,
    typer.Option(metavar="FPS", help="Frames per second given to the model (default: the protocol's)."),
]
Compress = Annotated[
    str,
    typer.Option(
        metavar="stc|none|tome|vidcom2|visionzip|dtd|lastn",
        help="stc (the parts --cacher and --pruner say), none (as --no-stc), or a baseline at STC's "
        "budget: tome (ToMe in the vision tower, unmerged at its output), vidcom2, visionzip or dtd "
        "(in the pruner's place, keeping --tokens-per-frame; dtd: or by --dtd-threshold), lastn "
        "(every token, but answers see only the last --last-frames frames). docs/protocols.md.",
    ),
]
LastFrames = Annotated[
    int,
    typer.Option(
        metavar="N", help="--compress lastn: the frames an answer sees; SimpleStream's N (qwen3vl, qwen25vl)."
    ),
]
DtdThreshold = Annotated[
    float | None,
    typer.Option(
        metavar="COS",
        help="--compress dtd: drop tokens whose cosine to the previous frame is above COS "
        "(TimeChat-Online's default: 0.5); unset: keep --tokens-per-frame per frame.",
    ),
]
TomeR = Annotated[
    int | None,
    typer.Option(
        metavar="R",
        help="--compress tome: tokens merged in every layer (default: a schedule that leaves STC's "
        "share of the patches, 223 of 729 for 60 of 196).",
    ),
]
Stc = Annotated[bool, typer.Option(help="STC on (default) or off (--no-stc, the baseline).")]
Cacher = Annotated[bool, typer.Option(help="STC-Cacher in the vision encoder.")]
Pruner = Annotated[bool, typer.Option(help="STC-Pruner before the LLM prefill.")]
UpdateRatio = Annotated[
    float | None,
    typer.Option(
        metavar="R", help="Cacher: share of tokens recomputed per layer (default: the model's, 0.25)."
    ),
]
CacheInterval = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="Cacher: a reference frame every N frames (default: the model's, 2; dispider 4)."
    ),
]
TokensPerFrame = Annotated[
    int | None,
    typer.Option(metavar="K", help="Pruner: tokens kept per frame (default: 60 of 196, or that share)."),
]
PrunerWindow = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Pruner: its temporal anchor averages only the last N chunks it pruned (frames; rekv: "
        "--encode-chunk frames; livecc, qwen3vl, qwen25vl: temporal patches), which bounds its memory on "
        "long streams (default: every chunk, as released).",
    ),
]
NLocal = Annotated[int, typer.Option(metavar="TOKENS", help="ReKV: sliding-window length in tokens.")]
Topk = Annotated[int, typer.Option(metavar="N", help="ReKV: frames retrieved per question.")]
MaxBlocks = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="ReKV: keep only the last N frames' blocks for retrieval, so that host memory stays bounded on "
        "a long stream (not upstream: an answer can then draw only on those frames). Default: every frame.",
    ),
]
CudaGraphs = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="ReKV on CUDA: replay the vision tower (stock, STC-Cacher or ToMe) from CUDA graphs.",
    ),
]
LlmGraphs = Annotated[
    bool,
    typer.Option(
        "--llm-graphs",
        help="ReKV on CUDA, experimental: keep each layer's window and answer cache in fixed buffers and "
        "replay each frame's prefill and each generated token from CUDA graphs (checked on the CPU, not "
        "yet run on a GPU).",
    ),
]
CompileLayers = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="ReKV: run the vision tower's layers (stock or STC-Cacher) through torch.compile, which fuses "
        "their small kernels; compiling takes a minute at the first frames.",
    ),
]
MaxNewTokens = Annotated[
    int | None, typer.Option(metavar="N", help="Longest answer in tokens (default: the protocol's).")
]
AnswerMode = Annotated[
    str | None,
    typer.Option(
        metavar="generate|logits", help="livecc: generate, or logits (the candidate with the largest logit)."
    ),
]
MaxCacheTokens = Annotated[
    int | None,
    typer.Option(
        metavar="TOKENS",
        help="livecc, qwenvl-stream: bound the KV cache, evicting the oldest chunks (upstream: unbounded).",
    ),
]
Device = Annotated[str, typer.Option(metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[
    str,
    typer.Option(
        metavar="auto|float32|float16|bfloat16",
        help="auto (the model's own on CUDA, float32 on CPU), float32, float16 or bfloat16.",
    ),
]


# Every option above: the command parameter that takes it -> (its type, the EvalConfig field it sets).
_SHARED = {
    "model": (Model, "model"),
    "model_path": (ModelPath, "model_path"),
    "protocol": (Protocol, "protocol"),
    "fps": (Fps, "fps"),
    "compress": (Compress, "compress"),
    "last_frames": (LastFrames, "last_frames"),
    "dtd_threshold": (DtdThreshold, "dtd_threshold"),
    "tome_r": (TomeR, "tome_r"),
    "stc": (Stc, "stc"),
    "cacher": (Cacher, "cacher"),
    "pruner": (Pruner, "pruner"),
    "update_ratio": (UpdateRatio, "update_ratio"),
    "cache_interval": (CacheInterval, "cache_interval"),
    "tokens_per_frame": (TokensPerFrame, "tokens_per_frame"),
    "pruner_window": (PrunerWindow, "pruner_window"),
    "n_local": (NLocal, "n_local"),
    "topk": (Topk, "topk"),
    "max_blocks": (MaxBlocks, "max_blocks"),
    "cuda_graphs": (CudaGraphs, "cuda_graphs"),
    "llm_graphs": (LlmGraphs, "llm_graphs"),
    "compile_layers": (CompileLayers, "compile"),  # not `compile`: the builtin
    "max_new_tokens": (MaxNewTokens, "max_new_tokens"),
    "answer_mode": (AnswerMode, "answer_mode"),
    "max_cache_tokens": (MaxCacheTokens, "max_cache_tokens"),
    "device": (Device, "device"),
    "dtype": (Dtype, "dtype"),
}


def with_model_options(command: Callable) -> Callable:
    """A typer command that takes every model option, in the place of ``command``'s ``model_options``
    parameter (so the options keep their order in ``--help``), with ``EvalConfig``'s defaults; ``command``
    gets their values as one ``model_options`` dict of ``EvalConfig`` fields."""
    defaults = EvalConfig()
    parameters = []
    for parameter in inspect.signature(command, eval_str=True).parameters.values():
        if parameter.name != "model_options":
            parameters.append(parameter)
            continue
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD  # as the command's own (typer passes all by name)
        parameters += [
            inspect.Parameter(name, kind, annotation=option, default=getattr(defaults, field))
            for name, (option, field) in _SHARED.items()
        ]

    @functools.wraps(command)
    def with_options(**given):
        chosen = {field: given.pop(name) for name, (_option, field) in _SHARED.items()}
        return command(**given, model_options=chosen)

    with_options.__signature__ = inspect.Signature(parameters)  # what typer reads
    with_options.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_options
