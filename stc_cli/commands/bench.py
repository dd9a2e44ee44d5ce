"""`stc bench`: STC latency on random-weight models at real sizes, STC on vs off, in one run."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stc_cli import tables
from stc_cli.commands import fail
from stc_cli.configs import BenchConfig

_BENCH = BenchConfig()


def bench(
    vision: Annotated[
        str,
        typer.Option(
            metavar="PRESET",
            help="Vision tower preset: siglip-so400m-384, tiny, qwen2vl-7b (LiveCC's tower, frame pairs "
            "at 392x728), qwen25vl-7b (476x840), qwen3vl-8b (480x832), or their -tiny.",
        ),
    ] = _BENCH.vision,
    llm: Annotated[
        str,
        typer.Option(
            metavar="PRESET",
            help="LLM width preset: qwen2-7b, qwen3-8b (Qwen3-VL-8B's widths), qwen2-0.5b or tiny.",
        ),
    ] = _BENCH.llm,
    layers: Annotated[
        int | None,
        typer.Option(metavar="N", help="Cut both models to N layers. Default: full depth on CUDA, 2 on CPU."),
    ] = _BENCH.layers,
    llm_layers: Annotated[
        int | None, typer.Option(metavar="N", help="Cut the LLM to N layers instead (default: --layers).")
    ] = _BENCH.llm_layers,
    frames: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Timed chunks (ViT calls) per pass, even; the pruner and prefill rows time as many calls.",
        ),
    ] = _BENCH.frames,
    frames_per_chunk: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Frames per call, timed per frame: the ViT encodes N (Qwen2-VL N / 2 temporal patches, N "
            "even), and the pruner and prefill rows take them in one call, as eval's --encode-chunk. "
            "Default: 1 (SigLIP), 2 (Qwen2-VL).",
        ),
    ] = _BENCH.frames_per_chunk,
    warmup: Annotated[
        int, typer.Option(metavar="N", help="Untimed chunks at the start of each pass.")
    ] = _BENCH.warmup,
    repeats: Annotated[
        int, typer.Option(metavar="N", help="Passes per setting; the median is reported.")
    ] = _BENCH.repeats,
    update_ratio: Annotated[
        float, typer.Option(metavar="R", help="Cacher: share of tokens recomputed per layer.")
    ] = _BENCH.update_ratio,
    interval: Annotated[
        int, typer.Option(metavar="N", help="Cacher: a reference chunk every N chunks.")
    ] = _BENCH.interval,
    tokens_per_frame: Annotated[
        int, typer.Option(metavar="K", help="Pruner: tokens kept per frame.")
    ] = _BENCH.tokens_per_frame,
    memory_window: Annotated[
        int, typer.Option(metavar="N", help="Pruner memory window for the state check.")
    ] = _BENCH.memory_window,
    state_frames: Annotated[
        int, typer.Option(metavar="N", help="Chunks streamed for the state check (0 skips it).")
    ] = _BENCH.state_frames,
    long_stream: Annotated[
        bool,
        typer.Option(
            "--long-stream",
            help="Also time ReKV prefill with its window full: each side first streams, untimed, enough "
            "frames of its own token count to fill --n-local tokens.",
        ),
    ] = _BENCH.long_stream,
    n_local: Annotated[
        int,
        typer.Option(
            metavar="TOKENS", help="ReKV's sliding window in tokens (ReKV's default), for every ReKV row."
        ),
    ] = _BENCH.n_local,
    decode_tokens: Annotated[
        int,
        typer.Option(
            metavar="T",
            help="Greedy tokens timed per answer after a prefill, plain and through ReKV's memory, after "
            "--warmup untimed ones (0 skips decoding).",
        ),
    ] = _BENCH.decode_tokens,
    compress: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME[,NAME]",
            help="Also time baselines beside STC at its budget (SigLIP presets): tome (in the ViT rows), "
            "vidcom2, visionzip, dtd (beside the pruner); repeatable or comma-separated.",
        ),
    ] = None,
    streamforest: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Also stream N frames through StreamForest's event memory, all ViT tokens vs STC-Pruner's "
            "share, and time the prefill of what each memory holds (0 skips it).",
        ),
    ] = _BENCH.streamforest,
    dispider: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Also stream N frames through Dispider's CLIP tower, stock vs STC-Cacher (interval 4, ratio "
            "0.25), and time its reaction prefill (--llm) of each frame's 64 tokens vs the 20 STC-Pruner "
            "keeps (0 skips it).",
        ),
    ] = _BENCH.dispider,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs/--no-cuda-graphs",
            help="Replay the ViT sides (stock, STC, ToMe) from CUDA graphs (CUDA only).",
        ),
    ] = _BENCH.cuda_graphs,
    llm_graphs: Annotated[
        bool,
        typer.Option(
            "--llm-graphs",
            help="Every LLM row (both sides) replayed from CUDA graphs: ReKV's through ring buffers, the "
            "plain prefill and decoding through static KV caches (CUDA only; experimental).",
        ),
    ] = _BENCH.llm_graphs,
    compile_layers: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the stock and the STC ViT layers through torch.compile, the same function for both "
            "(SigLIP presets; not with --compress tome).",
        ),
    ] = _BENCH.compile,
    device: Annotated[
        str, typer.Option(metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda or cuda:N.")
    ] = _BENCH.device,
    dtype: Annotated[
        str,
        typer.Option(
            metavar="auto|float32|float16|bfloat16",
            help="auto (float16 on CUDA, float32 on CPU), float32, float16 or bfloat16.",
        ),
    ] = _BENCH.dtype,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
) -> None:
    """Latency of STC on random-weight models at real sizes: STC on vs off, side by side, in one run."""
    from rich.console import Console

    from stc_cli.bench import run_bench
    from stc_cli.progress import LogLines

    config = BenchConfig(
        vision=vision,
        llm=llm,
        layers=layers,
        llm_layers=llm_layers,
        frames=frames,
        frames_per_chunk=frames_per_chunk,
        warmup=warmup,
        repeats=repeats,
        update_ratio=update_ratio,
        interval=interval,
        tokens_per_frame=tokens_per_frame,
        memory_window=memory_window,
        state_frames=state_frames,
        long_stream=long_stream,
        n_local=n_local,
        decode_tokens=decode_tokens,
        compress=tuple(name.strip() for given in compress or [] for name in given.split(",") if name.strip()),
        streamforest=streamforest,
        dispider=dispider,
        cuda_graphs=cuda_graphs,
        llm_graphs=llm_graphs,
        compile=compile_layers,
        device=device,
        dtype=dtype,
    )
    console = Console(stderr=True)
    try:
        if console.is_terminal:
            with console.status("stc bench") as status:
                result = run_bench(
                    config, progress=lambda done, total, stage: status.update(f"stc bench: {stage}")
                )
        else:  # a log: a line per stage and at least every 30 s
            with LogLines("stc bench", "stages") as log:
                result = run_bench(
                    config, progress=lambda done, total, stage: log.update(done, total=total, detail=stage)
                )
    except ValueError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        Console().print(tables.bench_table(result))
        if baselines := tables.baselines_table(result):
            Console().print(baselines)
