"""`stc compare`: several runs of one benchmark and protocol against a BASE run, in the paper's layout.

Accuracy comes from ``scoring`` (the same numbers as `stc score`), per-frame ViT and prefill time from
``timings``; this module only lines the runs up against BASE and writes ``compare.md``, ``compare.json``
and ``compare.png``. A run that is incomplete or has errors is marked in every output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from stc_cli.evaluation.run_folder import read_json
from stc_cli.scoring import Submission, finite, read_results, run_status, score_records
from stc_cli.timings import summarize

MARK = "†"  # md and png: this run is incomplete or has errors


def compare_runs(base: Path, runs: list[Path], mode: str | None = None) -> dict:
    """``{"bench", "protocol", "mode", "rows", "notes"}``, one row per run, BASE first. ValueError (one
    line) for a folder that cannot be scored, or runs of different benchmarks or protocols."""
    paths = [Path(base), *map(Path, runs)]
    read = [(path, read_results(path), _header(path)) for path in paths]
    names = _names(paths)
    for what, values in (
        ("benchmarks", [results.bench for _, results, _ in read]),
        ("protocols", [_protocol(header) for *_, header in read]),
    ):
        if len(set(values)) > 1:
            found = ", ".join(f"{name} {value}" for name, value in zip(names, values, strict=True))
            raise ValueError(f"runs of different {what} ({found}); compare runs of one at a time")
    loaded = []
    for path, (bench, records, source, notes), header in read:
        if bench == "egoschema" and any(not record.get("target") for record in records):  # before
            # score_records, which would write a submission file beside the run
            raise ValueError(f"{path}: EgoSchema full set, whose answers are hidden: nothing to compare")
        report = score_records(path, bench, records, source, mode, notes)
        assert not isinstance(report, Submission)
        loaded.append((path, records, report, header))
    rows = [_row(name, *entry) for name, entry in zip(names, loaded, strict=True)]
    first = rows[0]
    for row in rows:
        row["retention"] = _ratio(row["overall"], first["overall"])
        for stage in ("vit", "prefill"):
            change = _ratio(row[f"{stage}_ms_per_frame"], first[f"{stage}_ms_per_frame"])
            row[f"{stage}_reduction"] = None if change is None else 100.0 - change
    notes = [f"{loaded[0][2].mode} scoring (`--mode` changes it)"]
    devices = {(header.get("environment") or {}).get("device_name") for *_, header in loaded}
    if len(devices) > 1:
        shown = ", ".join(sorted(str(device) for device in devices))
        notes.append(f"the runs ran on different devices ({shown}): their times do not compare")
    return finite(
        {
            "bench": loaded[0][2].bench,
            "protocol": _protocol(loaded[0][3]),
            "mode": loaded[0][2].mode,
            "rows": rows,
            "notes": notes,
        }
    )


def write(result: dict, out: Path) -> list[Path]:
    """``out/compare.md``, ``compare.json`` and ``compare.png``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "compare.md", out / "compare.json", out / "compare.png"
    md.write_text(markdown(result), encoding="utf-8")
    js.write_text(json.dumps(finite(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plot(result, png)
    return [md, js, png]


def markdown(result: dict) -> str:
    """The paper's table: per-category accuracy, overall, retention, ViT and prefill ms per frame."""
    rows = result["rows"]
    categories = list(dict.fromkeys(c for row in rows for c in row["categories"]))
    head = [
        "Method",
        *categories,
        "Overall",
        "Retention",
        "ViT ms/frame (reduction)",
        "Prefill ms/frame (reduction)",
    ]
    lines = [
        f"{result['bench']}, protocol {result['protocol']}: accuracy in %, BASE = {rows[0]['run']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(head) - 1)) + "|",
    ]
    for index, row in enumerate(rows):
        label = f"{row['run']} ({row['method']})" + (" BASE" if index == 0 else "")
        cells = [label + (f" {MARK}" if _flagged(row) else "")]
        cells += [_num(row["categories"].get(c)) for c in categories]
        cells += [_num(row["overall"]), _num(row["retention"], "%")]
        for stage in ("vit", "prefill"):
            ms, cut = row[f"{stage}_ms_per_frame"], row[f"{stage}_reduction"]
            cells.append(_num(ms) + ("" if index == 0 or ms is None else f" ({_num(cut, '%')})"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for row in filter(_flagged, rows):
        lines.append(f"{MARK} {row['run']}: {_problem(row)}; its numbers are not a finished run's.  ")
    lines.append("Reduction: percent less time per frame than BASE (negative: slower).  ")
    lines += [f"Note: {note}.  " for note in result.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def plot(result: dict, path: Path) -> None:
    """Accuracy against prefill and ViT ms per frame, one labelled point per run; BASE a star, a flagged
    run hollow with ``†`` after its name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, stage, title in zip(axes, ("prefill", "vit"), ("prefill", "ViT"), strict=True):
        left_out = []
        for index, row in enumerate(result["rows"]):
            x, y = row[f"{stage}_ms_per_frame"], row["overall"]
            if x is None or y is None:
                left_out.append(row["run"])
                continue
            flagged = _flagged(row)
            colour = f"C{index % 10}"
            ax.scatter(
                [x],
                [y],
                s=160 if index == 0 else 70,
                marker="*" if index == 0 else "o",
                facecolors="none" if flagged else colour,
                edgecolors=colour,
                linewidths=1.5,
                zorder=3,
            )
            label = (
                f"{row['run']} ({row['method']})"
                + (" BASE" if index == 0 else "")
                + (f" {MARK}" if flagged else "")
            )
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
        ax.set_xlabel(f"{title} ms per frame (lower is faster)")
        ax.set_ylabel("overall accuracy %")
        ax.set_title(f"accuracy vs {title} time" + (f"\nno data: {', '.join(left_out)}" if left_out else ""))
        ax.grid(True, alpha=0.3)
        ax.margins(0.25)
    caption = f"{result['bench']}, protocol {result['protocol']}, {result['mode']} scoring"
    if any(map(_flagged, result["rows"])):
        caption += f"; hollow / {MARK}: incomplete or with errors"
    figure.suptitle(caption, fontsize=10)
    figure.savefig(path, dpi=120)


def _row(name: str, path: Path, records: list[dict], report, header: dict) -> dict:
    timing = summarize(records)
    per_frame = timing.ms_per_frame if timing else {}
    status = run_status(path, records)
    return {
        "run": name,
        "method": _method(header, name),
        "overall": report.overall,
        "categories": dict(report.categories),
        "retention": None,
        "vit_ms_per_frame": per_frame.get("vit"),
        "prefill_ms_per_frame": per_frame.get("prefill"),
        "vit_reduction": None,
        "prefill_reduction": None,
        "n_total": report.n_total,
        "n_errors": report.n_errors,
        "complete": status == "complete",
        "status": status,
        "path": str(path),
    }


def _header(path: Path) -> dict:
    """The run folder's run.json, or {} where there is none (a bare samples.jsonl, an upstream file)."""
    return read_json((path if path.is_dir() else path.parent) / "run.json")


def _settings(header: dict, key: str) -> dict:
    value = (header.get("settings") or {}).get(key)
    return value if isinstance(value, dict) else {}


def _protocol(header: dict) -> str:
    return str(_settings(header, "protocol").get("name") or "unrecorded")


def _method(header: dict, name: str) -> str:
    """``settings.config.compress`` where the run records a method other than ``stc``; for ``stc`` (the
    default, recorded with ``--no-stc`` too) or none recorded, what the STC switches say."""
    config = _settings(header, "config")
    if not config:
        return name
    if config.get("compress") not in (None, "", "stc"):
        return str(config["compress"])
    if not config.get("stc", True):
        return "none"
    cacher, pruner = config.get("cacher", True), config.get("pruner", True)
    return "stc" if cacher and pruner else "cacher" if cacher else "pruner" if pruner else "none"


def _names(paths: list[Path]) -> list[str]:
    """Each run's folder name; the paths as given where two names would be equal."""
    names = [(p.parent if p.name == "samples.jsonl" else p).name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _ratio(value, base) -> float | None:
    """``value`` in percent of ``base``; None where either is missing or ``base`` is 0."""
    if value is None or base is None or not math.isfinite(value) or not math.isfinite(base) or base == 0:
        return None
    return 100.0 * value / base


def _flagged(row: dict) -> bool:
    return not row["complete"] or bool(row["n_errors"])


def _problem(row: dict) -> str:
    parts = [] if row["complete"] else [row["status"].replace("unknown", "completeness unknown")]
    if row["n_errors"]:
        parts.append(f"{row['n_errors']} of {row['n_total']} records failed")
    return ", ".join(parts)


def _num(value, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}{unit}" if not unit else f"{value:.1f}{unit}"
