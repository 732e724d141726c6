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
_PANEL_SIZE = (5.0, 3.6)  # inches per panel


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


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    records = [r for r in doc["results"] if r["time_ms"] is not None]
    if not records:
        raise ValueError("no timed results to plot")
    axis = _x_axis(records)
    panels: dict[str, list[dict]] = {}
    if axis is not None:
        for record in records:
            panels.setdefault(_panel_key(record["config"], axis), []).append(record)
    count = len(panels) + 1
    columns = min(count, _PANEL_COLUMNS)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (title, group) in zip(flat, panels.items()):
        for row in dict.fromkeys(r["row"] for r in group):
            points = sorted((r["config"][axis], r["time_ms"]["median"]) for r in group if r["row"] == row)
            ax.plot(*zip(*points), marker="o", label=row)
        ax.set(xscale="log", yscale="log", xlabel=axis, ylabel="median ms per step", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    _speedup_bars(flat[len(panels)], records)
    for ax in flat[count:]:
        ax.set_visible(False)
    figure.suptitle(f"fusedrnn-bench — {doc['environment']['device_name']}", fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _speedup_bars(ax, records: list[dict]) -> None:
    labels = list(dict.fromkeys(r["label"] for r in records))
    backends = [row for row in dict.fromkeys(r["row"] for r in records) if row != BASELINE]
    width = 0.8 / max(1, len(backends))
    for i, row in enumerate(backends):
        speedups = {r["label"]: r["speedup_vs_torch"] for r in records if r["row"] == row}
        xs = [j + i * width for j, label in enumerate(labels) if speedups.get(label)]
        ax.bar(xs, [speedups[label] for label in labels if speedups.get(label)], width, label=row)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=60, ha="right", fontsize="x-small")
    ax.set(ylabel=f"speedup over {BASELINE} (higher is better)", yscale="log", title="speedup")
    ax.legend(fontsize="small")
