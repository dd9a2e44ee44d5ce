"""The rich tables the CLI prints: `stc bench`, `stc check` and `stc score` results."""

from __future__ import annotations


def check_table(report):
    """Queries per task of a ``CheckReport``."""
    from rich.table import Table

    table = Table(title=f"{report.bench}: {report.folder}")
    table.add_column("task")
    table.add_column("queries", justify="right")
    for name, count in report.tasks.items():
        table.add_row(name, str(count))
    table.add_row("all", str(report.n_queries), style="bold")
    seconds = report.video_seconds
    if seconds.get("stream"):
        table.add_section()
        table.add_row("video-seconds encoded, stream schedule", f"{seconds['stream']:,.0f}")
        ratio = seconds["clip"] / seconds["stream"]
        table.add_row("video-seconds encoded, clip schedule", f"{seconds['clip']:,.0f} ({ratio:.2f}x)")
        if seconds["open_ended"]:
            table.add_row("queries up to the video's end (left out)", str(seconds["open_ended"]))
    return table


def protocol_table(protocol, others: list[str]):
    """``stc eval --show-protocol``: a ``Protocol``'s settings and the upstream source of each."""
    from rich.table import Table

    flags = f"--model {protocol.model} --bench {protocol.bench} --protocol {protocol.name}"
    table = Table(
        title=f"{flags}\n{protocol.summary}",
        caption=f"comparable with: {protocol.comparable}"
        + (f"\nother protocols: {', '.join(others)}" if others else ""),
    )
    for column in ("setting", "value", "reproduces"):
        table.add_column(column, overflow="fold")
    for name, value, source in protocol.rows():
        table.add_row(name, value, source, style="bold" if name in protocol.changed else None)
    return table


def score_table(report):
    from rich.table import Table

    from stc_cli import benchmarks

    table = Table(
        title=f"{report.bench}, {report.mode} scoring",
        caption=f"{report.n_total} records, {report.n_scored} scored, {report.n_unparsed} unparsed, "
        f"{report.n_missing} missing, {report.n_errors} errors",
    )
    for column in ("category / task", "n", "accuracy %"):
        table.add_column(column, justify="left" if column.startswith("category") else "right")
    tasks_of = {}
    for task, category in benchmarks.get(report.bench).TASKS.items():
        tasks_of.setdefault(category, []).append(task)
    shown = set()

    def task_rows(tasks):
        for task in tasks:
            table.add_row(f"  {task}", str(report.task_counts.get(task, "")), f"{report.tasks[task]:.2f}")
            shown.add(task)

    for category, value in report.categories.items():
        table.add_row(category, "", f"{value:.2f}", style="bold")
        task_rows([task for task in tasks_of.get(category, []) if task in report.tasks])
    rest = [task for task in report.tasks if task not in shown]  # Video-MME: tasks cut across durations
    if rest:
        table.add_row("tasks", "", "", style="bold")
        task_rows(rest)
    overall = "n/a" if report.overall is None else f"{report.overall:.2f}"  # None: nothing was scored
    table.add_row("overall", str(report.n_scored), overall, style="bold")
    return table


def bench_table(result: dict):
    from rich.table import Table

    vit, prune, prefill, cfg = result["vit"], result["pruner"], result["prefill"], result["config"]
    # The LLM rows' unit: a frame, or for Qwen2-VL one temporal patch (a "chunk" of two frames).
    step = 2 if vit.get("grid_thw") else 1
    per_call = vit.get("frames_per_chunk", step)  # frames per ViT call
    unit = "frame" if step == 1 else "chunk"
    timed = f"{cfg['frames']} calls of {per_call} frames" if per_call != step else f"{cfg['frames']} {unit}s"
    grid = f", grid {'x'.join(map(str, vit['grid_thw']))}" if vit.get("grid_thw") else ""
    table = Table(
        title=f"STC latency, random weights: {vit['preset']} x{vit['layers']} layers, {prefill['preset']} "
        f"x{prefill['layers']} layers, {result['dtype']}, {result['environment']['device']}",
        caption=f"update_ratio {cfg['update_ratio']}, interval {cfg['interval']}, "
        f"{vit['tokens_per_frame']} ViT tokens{grid}, LLM tokens from the "
        f"{prefill.get('full_tokens_from', 'bilinear pool')}, k {prefill['kept_tokens']}; "
        f"median of {cfg['repeats']} repeats of {timed}",
    )
    table.add_column(f"per {unit}" if step == 1 else f"per chunk ({step} frames)")
    for column in ("STC off", "STC on", "on / off"):
        table.add_column(column, justify="right")
    table.add_row(
        "ViT ms" + (f" ({per_call} frames per call)" if per_call != step else ""),
        f"{vit['full_ms_per_frame'] * step:.2f}",
        f"{vit['stc_ms_per_frame'] * step:.2f}",
        f"{vit['ratio']:.3f}",
    )
    table.add_row(
        "pruner ms", "", f"{prune['ms_per_frame']:.3f}", f"{100 * prune['share_of_stc_vit']:.2f}% of STC ViT"
    )
    table.add_row(
        f"prefill ms ({prefill['full_tokens']} vs {prefill['kept_tokens']} tokens"
        + (f", {per_call} frames per call)" if per_call != step else ")"),
        f"{prefill['full_ms_per_frame']:.2f}",
        f"{prefill['pruned_ms_per_frame']:.2f}",
        f"{prefill['ratio']:.3f}",
    )
    table.add_row(
        "  through ReKV's memory",
        f"{prefill['rekv_full_ms_per_frame']:.2f}",
        f"{prefill['rekv_pruned_ms_per_frame']:.2f}",
        f"{prefill['rekv_ratio']:.3f}",
    )
    if long := result.get("long_stream"):
        table.add_row(
            f"  ReKV, window full ({long['n_local']:,})",
            f"{long['full_ms_per_frame']:.2f}",
            f"{long['pruned_ms_per_frame']:.2f}",
            f"{long['ratio']:.3f}",
        )
    if frame := result.get("frame"):  # reports before 2026-11-30 have none
        table.add_row(
            f"ViT + pruner + prefill ms ({frame['prefill']})",
            f"{frame['full_ms'] * step:.2f}",
            f"{frame['stc_ms'] * step:.2f}",
            f"{frame['ratio']:.3f}",
        )
    if decode := result.get("decode"):
        for prefix, name in (("", "decode ms / token"), ("rekv_", "  through ReKV")):
            table.add_row(
                f"{name}, context {decode[f'{prefix}full_context_tokens']} vs "
                f"{decode[f'{prefix}pruned_context_tokens']}",
                f"{decode[f'{prefix}full_ms_per_token']:.2f}",
                f"{decode[f'{prefix}pruned_ms_per_token']:.2f}",
                f"{decode[f'{prefix}ratio']:.3f}",
            )
    if forest := result.get("streamforest"):
        table.add_row(
            f"StreamForest memory tokens after {forest['frames']} frames ({forest['tokens_per_frame']} vs "
            f"{forest['kept_tokens_per_frame']} per frame)",
            f"{forest['memory_tokens_full']:,}",
            f"{forest['memory_tokens_pruned']:,}",
            f"{forest['memory_tokens_pruned'] / forest['memory_tokens_full']:.3f}",
        )
        table.add_row(
            "  pruner + memory update and read ms / frame",
            f"{forest['update_full_ms_per_frame']:.2f}",
            f"{forest['update_pruned_ms_per_frame']:.2f}",
            f"{forest['update_pruned_ms_per_frame'] / forest['update_full_ms_per_frame']:.3f}",
        )
        table.add_row(
            "  prefill of the memory, ms",
            f"{forest['prefill_full_ms']:.2f}",
            f"{forest['prefill_pruned_ms']:.2f}",
            f"{forest['prefill_ratio']:.3f}",
        )
    if dispider := result.get("dispider"):
        table.add_row(
            f"Dispider ViT ms ({dispider['preset']} CLIP x{dispider['vit_layers']} layers, "
            f"{dispider['vit_tokens_per_frame']} tokens, interval {dispider['interval']}, ratio "
            f"{dispider['update_ratio']}, {dispider['frames']} frames)",
            f"{dispider['vit_full_ms_per_frame']:.2f}",
            f"{dispider['vit_stc_ms_per_frame']:.2f}",
            f"{dispider['vit_ratio']:.3f}",
        )
        table.add_row(
            f"  pruner ms ({dispider['tokens_per_frame']} -> {dispider['kept_tokens_per_frame']} tokens)",
            "",
            f"{dispider['pruner_ms_per_frame']:.3f}",
            f"{100 * dispider['pruner_share_of_stc_vit']:.2f}% of STC ViT",
        )
        table.add_row(
            f"  reaction prefill ms ({dispider['llm']} x{dispider['llm_layers']}, "
            f"{dispider['reaction_tokens_full']} vs {dispider['reaction_tokens_pruned']} tokens)",
            f"{dispider['prefill_full_ms_per_frame']:.2f}",
            f"{dispider['prefill_pruned_ms_per_frame']:.2f}",
            f"{dispider['prefill_ratio']:.3f}",
        )
    peaks = result["peak_memory_mb"]
    if "process_rss" in peaks:  # CPU: one number for the whole process
        table.add_row("process peak RSS MiB", "", f"{peaks['process_rss']:.0f}", "")
    else:  # CUDA: per stage
        for stage in ("vit", "prefill", "window", "decode"):
            if f"{stage}_full" in peaks:
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
    if launches := result.get("launches"):  # counted on the warm-up chunks
        per_call = launches["per_chunk"]
        for name, off, on in (("ViT", "vit_full", "vit_stc"), ("prefill", "prefill_full", "prefill_pruned")):
            off, on = per_call[off], per_call[on]
            table.add_row(f"{name} launches per call", f"{off:.0f}", f"{on:.0f}", f"{on / off:.3f}")
        table.add_row("pruner launches per call", "", f"{per_call['pruner']:.0f}", "")
        syncs = ", ".join(f"{step} {n}" for step, n in launches["host_syncs"].items() if n)
        table.add_row("host syncs", "", syncs or "none", "")
    return table


def baselines_table(result: dict):
    """``stc bench --compress``: each method's stages beside STC's at its budget, None if none was asked.
    Prefill time depends only on the tokens kept: each method gets the measured row of its count."""
    from rich.table import Table

    vit, prefill, baselines = result["vit"], result["prefill"], result.get("baselines", {})
    if "tome_r" not in vit and not baselines:
        return None
    full_vit, full, kept = vit["full_ms_per_frame"], prefill["full_tokens"], prefill["kept_tokens"]
    prefill_ms = {full: prefill["full_ms_per_frame"], kept: prefill["pruned_ms_per_frame"]}
    stc_compress = baselines.get("stc", {}).get("ms_per_frame", result["pruner"]["ms_per_frame"])
    rows = [("none", full_vit, None, full), ("stc", vit["stc_ms_per_frame"], stc_compress, kept)]
    if "tome_r" in vit:
        rows.append(("tome", vit["tome_ms_per_frame"], None, full))
    rows += [
        (name, full_vit, b["ms_per_frame"], b["kept_tokens"])
        for name, b in baselines.items()
        if name != "stc"
    ]
    tome = (
        f"; tome leaves {vit['tome_tokens_left']} of {vit['tokens_per_frame']} ViT tokens"
        if "tome_r" in vit
        else ""
    )
    table = Table(
        title=f"Compression methods at STC's budget ({kept} of {full} tokens per frame)",
        caption=f"the same run; prefill: the measured row of each token count{tome}",
    )
    columns = (
        "method",
        "ViT ms",
        "compress ms",
        "tokens to LLM",
        "prefill ms",
        "ViT / none",
        "prefill / none",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, vit_ms, compress_ms, tokens in rows:
        ms = prefill_ms.get(tokens)
        table.add_row(
            name,
            f"{vit_ms:.2f}",
            "" if compress_ms is None else f"{compress_ms:.3f}",
            f"{tokens:g}",
            "" if ms is None else f"{ms:.2f}",
            f"{vit_ms / full_vit:.3f}",
            "" if ms is None else f"{ms / prefill['full_ms_per_frame']:.3f}",
        )
    return table


_TIMING_ROWS = (
    ("decode ms / frame", lambda t: t.ms_per_frame.get("decode")),
    ("ViT ms / frame", lambda t: t.ms_per_frame.get("vit")),
    ("compress ms / frame", lambda t: t.ms_per_frame.get("compress")),
    ("prefill ms / frame", lambda t: t.ms_per_frame.get("prefill")),
    ("answer ms / query", lambda t: t.answer_ms),
    ("visual tokens / frame in", lambda t: t.tokens_in_per_frame),
    ("visual tokens / frame kept", lambda t: t.tokens_kept_per_frame),
)


def compare_table(names: list[str], reports: list, timings: list, accuracy: bool = True, runs=()):
    """Runs side by side: accuracy per task and overall (unless not ``accuracy``), each run's records,
    errors, unparsed and ``runs`` (``scoring.run_status``: complete, partial N/M, unknown; marked unless
    complete), then where the time went (``TimingSummary``, None for upstream files). With two runs a last
    column gives second / first."""
    from rich.table import Table

    title = "runs side by side" if len(names) > 1 else "where the time went"
    table = Table(title=title, caption=f"{reports[0].bench}, {reports[0].mode} scoring" if accuracy else None)
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    ratio = len(names) == 2
    if ratio:
        table.add_column("ratio", justify="right")

    def row(label, values, style=None, digits=2):
        cells = [f"{v:.{digits}f}" if v is not None else "" for v in values]
        if ratio:
            a, b = values
            cells.append(f"{b / a:.3f}" if a and b is not None else "")
        table.add_row(label, *cells, style=style)

    if accuracy:
        for task in dict.fromkeys(task for report in reports for task in report.tasks):
            row(f"  {task}", [report.tasks.get(task) for report in reports])
        row("accuracy %", [report.overall for report in reports], style="bold")
    if runs:  # counts, not rates: no ratio; a partial or failing run must not pass for a finished one
        table.add_section()
        extra = [""] if ratio else []
        for label, field in (("records", "n_total"), ("errors", "n_errors"), ("unparsed", "n_unparsed")):
            table.add_row(label, *[str(getattr(report, field)) for report in reports], *extra)
        colour = {"complete": "green", "unknown": "yellow"}
        marked = [f"[{colour.get(run, 'bold red')}]{run}[/]" for run in runs]
        table.add_row("run", *marked, *extra)
    if any(timings):
        if accuracy:
            table.add_section()
        for label, read in _TIMING_ROWS:
            row(label, [read(t) if t else None for t in timings], digits=1)
        row("frames encoded", [t.frames if t else None for t in timings], digits=0)
    return table
