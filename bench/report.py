"""Results of one ``python -m bench`` run as JSON, a markdown table and a bar chart.

``bench/results/<stamp>.json|.md|.png``, with the markdown and the chart also copied to
``latest.md`` / ``latest.png``.

Ratios, per row:
- ``x slowest stage``: events/s over the slowest raw stage the run goes through (Kafka
  consume always, with the run's own client; COPY when it writes Postgres, which the peers do
  too; Parquet + WebHDFS when it writes HDFS);
- ``x naive`` / ``x quix``: events/s over the peer's (for the batcher's rows only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.common import Result

STAGES_OF = {
    "both": ("kafka", "copy", "parquet"),
    "pg": ("kafka", "copy"),
    "hdfs": ("kafka", "parquet"),
    "naive": ("kafka", "copy"),
    "quix": ("kafka", "copy"),
    "both_confluent": ("kafka_confluent", "copy", "parquet"),
}
COLORS = {"raw": "#9e9e9e", "info": "#cfcfcf", "ours": "#1f77b4", "peer": "#ff7f0e"}


def ratios(results: list[Result]) -> dict[str, dict[str, float | None]]:
    rate = {r.name: r.events_per_s for r in results if r.ok or r.extrapolated}
    out: dict[str, dict[str, float | None]] = {}
    for r in results:
        row: dict[str, float | None] = {"slowest_stage": None, "naive": None, "quix": None}
        if r.name in rate and rate[r.name] > 0:
            stages = [rate[s] for s in STAGES_OF.get(r.name, ()) if rate.get(s)]
            if stages:
                row["slowest_stage"] = rate[r.name] / min(stages)
            if r.kind == "ours":
                for peer in ("naive", "quix"):
                    if rate.get(peer):
                        row[peer] = rate[r.name] / rate[peer]
        out[r.name] = row
    return out


def to_json(meta: dict[str, Any], results: list[Result], profile: dict[str, Any] | None) -> str:
    rat = ratios(results)
    rows = []
    for r in results:
        row = r.as_dict()
        row["ratios"] = {k: None if v is None else round(v, 3) for k, v in rat[r.name].items()}
        rows.append(row)
    return json.dumps({"meta": meta, "results": rows, "profile": profile}, indent=2) + "\n"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def to_markdown(meta: dict[str, Any], results: list[Result], profile: dict[str, Any] | None) -> str:
    rat = ratios(results)
    ncpu = meta["machine"]["cpus"]
    lines = [
        f"# make bench: {meta['stamp']}",
        "",
        f"{meta['events']:,} events of {meta['mean_event_bytes']:.0f} B in a fresh topic of "
        f"{meta['partitions']} partitions ({meta['value_mb']:.0f} MB of values); "
        f"{ncpu} CPUs, {meta['machine']['mem_gib']:.0f} GiB; git {meta['git']}. "
        f"Whole run: {meta['wall_s'] / 60:.1f} min (preload {meta['preload_s']:.0f} s"
        + (f", profile run {profile['wall_s']:.0f} s" if profile and "wall_s" in profile else "")
        + ").",
        "",
        "| run | events | s | events/s | MB/s | proc CPU s/M | PG CPU s/M | peak RSS MiB "
        "| CPUs busy | other CPU s | x slowest stage | x naive | x quix | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        busy = (
            None
            if r.machine_busy_s is None or not r.seconds
            else 100 * r.machine_busy_s / (r.seconds * ncpu)
        )
        note = r.note if r.note else ""
        if not r.ok and not r.extrapolated:
            note = "FAILED: " + note
        rss = None if r.peak_rss_bytes is None else r.peak_rss_bytes / 2**20
        row = rat[r.name]
        lines.append(
            f"| {r.label} | {r.events:,} | {r.seconds:.1f} | "
            f"{r.events_per_s:,.0f}{'*' if r.extrapolated else ''} | {r.mb_per_s:.1f} | "
            f"{_num(r.per_million(r.client_cpu_s), '{:.1f}')} | "
            f"{_num(r.per_million(r.pg_cpu_s), '{:.1f}')} | {_num(rss)} | "
            f"{_num(busy, '{:.0f}%')} | {_num(r.other_cpu_s, '{:.1f}')} | "
            f"{_ratio(row['slowest_stage'])} | "
            f"{_ratio(row['naive'])} | {_ratio(row['quix'])} | {note.replace('|', '/')} |"
        )
    lines += [
        "",
        "- events/s: events over wall time. Batcher rows: from starting the daemon to Kafka's "
        "committed offsets equal to the end offsets on every partition (start-up, group join "
        "and the final flushes included). Peers: from starting them to all rows in the table. "
        "`*`: capped by the time budget, rate extrapolated from what was stored.",
        "- proc CPU s/M: CPU seconds per million events of the process doing the work (the "
        "daemon or the peer, all threads; for raw rows the bench process itself). PG CPU s/M: "
        "the PostgreSQL server, every process. CPUs busy: the whole machine over the run. "
        "Other CPU s: machine CPU not spent by the measured process, PostgreSQL, Kafka or HDFS "
        "(other work on this shared machine, the kernel, the bench's probes): noise.",
        f"- Daemon config: flushes of config/local.toml with max_age_s capped at "
        f"{meta['daemon']['postgres_flush']['max_age_s']} s: Postgres "
        f"{meta['daemon']['postgres_flush']}, HDFS {meta['daemon']['hdfs_flush']}.",
    ]
    for r in results:
        if r.kind == "ours" and r.extra.get("all_records_consumed_s") is not None:
            flushes = r.extra.get("flushes", {})
            spent = ", ".join(
                f"{sink} {f['flushes']:.0f} flushes {f['seconds']:.1f} s"
                for sink, f in flushes.items()
            )
            cpu = r.extra.get("thread_cpu_s") or {}
            by_thread = ", ".join(f"{name} {sec:.1f}" for name, sec in cpu.items())
            lines.append(
                f"- {r.label}: all records consumed at {r.extra['all_records_consumed_s']} s, "
                f"all committed at {r.seconds:.1f} s; time in flushes: {spent or '-'}"
                + (f"; CPU s by thread (the daemon's own count): {by_thread}." if cpu else ".")
            )
    if profile:
        lines += ["", "## Where the daemon's time goes (py-spy, separate unmeasured run)", ""]
        if "skipped" in profile:
            lines.append(f"Skipped: {profile['skipped']}")
        else:
            lines.append(
                f"{profile['samples']} samples at 100 Hz over {profile['seconds']} s "
                f"({profile['events_per_s_under_profiler']:,} events/s under the profiler); "
                f"share of non-idle samples. Stacks: `{profile['collapsed_stacks']}`."
            )
            lines += ["", "| thread | % |", "|---|---:|"]
            lines += [f"| {name} | {pct} |" for name, pct in profile["threads_pct"]]
            lines += ["", "| function (self time) | % |", "|---|---:|"]
            lines += [f"| `{name}` | {pct} |" for name, pct in profile["self_pct"][:12]]
            lines += ["", "| function (inclusive) | % |", "|---|---:|"]
            lines += [f"| `{name}` | {pct} |" for name, pct in profile["inclusive_pct"][:12]]
    return "\n".join(lines) + "\n"


def to_png(meta: dict[str, Any], results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    shown = [r for r in results if r.kind != "info"]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(shown) + 1.6))
    labels = [r.label + (" *" if r.extrapolated else "") for r in shown]
    values = [r.events_per_s if (r.ok or r.extrapolated) else 0.0 for r in shown]
    bars = ax.barh(
        labels,
        values,
        color=[COLORS[r.kind] for r in shown],
        hatch=["//" if r.extrapolated else "" for r in shown],
        edgecolor="white",
    )
    top = max(values, default=1.0) or 1.0
    for bar, r, value in zip(bars, shown, values, strict=True):
        text = f"{value:,.0f}" if (r.ok or r.extrapolated) else "failed"
        ax.text(
            bar.get_width() + top * 0.01,
            bar.get_y() + bar.get_height() / 2,
            text,
            va="center",
            fontsize=9,
        )
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("events/s")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))
    ax.set_title(
        f"make bench {meta['stamp']}: {meta['events']:,} events x {meta['mean_event_bytes']:.0f}"
        f" B, {meta['machine']['cpus']} CPUs"
    )
    ax.legend(
        handles=[
            Patch(color=COLORS["raw"], label="raw stage limit"),
            Patch(color=COLORS["ours"], label="batcher end to end"),
            Patch(color=COLORS["peer"], label="peer"),
        ],
        loc="lower right",
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    out_dir: Path,
    meta: dict[str, Any],
    results: list[Result],
    profile: dict[str, Any] | None,
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / meta["stamp"]
    paths = {
        "json": stem.with_suffix(".json"),
        "md": stem.with_suffix(".md"),
        "png": stem.with_suffix(".png"),
    }
    paths["json"].write_text(to_json(meta, results, profile))
    paths["md"].write_text(to_markdown(meta, results, profile))
    to_png(meta, results, paths["png"])
    shutil.copyfile(paths["md"], out_dir / "latest.md")
    shutil.copyfile(paths["png"], out_dir / "latest.png")
    return paths
