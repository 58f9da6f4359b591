"""The TA-VAAL paper's figures for a study: the label-efficiency curve, the improvement over
random (paper Figs 3-5), the labeled-set class entropy (Fig 7a) and true loss vs the strategy's
score (Fig 8). matplotlib is an optional dependency (the ``plot`` extra)."""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.diagnostics import spearman
from ..core.strategies import STRATEGIES
from .layout import RunRef, StudyError, read_study, say
from .summary import RunMetrics, check_metric, load_runs, mean_std, metric_scale

ENTROPY_COLUMN = "labeled_class_entropy"
CANDIDATE_COLUMNS = ("image_id", "score", "true_loss", "selected")
# one colour per strategy in every figure; random grey because it is the baseline
STRATEGY_COLORS = {
    "random": "#7f7f7f", "entropy": "#1f77b4", "coreset": "#2ca02c",
    "lloss": "#9467bd", "vaal": "#ff7f0e", "tavaal": "#d62728",
}
EXTRA_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#000000")
FIG_SIZE, FIG_DPI = (6.0, 4.0), 110


def _score_label(strategy: str) -> str:
    """The axis label: what the strategy's score means, as its registry entry says."""
    registered = STRATEGIES.get(strategy)
    return registered.score_meaning if registered is not None else "score"


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    unknown = sorted(s for s in set(strategies) if s not in STRATEGY_COLORS)
    colors = {s: EXTRA_COLORS[i % len(EXTRA_COLORS)] for i, s in enumerate(unknown)}
    colors.update({s: c for s, c in STRATEGY_COLORS.items() if s in strategies})
    return colors


@dataclasses.dataclass
class PlotResult:
    written: list[Path]
    skipped: dict[str, str]  # figure name -> why it was not drawn


def _figure(size: tuple[float, float] = FIG_SIZE) -> Any:
    """A pyplot-free figure: no global figure registry, no GUI backend, nothing to close."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise StudyError("plotting needs matplotlib: pip install 'tavaal-seg[plot]' "
                         "(or pip install matplotlib)") from None
    return Figure(figsize=size, dpi=FIG_DPI)


def supported_formats() -> set[str]:
    return set(_figure().canvas.get_supported_filetypes())


def _save(fig: Any, out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    fig.tight_layout()
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        if fmt == "png":
            # a 256-colour palette: a plot has few colours, and the file gets ~3x smaller (a scatter of
            # thousands of candidates stays well under 150 KB) with no visible change
            from PIL import Image

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=FIG_DPI)
            buffer.seek(0)
            with Image.open(buffer) as image:
                image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
                    .save(path, format="png", optimize=True)
        else:
            fig.savefig(path, format=fmt, dpi=FIG_DPI)
        paths.append(path)
    return paths


def _by_strategy(runs: Sequence[RunMetrics], column: str) -> dict[str, dict[int, dict[int, tuple[int, float]]]]:
    """strategy -> seed -> cycle -> (n_labeled, value of column)."""
    out: dict[str, dict[int, dict[int, tuple[int, float]]]] = {}
    for r in runs:
        per_cycle = {c: (int(row["n_labeled"]), row[column]) for c, row in r.rows.items() if column in row}
        if per_cycle:
            out.setdefault(r.ref.strategy, {})[r.ref.seed] = per_cycle
    return out


def _band(ax: Any, xs: Sequence[float], values: Sequence[Sequence[float]], color: str, label: str) -> None:
    stats = [mean_std(v) for v in values]
    means = [m for m, _ in stats]
    lows = [m - s for m, s in stats]
    highs = [m + s for m, s in stats]
    ax.plot(xs, means, marker="o", markersize=4, color=color, label=label)
    ax.fill_between(xs, lows, highs, color=color, alpha=0.18, linewidth=0)


def _curves(data: dict[str, dict[int, dict[int, tuple[int, float]]]], factor: float,
            baseline: dict[int, dict[int, tuple[int, float]]] | None = None
            ) -> dict[str, tuple[list[float], list[list[float]]]]:
    """strategy -> (x = labeled images per cycle, values per cycle over seeds); with a baseline,
    each value minus the baseline's at the same seed and cycle (paired by seed)."""
    curves = {}
    for strategy, seeds in data.items():
        cycles = sorted({c for per in seeds.values() for c in per})
        xs, values = [], []
        for cycle in cycles:
            vals, labeled = [], []
            for seed, per in seeds.items():
                if cycle not in per:
                    continue
                if baseline is not None and cycle not in baseline.get(seed, {}):
                    continue
                n, v = per[cycle]
                vals.append((v - (baseline[seed][cycle][1] if baseline is not None else 0.0)) * factor)
                labeled.append(n)
            if vals:
                xs.append(float(mean_std(labeled)[0]))
                values.append(vals)
        if xs:
            curves[strategy] = (xs, values)
    return curves


def _plot_lines(curves: dict[str, tuple[list[float], list[list[float]]]], colors: dict[str, str],
                xlabel: str, ylabel: str, title: str, zero_line: bool = False) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    for strategy, (xs, values) in curves.items():
        n = max(len(v) for v in values)
        _band(ax, xs, values, colors[strategy], f"{strategy} (n={n})")
    if zero_line:
        ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def read_candidates(path: Path) -> dict[str, list[float]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CANDIDATE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(f"{path}: missing columns {', '.join(missing)}; expected {','.join(CANDIDATE_COLUMNS)}")
        out: dict[str, list[float]] = {"score": [], "true_loss": [], "selected": []}
        for line_no, row in enumerate(reader, start=2):
            try:
                for key in out:
                    out[key].append(float(row[key]))
            except ValueError:
                raise StudyError(f"{path} line {line_no}: score, true_loss and selected must be numbers") from None
    return out


def last_candidates(ref: RunRef) -> tuple[int, Path] | None:
    """The last cycle of a run that has selections/cycle_NN.candidates.csv."""
    found = []
    for path in (ref.path / "selections").glob("cycle_*.candidates.csv"):
        number = path.name[len("cycle_"):-len(".candidates.csv")]
        if number.isdigit():
            found.append((int(number), path))
    return max(found) if found else None


def plot_study(study_dir: Path, out_dir: Path | None = None, formats: Sequence[str] = ("png",),
               metric: str | None = None, echo: Callable[[str], None] = say) -> PlotResult:
    """Draw curve, improvement, class_entropy and loss_vs_score into ``out_dir``; what cannot be
    drawn (no random run, no entropy column, no candidates file) is skipped with a note."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise StudyError(f"study directory {study_dir} not found")
    runs, _ = load_runs(study_dir)
    if not runs:
        raise StudyError(f"{study_dir} has no runs with metrics (expected runs/<strategy>/seed<k>/metrics.csv)")
    supported = supported_formats()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise StudyError(f"--format: unsupported {', '.join(bad)}; choose from {', '.join(sorted(supported))}")
    metric = metric or check_metric(runs)
    available = list(dict.fromkeys(c for r in runs for c in r.columns))
    if metric not in available:
        raise StudyError(f"--metric {metric!r} is in no run's metrics.csv; columns: {', '.join(available)}")
    out_dir = Path(out_dir) if out_dir is not None else study_dir / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    study = read_study(study_dir) or {}
    title = Path(study["config"]).stem if study.get("config") else study_dir.name
    strategies = list(dict.fromkeys(r.ref.strategy for r in runs))
    colors = strategy_colors(strategies)
    factor, unit = metric_scale(metric)
    result = PlotResult([], {})

    def save(fig: Any, name: str) -> None:
        for path in _save(fig, out_dir, name, formats):
            result.written.append(path)
            echo(f"wrote {path}")

    def skip(name: str, why: str) -> None:
        result.skipped[name] = why
        echo(f"skipped {name}: {why}")

    data = _by_strategy(runs, metric)
    ylabel = f"{metric} ({unit})" if unit else metric
    save(_plot_lines(_curves(data, factor), colors, "labeled images", ylabel,
                     f"{title}: {metric} vs labeled images (mean ± std over seeds)"), "curve")

    if "random" not in data:
        skip("improvement", "the study has no random runs to compare with")
    else:
        others = {s: v for s, v in data.items() if s != "random"}
        curves = _curves(others, factor, baseline=data["random"])
        if not curves:
            skip("improvement", "no strategy shares a seed with random")
        else:
            diff_unit = " (percentage points)" if unit == "%" else ""
            save(_plot_lines(curves, colors, "labeled images", f"{metric} − random{diff_unit}",
                             f"{title}: improvement over random, paired by seed (mean ± std)", zero_line=True),
                 "improvement")

    entropy = _by_strategy(runs, ENTROPY_COLUMN)
    if not entropy:
        skip("class_entropy", f"no run's metrics.csv has a {ENTROPY_COLUMN} column")
    else:
        save(_plot_lines(_curves(entropy, 1.0), colors, "labeled images", "class entropy of the labeled set (nats)",
                         f"{title}: labeled-set class balance (mean ± std over seeds)"), "class_entropy")

    panels = []
    for strategy in strategies:
        for r in sorted((r for r in runs if r.ref.strategy == strategy), key=lambda r: r.ref.seed):
            found = last_candidates(r.ref)
            if found is not None:
                panels.append((r.ref, *found))
                break
    if not panels:
        skip("loss_vs_score", "no run has selections/cycle_NN.candidates.csv")
    else:
        fig = _figure((min(3.3 * len(panels), 12.0), 3.8) if len(panels) > 1 else FIG_SIZE)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (ref, cycle, path) in zip(axes, panels):
            cand = read_candidates(path)
            picked = [s > 0.5 for s in cand["selected"]]
            for chosen, color, label, size in ((False, "#c8c8c8", "not selected", 5), (True, colors[ref.strategy],
                                                                                       "selected", 9)):
                xs = [x for x, p in zip(cand["score"], picked) if p is chosen]
                ys = [y for y, p in zip(cand["true_loss"], picked) if p is chosen]
                # rasterized: thousands of points would make the SVG huge
                ax.scatter(xs, ys, s=size, color=color, alpha=0.6 if chosen else 0.5, linewidths=0,
                           label=f"{label} ({len(xs)})", rasterized=True)
            # how well the score orders the true loss (the point of Fig 8)
            rho = spearman(torch.as_tensor(cand["score"], dtype=torch.float64),
                           torch.as_tensor(cand["true_loss"], dtype=torch.float64)) \
                if len(cand["score"]) > 2 else float("nan")
            ax.set_title(f"{ref.strategy}, seed {ref.seed}, cycle {cycle}\nSpearman ρ = {rho:.2f}", fontsize=9)
            ax.set_xlabel(_score_label(ref.strategy), fontsize=8)
            ax.set_ylabel("true task loss", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, markerscale=1.5)
        fig.suptitle(f"{title}: true loss vs the strategy's score of the candidates", fontsize=10)
        save(fig, "loss_vs_score")
    return result
