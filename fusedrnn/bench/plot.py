"""--plot: time vs batch (or hidden size) per backend for sweeps, and speedup bars over torch.nn.

Works from the --json document's records, so a saved run can be re-plotted. matplotlib is imported here only, lazily
(it is the optional `plot` extra).
"""

from __future__ import annotations

import math
from pathlib import Path

from .rows import BASELINE

_SWEEP_AXES = ("batch", "hidden_size")  # the first of these that varies across a run becomes the x axis
_PANEL_COLUMNS = 3
_PANEL_SIZE = (5.0, 3.6)  # inches per line panel
_ANNOTATE_UP_TO = 8  # configs; beyond that the value labels on the bars overlap
_BAR_HEIGHT = 4.0  # inches for the speedup bars (with their rotated labels)


def _x_axis(records: list[dict]) -> str | None:
    for axis in _SWEEP_AXES:
        if len({r["config"][axis] for r in records}) > 1:
            return axis
    return None


def _panel_key(config: dict, axis: str) -> str:
    fixed = {k: v for k, v in config.items() if k != axis}
    shape = f"T={fixed['seq_len']}" + "".join(
        f" {short}={fixed[name]}" for short, name in (("N", "batch"), ("H", "hidden_size")) if name in fixed
    )
    return f"{fixed['cell']} {fixed['mode']} {fixed['dtype']} {shape}"


#: Short names of config fields in bar labels (cell, mode and dtype are shown by value).
_SHORT = {"seq_len": "T", "batch": "N", "input_size": "I", "hidden_size": "H", "layers": "L", "proj_size": "P"}


def _short_labels(records: list[dict]) -> dict[str, str]:
    """record label -> only the config fields that differ between the run's configs (cell and mode always)."""
    config = records[0]["config"]
    varying = [k for k in config if len({r["config"][k] for r in records}) > 1 or k in ("cell", "mode")]

    def short(c: dict) -> str:
        return " ".join(f"{_SHORT[k]}={c[k]}" if k in _SHORT else str(c[k]) for k in varying)

    return {r["label"]: short(r["config"]) for r in records}


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    records = [r for r in doc["results"] if r["time_ms"] is not None]
    if not records:
        raise ValueError("no timed results to plot")
    axis = _x_axis(records)
    panels: dict[str, list[dict]] = {}
    if axis is not None:
        for record in records:
            panels.setdefault(_panel_key(record["config"], axis), []).append(record)
    columns = max(1, min(len(panels), _PANEL_COLUMNS))
    line_rows = math.ceil(len(panels) / columns)
    width, height = _PANEL_SIZE
    # The speedup bars get a full-width row of their own below the line panels: their labels need the room.
    figure = plt.figure(figsize=(max(width * columns, 8), height * line_rows + _BAR_HEIGHT), layout="constrained")
    grid = figure.add_gridspec(line_rows + 1, columns, height_ratios=[height] * line_rows + [_BAR_HEIGHT])
    for i, (title, group) in enumerate(panels.items()):
        ax = figure.add_subplot(grid[i // columns, i % columns])
        for row in dict.fromkeys(r["row"] for r in group):
            points = sorted((r["config"][axis], r["time_ms"]["median"]) for r in group if r["row"] == row)
            ax.plot(*zip(*points), marker="o", label=row)
        ax.set(xscale="log", yscale="log", xlabel=axis, ylabel="median ms per step", title=title)
        ax.title.set_fontsize("small")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    bars = figure.add_subplot(grid[line_rows, :])
    _speedup_bars(bars, records)
    bars.yaxis.set_major_formatter(FormatStrFormatter("%gx"))
    low, high = bars.get_ylim()
    # Within two decades the minor ticks (2x, 3x, 0.5x...) are the only readable landmarks; beyond, they clutter.
    narrow = math.log10(high / low) < 2
    bars.yaxis.set_minor_formatter(FormatStrFormatter("%.2gx") if narrow else NullFormatter())
    bars.tick_params(axis="y", which="minor", labelsize="x-small")
    figure.suptitle(
        f"fusedrnn-bench — {doc['environment']['device_name']}, torch {doc['environment']['torch']}", fontsize="medium"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, format="png")  # --plot promises a PNG, whatever the suffix
    plt.close(figure)


def _speedup_bars(ax, records: list[dict]) -> None:
    short = _short_labels(records)
    labels = list(dict.fromkeys(r["label"] for r in records))
    # A record's `baseline` (torch.nn, or a variant's plain loop) is absent from files written before the variants.
    baselines = {r.get("baseline", BASELINE) for r in records}
    backends = [row for row in dict.fromkeys(r["row"] for r in records) if row not in baselines]
    width = 0.8 / max(1, len(backends))
    for i, row in enumerate(backends):
        speedups = {r["label"]: r["speedup_vs_torch"] for r in records if r["row"] == row}
        shown = [(j, speedups[label]) for j, label in enumerate(labels) if speedups.get(label)]
        if shown:
            xs, ys = zip(*shown)
            bars = ax.bar([x + i * width for x in xs], ys, width, label=row)
            if len(labels) <= _ANNOTATE_UP_TO:
                ax.bar_label(bars, fmt="%.2fx", fontsize="xx-small")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ticks = [j + width * (len(backends) - 1) / 2 for j in range(len(labels))]
    ax.set_xticks(ticks, [short[label] for label in labels], rotation=30, ha="right", fontsize="x-small")
    shown = " / ".join(sorted(baselines))
    ax.set(ylabel=f"speedup over {shown}", yscale="log", title=f"speedup over {shown} (higher is better)")
    ax.title.set_fontsize("small")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="x-small")
