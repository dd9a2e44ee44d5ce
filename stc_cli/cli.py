"""The `stc` command: parses options, calls the library, prints with rich. Nothing else.

Heavy imports (torch, transformers) happen inside the commands, so `stc --help` starts fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stc_cli import __version__
from stc_cli.configs import BenchConfig

app = typer.Typer(
    help="Evaluate streaming video LLMs with STC token compression (STC-Cacher + STC-Pruner).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Evaluate streaming video LLMs with STC token compression."""


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


_BENCH = BenchConfig()


@app.command()
def bench(
    vision: Annotated[
        str, typer.Option(help="Vision tower preset: siglip-so400m-384 or tiny.")
    ] = _BENCH.vision,
    llm: Annotated[str, typer.Option(help="LLM width preset: qwen2-7b, qwen2-0.5b or tiny.")] = _BENCH.llm,
    layers: Annotated[
        int | None, typer.Option(help="Cut both models to N layers. Default: full depth on CUDA, 2 on CPU.")
    ] = _BENCH.layers,
    llm_layers: Annotated[
        int | None, typer.Option(help="Cut the LLM to N layers instead (default: --layers).")
    ] = _BENCH.llm_layers,
    frames: Annotated[int, typer.Option(help="Timed frames per pass (even).")] = _BENCH.frames,
    warmup: Annotated[int, typer.Option(help="Untimed frames at the start of each pass.")] = _BENCH.warmup,
    repeats: Annotated[
        int, typer.Option(help="Passes per setting; the median is reported.")
    ] = _BENCH.repeats,
    update_ratio: Annotated[
        float, typer.Option(help="Cacher: share of tokens recomputed per layer.")
    ] = _BENCH.update_ratio,
    interval: Annotated[
        int, typer.Option(help="Cacher: a reference chunk every N chunks.")
    ] = _BENCH.interval,
    tokens_per_frame: Annotated[
        int, typer.Option(help="Pruner: tokens kept per frame.")
    ] = _BENCH.tokens_per_frame,
    memory_window: Annotated[
        int, typer.Option(help="Pruner memory window for the state check.")
    ] = _BENCH.memory_window,
    state_frames: Annotated[
        int, typer.Option(help="Chunks streamed for the state check (0 skips it).")
    ] = _BENCH.state_frames,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _BENCH.device,
    dtype: Annotated[
        str, typer.Option(help="auto (float16 on CUDA, float32 on CPU), float32, float16 or bfloat16.")
    ] = _BENCH.dtype,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
) -> None:
    """Latency of STC on random-weight models at real sizes: STC on vs off, side by side, in one run."""
    from rich.console import Console

    from stc_cli.bench import run_bench

    config = BenchConfig(
        vision=vision,
        llm=llm,
        layers=layers,
        llm_layers=llm_layers,
        frames=frames,
        warmup=warmup,
        repeats=repeats,
        update_ratio=update_ratio,
        interval=interval,
        tokens_per_frame=tokens_per_frame,
        memory_window=memory_window,
        state_frames=state_frames,
        device=device,
        dtype=dtype,
    )
    console = Console(stderr=True)
    try:
        with console.status("stc bench") as status:
            result = run_bench(config, progress=lambda msg: status.update(f"stc bench: {msg}"))
    except ValueError as error:
        _fail(str(error))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        Console().print(_bench_table(result))


def _bench_table(result: dict):
    from rich.table import Table

    vit, prune, prefill, cfg = result["vit"], result["pruner"], result["prefill"], result["config"]
    table = Table(
        title=f"STC latency, random weights: {vit['preset']} x{vit['layers']} layers, {prefill['preset']} "
        f"x{prefill['layers']} layers, {result['dtype']}, {result['environment']['device']}",
        caption=f"update_ratio {cfg['update_ratio']}, interval {cfg['interval']}, "
        f"{vit['tokens_per_frame']} ViT tokens, k {prefill['kept_tokens']}; "
        f"median of {cfg['repeats']} repeats of {cfg['frames']} frames",
    )
    for column in ("per frame", "STC off", "STC on", "on / off"):
        table.add_column(column, justify="left" if column == "per frame" else "right")
    table.add_row(
        "ViT ms", f"{vit['full_ms_per_frame']:.2f}", f"{vit['stc_ms_per_frame']:.2f}", f"{vit['ratio']:.3f}"
    )
    table.add_row(
        "pruner ms", "", f"{prune['ms_per_frame']:.3f}", f"{100 * prune['share_of_stc_vit']:.2f}% of STC ViT"
    )
    table.add_row(
        f"prefill ms ({prefill['full_tokens']} vs {prefill['kept_tokens']} tokens)",
        f"{prefill['full_ms_per_frame']:.2f}",
        f"{prefill['pruned_ms_per_frame']:.2f}",
        f"{prefill['ratio']:.3f}",
    )
    peaks = result["peak_memory_mb"]
    if "process_rss" in peaks:  # CPU: one number for the whole process
        table.add_row("process peak RSS MiB", "", f"{peaks['process_rss']:.0f}", "")
    else:  # CUDA: per stage
        for stage in ("vit", "prefill"):
            off, on = peaks[f"{stage}_full"], peaks[f"{stage}_{'stc' if stage == 'vit' else 'pruned'}"]
            table.add_row(f"{stage} peak MiB", f"{off:.0f}", f"{on:.0f}", f"{on / off:.3f}")
    table.add_row("cacher state bytes", "", f"{vit['cacher_state_bytes']:,}", "")
    if "state" in result:
        state = result["state"]
        first, last = state["chunks"]
        for name, key in (("pruner", "pruner_bytes"), ("tiny cacher", "tiny_cacher_bytes")):
            before, after = state[key]
            table.add_row(
                f"{name} state bytes, {first:,} -> {last:,} chunks", "", f"{before:,} -> {after:,}", ""
            )
    return table
