"""The report's pictures: FID curves, losses and D outputs, and sample grids side by side (matplotlib, Agg)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from . import registry
from .files import atomic_write
from .runs import LOG_COLUMNS
from .store import ResultsStore

SMOOTH = 50  # steps in the rolling mean of the loss curves; single-step GAN losses are mostly noise


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def _records(folder: Path) -> pd.DataFrame:
    store = ResultsStore.open(folder)
    try:
        return store.frame()
    finally:
        store.close()


def _labelled(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    setup = rows["setup"].fillna("") if "setup" in rows else pd.Series("", index=rows.index)
    rows["label"] = rows["variant"] + setup.map(lambda s: f" [{s}]" if s else "") + " / " + rows["arch"] + " / " \
        + rows["dataset"]
    return rows


def _runs(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "kind" not in frame:
        return frame
    return _labelled(frame[(frame["kind"] == "run") & frame.get("run", pd.Series(dtype=str)).notna()])


def write_plots(folder: Path | str) -> dict[str, Path]:
    folder = Path(folder)
    frame = _records(folder)  # read once for every figure
    written = sweep_plots(folder, frame)
    runs = _runs(frame)
    if runs.empty:
        return written
    for name, draw in (("curves", curves), ("losses", losses), ("samples", samples)):
        path = draw(folder, runs)
        if path is not None:
            written[name] = path
    return written


def curves(folder: Path, runs: pd.DataFrame):
    """FID against training step per variant: mean over seeds with a band of +- one standard deviation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    names = set()
    groups = list(runs.groupby("label", sort=True))
    for (label, group), colour in zip(groups, distinct_colours(len(groups))):
        metric = _curve_metric(folder, group["run"])
        tables = [pd.read_csv(folder / r / "eval.csv") for r in group["run"] if (folder / r / "eval.csv").is_file()]
        tables = [t for t in tables if len(t) and metric in t]
        if not tables:
            continue
        names.add(metric)
        stacked = pd.concat(tables).groupby("step")[metric]
        mean, sd = stacked.mean(), stacked.std().fillna(0)
        line, = ax.plot(mean.index, mean.values, marker="o", ms=3, color=colour, label=f"{label} (n={len(tables)})")
        ax.fill_between(mean.index, (mean - sd).values, (mean + sd).values, color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    title = " / ".join(sorted(names)).replace("fid", "FID")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{title} (in-training evaluation)")
    if all(name == "fid" for name in names):
        ax.set_yscale("log")
    ax.set_title(f"{title} during training (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, folder / "curves.png")


def _curve_metric(folder: Path, run_folders) -> str:
    """The column a run's in-training curve is drawn from: the metric its evaluation ranks by (run.json says),
    FID for runs that do not say."""
    import json

    for run in run_folders:
        try:
            metric = json.loads((folder / run / "run.json").read_text()).get("curve_metric")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(metric, str) and metric:
            return metric
    return "fid"


def losses(folder: Path, runs: pd.DataFrame):
    """D and G losses, mean D outputs on real and generated images, and penalty terms, per variant.

    Probabilities (and least squares' 0-1 scores) are drawn with their equilibrium 0.5 as a dashed line; critics'
    unbounded scores (hinge, WGAN, ...) get panels of their own without one. Penalties are drawn unweighted."""
    plt = _pyplot()
    curves = {}  # label -> (smoothed mean log over seeds, equilibrium, penalty columns)
    for label, group in runs.groupby("label", sort=True):
        logs = [pd.read_csv(folder / r / "log.csv") for r in group["run"] if (folder / r / "log.csv").is_file()]
        logs = [log for log in logs if len(log)]
        if not logs:
            continue
        mean = pd.concat(logs).groupby("step").mean(numeric_only=True).rolling(SMOOTH, min_periods=1).mean()
        penalties = [c for c in mean.columns if c not in LOG_COLUMNS and not c.startswith("augment_")]
        curves[label] = (mean, _equilibrium(folder / group["run"].iloc[0]), penalties)
    if not curves:
        return None
    color = dict(zip(curves, distinct_colours(len(curves))))  # one colour per variant throughout
    probabilities = {k: v for k, v in curves.items() if v[1] is not None}
    critics = {k: v for k, v in curves.items() if v[1] is None}
    with_penalties = {k: v for k, v in curves.items() if v[2]}
    augmented = {k: v for k, v in curves.items() if any(c.startswith("augment_") for c in v[0].columns)}
    rows = [("losses", curves)] + [(kind, group) for kind, group in (
        ("probabilities", probabilities), ("critics", critics), ("penalties", with_penalties),
        ("augmentation", augmented)) if group]
    fig = plt.figure(figsize=(11, 3.5 * len(rows)))
    grid = fig.add_gridspec(len(rows), 2)
    first = None
    for r, (kind, group) in enumerate(rows):
        if kind == "augmentation":  # ADA's p and the overfitting signal r_t it steers by
            axes = [fig.add_subplot(grid[r, :], sharex=first)]
            for label, (mean, _, _) in group.items():
                for column, style in zip([c for c in mean.columns if c.startswith("augment_")], ("-", "--", ":") * 4):
                    axes[0].plot(mean.index, mean[column], lw=1.2, ls=style, color=color[label],
                                 label=f"{label}: {column[len('augment_'):]}")
            axes[0].set_title("augmentation state (ADA: probability p, and r_t = E[sign D(real)] it steers by)",
                              fontsize=10)
        elif kind == "penalties":
            axes = [fig.add_subplot(grid[r, :], sharex=first)]
            for label, (mean, _, penalties) in group.items():
                for column, style in zip(penalties, ("-", "--", ":", "-.") * 4):
                    axes[0].plot(mean.index, mean[column], lw=1.2, ls=style, color=color[label],
                                 label=f"{label}: {column}")
            axes[0].set_title("penalty terms, unweighted (lazy penalties: the steps they apply on)", fontsize=10)
        else:
            axes = [fig.add_subplot(grid[r, c], sharex=first) for c in range(2)]
            columns = {"losses": (("d_loss", "discriminator loss (with weighted penalties)"),
                                  ("g_loss", "generator loss")),
                       "probabilities": (("d_real", "mean D(x) on real"), ("d_fake", "mean D(G(z)) on generated")),
                       "critics": (("d_real", "mean critic score on real (unbounded)"),
                                   ("d_fake", "mean critic score on generated"))}[kind]
            for ax, (column, title) in zip(axes, columns):
                for label, (mean, _, _) in group.items():
                    ax.plot(mean.index, mean[column], lw=1.2, color=color[label], label=label)
                ax.set_title(title, fontsize=10)
                if kind == "probabilities":
                    for level in sorted({v[1] for v in group.values()}):
                        ax.axhline(level, ls="--", color="black", lw=1, label=f"equilibrium D = {level:g}")
        first = first or axes[0]
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    for ax in fig.axes[-2:] if rows[-1][0] not in ("penalties", "augmentation") else fig.axes[-1:]:
        ax.set_xlabel("training step")
    fig.suptitle(f"Training dynamics (rolling mean over {SMOOTH} steps, averaged over seeds)", fontsize=11)
    fig.tight_layout()
    return _save(fig, folder / "losses.png")


def distinct_colours(n: int) -> list:
    """n colours, none repeated: matplotlib's cycle while it has enough (ten by default), then tab20's twenty,
    then evenly spaced colours of the turbo map. Past ten variants the default cycle would start over and draw
    two variants in one colour."""
    plt = _pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", [])
    if n <= len(cycle):
        return list(cycle[:n])
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, n)]


def _equilibrium(run: Path):
    """The equilibrium of the variant's D outputs, as its run recorded it (runs from before it was recorded: 0.5)."""
    import json

    try:
        return json.loads((run / "config.json").read_text())["resolved"]["variant"].get("equilibrium", 0.5)
    except (OSError, ValueError, KeyError, TypeError):
        return 0.5


PANELS_PER_ROW = 4  # sample grids side by side: 4 x 3.2 in at 110 dpi is about a page's (or a screen's) width
PANEL_TITLE_WIDTH = 34  # characters per line of a panel's title: a 3.2 in panel holds about that many at 9 pt


def panel_layout(n: int) -> tuple[int, int]:
    """(rows, columns) for n panels: rows of PANELS_PER_ROW, so ten variants make a block, not a strip."""
    columns = min(n, PANELS_PER_ROW)
    return -(-n // columns), columns


def samples(folder: Path, runs: pd.DataFrame):
    """One picture per variant (first seed), all from the same latent vectors: an 8x8 grid of images, or a scatter
    plot of 2,500 points over the real data for vector datasets."""
    from .sampling import generate, grid_count, grid_labels, load_generator, picture, real_points
    from .training import GRID_SEED
    from .errors import GanzooError

    plt = _pyplot()
    firsts = runs[runs["status"] == "completed"].sort_values("seed").groupby("label", sort=True).head(1)
    grids = []
    for _, row in firsts.iterrows():
        try:
            generator, run = load_generator(folder / row["run"], device="cpu")
        except GanzooError:
            continue
        shape = registry.dataset(run.config.dataset, run.config.dataset_options).shape
        count = grid_count(generator, shape)  # conditional: a row of 8 per class
        made = generate(generator, count, run.config.latent_dim, GRID_SEED, labels=grid_labels(generator, count))
        real = real_points(run) if shape.kind == "vector" else None
        grid = picture(made, real, nrow=8).float() / 255
        label = textwrap.fill(row["label"], PANEL_TITLE_WIDTH, break_on_hyphens=False)  # no overlap with the next
        grids.append((f"{label}\nseed {row['seed']}", grid.permute(1, 2, 0).numpy()))
    if not grids:
        return None
    rows, columns = panel_layout(len(grids))
    # constrained: room for panel titles of up to three lines below the figure's own
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")  # the panels past the last variant stay blank
    for ax, (title, image) in zip(axes.flat, grids):
        ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.shape[2] == 1 else None)
        ax.set_title(title, fontsize=9)
    fig.suptitle("Samples from the same latent vectors", fontsize=11)
    return _save(fig, folder / "samples.png")


def sweep_plots(folder: Path, frame: pd.DataFrame) -> dict[str, Path]:
    """A sweep's two pictures: the expected best FID after k settings (with its bootstrap band) and the
    distribution of FID over every setting tried, per variant."""
    from .sweep import expected_minimum

    if frame.empty or "kind" not in frame or not (frame["kind"] == "search").any():
        return {}
    search = _labelled(frame[(frame["kind"] == "search") & (frame["status"] == "completed")])
    search["fid"] = pd.to_numeric(search.get("fid"), errors="coerce")
    groups = [(label, group["fid"].dropna().to_numpy()) for label, group in search.groupby("label", sort=True)]
    groups = [(label, fids) for label, fids in groups if len(fids)]
    if not groups:
        return {}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (label, fids), colour in zip(groups, distinct_colours(len(groups))):
        curve = np.array(expected_minimum(fids))
        line, = ax.plot(curve[:, 0], curve[:, 1], marker="o", ms=3, color=colour,
                        label=f"{label} ({len(fids)} settings)")
        ax.fill_between(curve[:, 0], curve[:, 2], curve[:, 3], color=line.get_color(), alpha=0.15)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("settings tried (k)")
    ax.set_ylabel("expected best FID")
    ax.set_yscale("log")
    ax.set_title("Expected minimum FID after k settings (95% bootstrap band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written = {"expected_min": _save(fig, folder / "sweep_expected_min.png")}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(groups) + 2), 4.2))
    ax.boxplot([fids for _, fids in groups], showfliers=False)
    for i, (_, fids) in enumerate(groups, start=1):  # every setting as a point over its box
        ax.scatter(np.full(len(fids), i) + np.linspace(-0.12, 0.12, len(fids)), fids, s=10, alpha=0.7)
    ax.set_xticks(range(1, len(groups) + 1), [label.split(" / ")[0] for label, _ in groups], rotation=30)
    ax.set_ylabel("FID on the selection seed")
    ax.set_yscale("log")
    ax.set_title("FID over all settings tried, per variant")
    ax.grid(alpha=0.3, axis="y")
    written["fid_settings"] = _save(fig, folder / "sweep_fid_settings.png")
    return written
