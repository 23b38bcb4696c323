"""Leaderboards from a results store: aggregate seeds, rank by FID, render for papers, compare two of them.

`leaderboard(folder)` gives one row per (variant, architecture, dataset) with numeric columns (mean, sd over
seeds, 95% confidence half-width); `render(board, fmt)` formats it as Markdown, LaTeX (booktabs, best value in
bold), HTML or CSV, with the protocol printed under the table; `compare(a, b)` sets two leaderboards side by
side with per-row deltas and Welch's t-test over seeds, refusing to rank rows scored under different protocols.
"""
from __future__ import annotations

import json
import math
import shutil
import textwrap
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import escape
from .errors import GanzooError
from .files import atomic_write, write_json
from .store import ResultsStore

GROUP = ["kind", "variant", "setup", "arch", "dataset"]
KIND_ORDER = {"real": 0, "run": 1, "untrained": 2}
# (column in the per-seed records, leaderboard column prefix, direction for "best": -1 lower is better). The
# metrics a board shows come from its records (each says how to read its columns: EvalResult.to_record); these
# are the columns of records written before metrics were plugins, and the FID curve's two summary columns.
METRICS = [("fid", "fid", -1), ("is_mean", "is", +1), ("kid_mean", "kid", -1), ("precision", "precision", +1),
           ("recall", "recall", +1), ("best_fid", "best_fid", -1),
           ("final_fid", "last_fid", -1), ("classes_covered", "classes", +1), ("class_kl", "class_kl", -1),
           ("d_gap", "d_gap", 0), ("augment_p", "aug_p", 0)]
CURVE = {"best_fid", "final_fid"}  # from the in-training FID curve, not from a metric's final score
# From the run's own final stats (training.py), shown where a run has them, never ranked (direction 0): the
# overfitting signal (D's mean output on training images minus held-out real ones) and ADA's final p.
RUN_FACTS = {"d_gap", "augment_p"}
LEGACY_FORMATS = {"d_gap": ".3f", "aug_p": ".2f",
                  "fid": ".2f", "is": ".2f", "kid": ".4g", "precision": ".3f", "recall": ".3f", "best_fid": ".2f",
                  "last_fid": ".2f", "classes": ".1f", "class_kl": ".3f"}
# Protocol fields that must agree before two scores may be ranked against each other (records written before
# metrics were plugins; newer records also name their metrics' own fields).
COMPARABLE = ["extractor", "extractor_weights_sha256", "n_fake", "n_real", "reference_split", "image_size",
              "resize", "channels", "is_splits", "kid_subsets", "kid_subset_size"]
# Protocol fields that describe one run rather than the protocol; not printed under the table.
PER_RUN = {"run", "run_key", "variant", "arch", "steps_trained", "run_status", "train_wall_time_s", "generated_from",
           "real_vs_real", "eval_seconds", "evaluated_at", "seed", "device", "classifier_train_seconds"}


def per_seed(folder: Path | str) -> pd.DataFrame:
    """Every stored record (one per seed, plus the real-data and untrained rows) as a DataFrame."""
    store = ResultsStore.open(folder)
    try:
        frame = store.frame()
    finally:
        store.close()
    if frame.empty:
        raise GanzooError(f"{store.path} holds no results yet")
    return frame


# Per-row training fields: how each row was trained, one column each (d_steps ... and option.<name>).
RECIPE_COLUMNS = ["setting", "setting_desc", "d_steps", "optimizer", "lr", "beta1", "beta2"]


def metric_columns(frame: pd.DataFrame) -> list[dict]:
    """How to read the metric columns of these records, in the order their metrics report them: dicts with name
    (record column), board (leaderboard column), header, better ("lower", "higher" or None), format, shown. Records
    carry this themselves (metric_info); records written before metrics were plugins get the columns of the first
    releases (those of them the records hold)."""
    found: dict[str, dict] = {}
    infos = list(frame["metric_info"]) if "metric_info" in frame else [None] * len(frame)
    for info in infos:
        if isinstance(info, dict) and isinstance(info.get("columns"), dict):
            for name, column in info["columns"].items():
                if isinstance(column, dict) and name not in found:
                    found[name] = {**column, "name": name, "board": column.get("board") or name}
    if any(not isinstance(info, dict) for info in infos):
        for source, board, direction in METRICS:
            if source not in CURVE | RUN_FACTS and source in frame and source not in found:
                found[source] = {"name": source, "board": board, "header": HEADERS[board],
                                 "better": "lower" if direction < 0 else "higher", "format": LEGACY_FORMATS[board],
                                 "shown": True}
    return list(found.values())


def _board_columns(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(record column, board column, direction) of every metric column, then the FID curve's two columns."""
    columns = [(c["name"], c.get("board") or c["name"], -1 if c.get("better") == "lower" else +1)
               for c in metric_columns(frame)]
    return columns + [c for c in METRICS if c[0] in CURVE | RUN_FACTS and c[0] in frame]


def _rank_columns(frame: pd.DataFrame) -> dict[str, str]:
    """dataset -> the board column its rows are ranked by: what its records name (their first metric's primary
    column), FID for records written before metrics were plugins."""
    boards = {c["name"]: c.get("board") or c["name"] for c in metric_columns(frame)}
    ranks: dict[str, str] = {}
    for dataset, group in frame.groupby("dataset", sort=False):
        named = [info.get("rank_by") for info in group.get("metric_info", pd.Series(dtype=object))
                 if isinstance(info, dict) and info.get("rank_by")]
        column = max(set(named), key=named.count) if named else "fid"
        ranks[dataset] = boards.get(column, column)
    return ranks


def leaderboard(folder: Path | str, spread: Optional[str] = None) -> pd.DataFrame:
    """Aggregate a report folder's results over seeds; real data first, then each dataset's rows ranked by its
    primary metric (FID: lower is better). A sweep's search runs are not rows here (sweep.sweep_table and the
    sweep plots show them). `spread` is what "±" shows in the tables: "sd" over seeds, or "se" (the standard
    error, sd / sqrt(seeds), as the mode-collapse papers report); default: the benchmark's own setting."""
    frame = per_seed(folder)
    unchosen = _unchosen_rows(frame, folder)
    board = aggregate(frame[frame["kind"].isin(KIND_ORDER)], extra_rows=unchosen)
    board.attrs["spread"] = _spread(folder, spread)
    selections = frame[frame["kind"] == "selection"]
    if not selections.empty or unchosen:
        from .sweep import selection_rule

        chosen = {(r.variant, r.arch, r.dataset): r for r in selections.itertuples()}
        board["selected_by"] = [
            (f"setting {int(chosen[key].setting)} of {int(chosen[key].settings_scored)} scored, "
             f"search FID {chosen[key].selection_fid:.2f}") if key in chosen else ""
            for key in zip(board["variant"], board["arch"], board["dataset"])]
        board.attrs["selection_rule"] = selection_rule()
    search = frame[frame["kind"] == "search"]
    if (search["status"] == "failed").any():  # a search cell to retry: the benchmark is not done
        board.attrs["all_completed"] = False
    return board


def _unchosen_rows(frame: pd.DataFrame, folder: Path | str) -> list[dict[str, Any]]:
    """A sweep's variants that have no chosen setting (a search cell failed and awaits its retry, or no setting
    scored at all): each stays on the board as a row with no score, its search's outcome and first error."""
    search = frame[frame["kind"] == "search"]
    if search.empty:
        return []
    chosen = {(r["variant"], r["arch"], r["dataset"]) for _, r in frame[frame["kind"] == "selection"].iterrows()}
    report_seeds = _report_seed_count(folder)
    rows = []
    for (variant, arch, dataset), group in search.groupby(["variant", "arch", "dataset"], sort=False):
        if (variant, arch, dataset) in chosen:
            continue
        counts = group["status"].value_counts()
        outcome = ", ".join(f"{int(counts[s])} {'ok' if s == 'completed' else s}"
                            for s in ("completed", "failed", "diverged") if s in counts)
        errors = group.loc[group["status"] != "completed", "error"].dropna() if "error" in group else []
        setups = group["setup"].dropna() if "setup" in group else []
        rows.append({"kind": "run", "variant": variant, "setup": str(setups.iloc[0]) if len(setups) else "",
                     "arch": arch, "dataset": dataset,
                     "seeds": report_seeds, "completed": 0, "failed": 0, "diverged": 0, "recipe": "",
                     "status": f"no setting chosen (search: {outcome})",
                     "error": next((str(e) for e in errors if e), "")})
    return rows


def _stored_spec(folder: Path | str) -> dict:
    """The benchmark's settings as its report folder stored them ({} when it holds none or they do not read)."""
    store = ResultsStore.open(folder)
    try:
        spec = store.meta().get("spec")
    finally:
        store.close()
    try:
        settings = json.loads(spec) if spec else {}
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def _report_seed_count(folder: Path | str) -> int:
    """How many report seeds the benchmark has (its stored spec), at least 1."""
    seeds = _stored_spec(folder).get("seeds")
    return len(seeds) if isinstance(seeds, list) and seeds else 1


def aggregate(frame: pd.DataFrame, extra_rows: Optional[list[dict]] = None) -> pd.DataFrame:
    """One row per (kind, variant, setup, arch, dataset) over seeds; `extra_rows` (rows without records, such as
    a sweep's variant with no chosen setting) are ranked with them."""
    frame = keyed_option_columns(frame.copy())
    if "setup" not in frame:  # records written before setups existed
        frame["setup"] = ""
    frame["setup"] = frame["setup"].fillna("")
    metrics = _board_columns(frame)
    ranks = _rank_columns(frame)
    for column in [source for source, _, _ in metrics] + ["steps", "wall_time_s", "images_per_s", "g_images_per_s",
                                                          "d_images_per_s"]:
        if column not in frame:
            frame[column] = np.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    rows = []
    for keys, group in frame.groupby(GROUP, sort=False, dropna=False):
        done = group[group["status"] == "completed"]
        # A cell whose metric plugin failed is "failed" but keeps its other metrics: they count where present.
        scored = group[group["status"].isin(["completed", "failed"])]
        row: dict[str, Any] = dict(zip(GROUP, keys))
        row.update(seeds=len(group), completed=len(done), failed=int((group["status"] == "failed").sum()),
                   diverged=int((group["status"] == "diverged").sum()))
        for source, name, _ in metrics:
            values = scored[source].dropna().to_numpy(dtype=float)
            row[name], row[f"{name}_sd"] = _mean_sd(values)
            row[f"{name}_se"] = row[f"{name}_sd"] / math.sqrt(len(values)) if len(values) > 1 else math.nan
            if name in INTERVALS:
                row[f"{name}_ci95_low"], row[f"{name}_ci95_high"] = interval(values, positive=INTERVALS[name])
        recipes = group["recipe"].dropna().unique() if "recipe" in group else []
        row["recipe"] = recipes[0] if len(recipes) == 1 else ("mixed: " + " | ".join(recipes) if len(recipes) else "")
        for column in RECIPE_COLUMNS + sorted(c for c in frame.columns if c.startswith("option.")):
            if column in group:
                values = group[column].dropna().unique()
                row[column] = values[0] if len(values) == 1 else (None if not len(values) else
                                                                   "mixed: " + " | ".join(map(str, values)))
        row["steps"] = group["steps"].max()
        row["wall_time_s"] = done["wall_time_s"].mean()
        row.update(_throughput(done))
        errors = group.loc[group["status"] != "completed", "error"].dropna() if "error" in group else []
        row["error"] = next((e for e in errors if e), "")
        row["status"] = _status(row)
        for field in comparable_fields(frame):
            column = f"protocol.{field}"
            if column in done and done[column].notna().any():
                values = done[column].dropna().astype(str).unique()
                row[column] = values[0] if len(values) == 1 else "mixed: " + ", ".join(values)
        rows.append(row)
    rows += extra_rows or []
    board = pd.DataFrame(rows)
    board["_order"] = board["kind"].map(KIND_ORDER).fillna(1)
    # Ranked within each dataset by its own primary metric (FID, reverse KL, ...), better first.
    directions = {name: direction for _, name, direction in metrics}
    board["_rank"] = [row.get(ranks.get(row["dataset"], "fid"), math.nan) * -directions.get(
        ranks.get(row["dataset"], "fid"), -1) for row in board.to_dict("records")]
    one_rank = len(set(ranks.values())) <= 1
    keys = ["_order", "_rank"] if one_rank else ["_dataset", "_order", "_rank"]
    board["_dataset"] = board["dataset"].map({d: i for i, d in enumerate(dict.fromkeys(board["dataset"]))})
    board = board.sort_values(keys, na_position="last", kind="stable").drop(columns=["_order", "_rank", "_dataset"])
    board = board.reset_index(drop=True)
    if (board["setup"] == "").all():  # no setups axis: the board (and its CSV) as before setups existed
        board = board.drop(columns="setup")
    board.attrs["protocol"] = protocol_of(frame)
    board.attrs["all_completed"] = bool((board["completed"] == board["seeds"]).all())
    board.attrs["metric_columns"] = metric_columns(frame)
    board.attrs["rank_by"] = ranks
    return board


SPREADS = ("sd", "se")


def _spread(folder: Path | str, spread: Optional[str]) -> str:
    """The "±" of the tables: as asked, else the benchmark's `spread` setting (its stored spec), else sd."""
    if spread is None:
        spread = _stored_spec(folder).get("spread")
    if spread in (None, ""):
        return "sd"
    if spread not in SPREADS:
        raise GanzooError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")
    return spread


def comparable_fields(frame: pd.DataFrame) -> list[str]:
    """The protocol fields that must agree before these records' scores are ranked: what each record's metrics
    name (metric_info), or the fields of the first releases for records that name none."""
    fields: list[str] = []
    named = False
    for info in frame.get("metric_info", pd.Series(dtype=object)):
        if isinstance(info, dict) and isinstance(info.get("comparable"), list):
            named = True
            fields += [f for f in info["comparable"] if isinstance(f, str) and f not in fields]
    legacy = [f for f in COMPARABLE if f not in fields and (not named or f"protocol.{f}" in frame)]
    return fields + legacy


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (NaN where there are too few)."""
    if len(values) == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


# Metrics given a 95% interval over seeds, and whether they are positive (then the interval is taken on the log).
INTERVALS = {"fid": True, "is": True, "kid": False}
MIN_SEEDS_FOR_INTERVAL = 3
INTERVAL_NOTE = ("FID 95% CI: Student's t interval of the mean of log FID over seeds, mapped back (FID is positive "
                 "and its spread grows with its size, so the interval never goes below 0); shown from "
                 f"{MIN_SEEDS_FOR_INTERVAL} seeds on: with 2, t's factor of 12.7 makes any interval uninformative.")


def interval(values: np.ndarray, positive: bool = False) -> tuple[float, float]:
    """95% confidence interval over seeds (NaN with fewer than MIN_SEEDS_FOR_INTERVAL values).

    For a positive metric the t interval is taken on the logarithm and mapped back: it stays inside the
    metric's range and is multiplicative, as spread over seeds is for FID; otherwise Student's t as it is."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < MIN_SEEDS_FOR_INTERVAL or (positive and (values <= 0).any()):
        return math.nan, math.nan
    scaled = np.log(values) if positive else values
    half = stats.t.ppf(0.975, len(values) - 1) * scaled.std(ddof=1) / math.sqrt(len(values))
    low, high = scaled.mean() - half, scaled.mean() + half
    return (float(np.exp(low)), float(np.exp(high))) if positive else (float(low), float(high))


def _throughput(done: pd.DataFrame) -> dict[str, float]:
    """Generated images per second (one batch per generator step: the speed a reader compares) and the real
    images D sees per second (d_steps batches per step), mean over seeds. Records written before both were
    stored hold only D's, as images_per_s; d_steps (1 where not recorded) gives G's from it."""
    d_steps = pd.to_numeric(done.get("d_steps", pd.Series(np.nan, index=done.index)), errors="coerce")
    d_steps = d_steps.astype(float).fillna(1)  # float: the store reads whole-number columns as nullable Int64
    generated = done["g_images_per_s"].fillna(done["images_per_s"] / d_steps)
    seen_by_d = done["d_images_per_s"].fillna(done["images_per_s"])
    return {"g_images_per_s": generated.mean(), "d_images_per_s": seen_by_d.mean()}


def keyed_option_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Option columns as bench writes them, option.<kind>.<plugin>.<option>: results stored before they were keyed
    by plugin hold a variant's options as option.<option>, moved here under each row's own variant."""
    for column in [c for c in frame.columns if c.startswith("option.") and c.split(".")[1] not in OPTION_KINDS]:
        option = column[len("option."):]
        for variant in frame.loc[frame[column].notna(), "variant"].unique():
            rows = frame["variant"] == variant
            frame.loc[rows, f"option.variant.{variant}.{option}"] = frame.loc[rows, column]
        frame = frame.drop(columns=column)
    return frame


OPTION_KINDS = ("variant", "arch")  # bench.option_columns


def _status(row: dict[str, Any]) -> str:
    parts = [f"{row['completed']} ok"] if row["completed"] else []
    parts += [f"{row[s]} {s}" for s in ("failed", "diverged") if row[s]]
    return ", ".join(parts)


def _text(value: Any) -> str:
    """A protocol value as text; a count read back as a float (pandas, beside a missing value) stays a count."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def protocol_of(frame: pd.DataFrame) -> dict[str, Any]:
    """The protocol fields shared by the scored rows; a field that differs between rows is listed as mixed."""
    done = frame[frame["status"] == "completed"] if "status" in frame else frame
    protocol: dict[str, Any] = {}
    for column in sorted(c for c in frame.columns if c.startswith("protocol.")):
        field = column[len("protocol."):]
        if field in PER_RUN:
            continue
        values = list(dict.fromkeys(_text(v) for v in done[column].dropna()))
        if field in ("n_fake",):  # the real-data row scores all real training images it has; keep the runs'
            values = list(dict.fromkeys(_text(v) for v in done.loc[done["kind"] == "run", column].dropna())) or values
        if values:
            protocol[field] = values[0] if len(values) == 1 else "mixed: " + " | ".join(values)
    return protocol


# ---------------------------------------------------------------------------------------------------------
# rendering

HEADERS = {"fid": "FID", "is": "IS", "kid": "KID", "precision": "precision", "recall": "recall",
           "best_fid": "best FID (curve)",
           "last_fid": "last FID (curve)", "classes": "classes >=5%", "class_kl": "class KL",
           "d_gap": "D gap (train - held-out)", "aug_p": "aug. p (final)"}


def _fmt(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{spec}}"


def shown_metrics(board: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """(board column, header, direction, format) of every metric the tables show, in their metrics' order: what
    the board's records describe (metrics are plugins), then the FID curve's columns where a run kept a curve."""
    columns = board.attrs.get("metric_columns") or [
        {"board": b, "header": HEADERS[b], "better": "lower" if d < 0 else "higher", "format": LEGACY_FORMATS[b]}
        for src, b, d in METRICS if src not in CURVE | RUN_FACTS]
    shown = [(c["board"], c.get("header") or c["board"], -1 if c.get("better") == "lower" else +1,
              c.get("format") or ".3g") for c in columns if c.get("shown", True) and c["board"] in board]
    shown += [(b, HEADERS[b], d, LEGACY_FORMATS[b]) for src, b, d in METRICS
              if src in CURVE | RUN_FACTS and b in board and board[b].notna().any()]
    return shown


def display_table(board: pd.DataFrame, bold: Optional[callable] = None) -> pd.DataFrame:
    """The leaderboard as strings: 'mean ± sd' per metric, confidence interval, seeds, speed, status.

    `bold(text)` wraps the best value of each metric column among trained variants (LaTeX uses it)."""
    bold = bold or (lambda s: s)
    runs = board["kind"] == "run"
    metrics = shown_metrics(board)
    best = {}
    for name, _, direction, _ in metrics:
        values = board.loc[runs & (board["completed"] + board["failed"] > 0), name].dropna()
        if len(values):
            if direction:  # run facts (the overfitting gap, ADA's p) are not ranked
                best[name] = values.min() if direction < 0 else values.max()
    out = pd.DataFrame({"variant": board["variant"]})
    if "setup" in board and (board["setup"].fillna("") != "").any():
        out["setup"] = board["setup"].fillna("").replace("", "-")
    out["arch"], out["dataset"] = board["arch"], board["dataset"]
    out["seeds"] = [f"{c}/{s}" for c, s in zip(board["completed"], board["seeds"])]
    metric_headers = []
    for name, header, _, spec in metrics:
        cells = []
        for i, row in board.iterrows():
            text = _fmt(row[name], spec)
            spread = f"{name}_{board.attrs.get('spread', 'sd')}"
            if not math.isnan(row.get(spread, math.nan)):
                text += f" ± {_fmt(row[spread], spec)}"
            if runs[i] and name in best and row[name] == best[name]:
                text = bold(text)
            cells.append(text)
        out[header] = cells
        metric_headers.append(header)
        if name == "fid":
            out["FID 95% CI"] = [_interval_cell(low, high) for low, high in
                                 zip(board["fid_ci95_low"], board["fid_ci95_high"])]
            metric_headers.append("FID 95% CI")
    # how each row was trained, after its scores: the fields that differ between rows
    option_columns = []
    for column, title in _differing_recipe_columns(board):
        out[title] = [_recipe_cell(v) for v in board[column]]
        if column.startswith("option."):
            option_columns.append(title)
    if "selected_by" in board:
        out["selected by"] = board["selected_by"].fillna("").replace("", "-")
    out["steps"] = [_fmt(v, ".0f") for v in board["steps"]]
    out["train s"] = [_fmt(v, ".0f") for v in board["wall_time_s"]]
    out["img/s"] = [_fmt(v, ".0f") for v in board["g_images_per_s"]]
    if _d_sees_more(board):  # critics with several steps per generator step
        out["D img/s"] = [_fmt(v, ".0f") for v in board["d_images_per_s"]]
    errors = board["error"] if "error" in board else pd.Series("", index=board.index)
    out["status"] = [f"{status}: {_shorten(error)}" if isinstance(error, str) and error else status
                     for status, error in zip(board["status"], errors)]  # the reason, not just "1 failed"
    out.attrs.update(metric_columns=metric_headers, option_columns=option_columns)  # for report.html's layout
    return out


def _interval_cell(low: float, high: float) -> str:
    return "-" if math.isnan(low) or math.isnan(high) else f"[{low:.2f}, {high:.2f}]"


def _d_sees_more(board: pd.DataFrame) -> bool:
    """Whether D's throughput differs from G's for some row (a variant with several critic steps)."""
    g, d = board["g_images_per_s"], board["d_images_per_s"]
    return bool(((d - g).abs() > 1e-6 * g.abs()).any())


def _differing_recipe_columns(board: pd.DataFrame) -> list[tuple[str, str]]:
    """The training fields whose values differ between trained rows (the rest is common to all: the protocol)."""
    runs = board[board["kind"] == "run"]
    shown = []
    for column in RECIPE_COLUMNS + sorted(c for c in board.columns if c.startswith("option.")):
        if column == "setting" or column not in runs:
            continue
        values = {str(v) for v in runs[column] if v is not None and v == v}
        if len(values) > 1 or (column.startswith("option.") and values) or (column == "setting_desc" and values):
            title = {"setting_desc": "setting", "d_steps": "D steps"}.get(column, _option_title(column))
            shown.append((column, title))
    return shown


def _option_title(column: str) -> str:
    """option.variant.r1.gamma -> r1.gamma, option.arch.dcgan.width -> dcgan.width: the plugin and its option."""
    parts = column.split(".", 2)
    return parts[2] if len(parts) == 3 and parts[1] in OPTION_KINDS else column.replace("option.", "", 1)


def _recipe_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def protocol_lines(board: pd.DataFrame) -> list[str]:
    protocol = dict(board.attrs.get("protocol", {}))
    lines = []
    if protocol.get("scores_are"):
        lines.append(str(protocol.pop("scores_are")))
    lines.append("Protocol: " + "; ".join(f"{k}={v}" for k, v in protocol.items() if k not in PER_RUN))
    spread = ("standard error over seeds (sd / sqrt(seeds))" if board.attrs.get("spread") == "se"
              else "sd over seeds")
    lines.append(f"Rows: mean ± {spread}; real data = real training images "
                 "scored against the reference split by the same pipeline; curve FIDs use the in-training "
                 "evaluation sample count; img/s: generated images per second of training (D img/s: the real "
                 "images the discriminator sees, d_steps per generator step).")
    lines.append(INTERVAL_NOTE)
    if board.attrs.get("selection_rule"):
        lines.append("Sweep: " + board.attrs["selection_rule"] + ".")
    return lines


# ---------------------------------------------------------------------------------------------------------
# the terminal: a compact table that fits the window and points to the full ones

# The compact table shows the metrics the full tables show (shown_metrics), less the curve's, with shorter
# headers and formats where these help it fit.
SUMMARY_HEADERS = {"precision": "prec", "classes >=5%": "classes", "% high quality": "% HQ"}
SUMMARY_FORMATS = {"fid": ".1f", "kid": ".3g", "precision": ".2f", "recall": ".2f"}
# Recipe headers as the compact table abbreviates them (option columns are already short: plugin.option).
SHORT_TITLES = {"setting": "set", "D steps": "D st", "optimizer": "opt", "beta1": "b1", "beta2": "b2"}
SUMMARY_PROTOCOL = ("extractor", "n_fake", "n_real", "reference_split", "image_size")
# Text cut short before any column is left out (status, variant), and as far as the last resort goes (status).
CUT_FIRST = {"status": 16, "variant": 20}
STATUS_MIN = 8


def render_terminal(board: pd.DataFrame, folder: Optional[Path | str] = None, width: Optional[int] = None) -> str:
    """What `ganzoo bench` and `ganzoo leaderboard` print: scores first, the recipe only where rows differ,
    fitted to the terminal's width (`width`, default the terminal's), then the protocol in brief and where the
    full tables are."""
    width = width or shutil.get_terminal_size().columns
    table, numeric = summary_table(board)
    text, left_out = _fit(table, numeric, width)
    notes = [_direction_note(board)]
    if left_out:
        notes.append(f"Left out to fit {width} columns: {', '.join(left_out)}.")
    protocol = board.attrs.get("protocol", {})
    if protocol.get("scores_are"):
        notes.append(str(protocol["scores_are"]))
    notes.append("Protocol: " + "; ".join(f"{k}={_text(protocol[k])}" for k in SUMMARY_PROTOCOL if k in protocol)
                 + "; every field in protocol.json and under the full tables.")
    notes.append(_full_tables_note(folder))
    return text + "\n\n" + "\n".join(textwrap.fill(escape.terminal(line), width) for line in notes if line) + "\n"


def summary_table(board: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The compact table as strings (variant, [arch, dataset], metrics, differing recipe fields, status) and
    the names of its numeric columns."""
    out = pd.DataFrame({"variant": board["variant"]})
    for axis in varying_axes(board):
        out[axis] = board[axis]
    numeric = []
    for column, header, spec, better in summary_metrics(board):
        if board[column].isna().all():
            continue
        spread = f"{column}_{board.attrs.get('spread', 'sd')}" if column in ranked_columns(board) else None
        out[header] = [_summary_cell(row, column, spec, spread) for _, row in board.iterrows()]
        if better:
            out.attrs.setdefault("arrows", {})[header] = "↓" if better < 0 else "↑"
        if spread:
            out.attrs.setdefault("ranked", []).append(header)  # never left out to fit
        numeric.append(header)
    runs = board[board["kind"] == "run"]
    for column, title in _differing_recipe_columns(board):
        if len({str(v) for v in runs[column] if v is not None and v == v}) > 1:
            out[SHORT_TITLES.get(title, title)] = [_recipe_cell(v) for v in board[column]]
    errors = board["error"] if "error" in board else pd.Series("", index=board.index)
    out["status"] = [f"{status}: {' '.join(error.split())}" if isinstance(error, str) and error else status
                     for status, error in zip(board["status"], errors)]
    for column in out.columns:  # names and errors from records: shown, never obeyed (escape sequences)
        out[column] = [escape.terminal(v) for v in out[column]]
    return out, numeric


def summary_metrics(board: pd.DataFrame) -> list[tuple[str, str, str, int]]:
    """(board column, header, format, better: -1 lower, +1 higher) of the compact table's metrics."""
    return [(name, SUMMARY_HEADERS.get(header, header), SUMMARY_FORMATS.get(name, spec), direction)
            for name, header, direction, spec in shown_metrics(board) if name not in ("best_fid", "last_fid")]


def varying_axes(board: pd.DataFrame) -> list[str]:
    """setup, arch and dataset when the grid has more than one of them (the real-data row's "-" aside); a single
    one is said once, not on every row."""
    trained = board[board["kind"] != "real"]
    return [axis for axis in ("setup", "arch", "dataset") if axis in board and trained[axis].nunique() > 1]


def ranked_columns(board: pd.DataFrame) -> set[str]:
    """The columns rows are ranked by (FID; reverse KL on the mixtures; ...): the compact table gives them their
    spread over seeds, the other metrics their means (every spread is in the full tables)."""
    return set(board.attrs.get("rank_by", {}).values()) or {"fid"}


def _summary_cell(row: pd.Series, column: str, spec: str, spread: Optional[str]) -> str:
    text = _fmt(row[column], spec)
    value = row.get(spread, math.nan) if spread else math.nan
    if isinstance(value, float) and not math.isnan(value):
        text += f" ± {_fmt(value, spec)}"
    return text


def _fit(table: pd.DataFrame, numeric: list[str], width: int) -> tuple[str, list[str]]:
    """The table rendered within `width` characters where it can be: first the status text is cut short, then
    recipe columns and then the last metrics are left out (named, so a reader knows to look in the full
    tables), and last the status is cut to STATUS_MIN characters."""
    recipe = [c for c in table.columns if c not in numeric and c not in ("variant", "setup", "arch", "dataset", "status")]
    ranked = table.attrs.get("ranked", [])  # never the column rows are ranked by, nor the first metric
    droppable = recipe[::-1] + [c for c in numeric[:0:-1] if c not in ranked]
    left_out = []
    limits = {column: max(map(len, table[column]), default=0) for column in CUT_FIRST}
    while True:
        cut = table.assign(**{column: [_cut(v, limit) for v in table[column]] for column, limit in limits.items()})
        text = _tabulate(cut, numeric, table.attrs.get("arrows", {}))
        excess = max(map(len, text.splitlines())) - width
        if excess <= 0:
            return text, left_out
        # the start of an error or a long name says enough here; report.html and the .md have all of it
        longer = [column for column, least in CUT_FIRST.items() if limits[column] > least]
        if longer:
            limits[longer[0]] = max(CUT_FIRST[longer[0]], limits[longer[0]] - excess)
        elif droppable:
            left_out.append(droppable.pop(0))
            table = table.drop(columns=left_out[-1])
        elif limits["status"] > STATUS_MIN:
            limits["status"] = max(STATUS_MIN, limits["status"] - excess)
        else:
            return text, left_out  # a very narrow terminal: the table wraps


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _tabulate(table: pd.DataFrame, numeric: list[str], arrows: dict[str, str]) -> str:
    """Plain columns (tabulate's "simple"), numbers right-aligned, each metric's header with its better
    direction."""
    from tabulate import tabulate

    align = ["right" if c in numeric else "left" for c in table.columns]
    headers = [f"{c} {arrows[c]}" if c in arrows else c for c in table.columns]
    return tabulate(table.values.tolist(), headers=headers, tablefmt="simple", disable_numparse=True,
                    colalign=align)


def _direction_note(board: pd.DataFrame) -> str:
    with_spread = [header for column, header, _, _ in summary_metrics(board) if column in ranked_columns(board)]
    spread = "standard error" if board.attrs.get("spread") == "se" else "sd"
    given = f" ({', '.join(with_spread)} ± {spread})" if with_spread else ""
    return (f"Means over seeds{given}; ↓ lower is better, ↑ higher is better; real data on top, the untrained "
            "generator at the bottom.")


def _full_tables_note(folder: Optional[Path | str]) -> str:
    """Where every column is: the report folder's files that exist, and the --format option."""
    files = []
    if folder is not None:
        files = [str(Path(folder) / name) for name in ("leaderboard.md", "report.html")
                 if (Path(folder) / name).is_file()]
    where = (", ".join(files) + " (also leaderboard.csv .tex .html), or ") if files else ""
    return (f"Every column (sd, 95% interval, recipe, speed) and the whole protocol: {where}--format FORMAT "
            "(md, latex, csv or html).")


def render(board: pd.DataFrame, fmt: str = "md") -> str:
    """The leaderboard as Markdown, LaTeX, HTML or CSV; the protocol follows every table."""
    if fmt == "csv":  # plain data that pandas.read_csv reads as it is; the protocol is in protocol.json
        return escape.csv_frame(board).to_csv(index=False)
    if fmt == "md":
        table = escape.markdown_table(display_table(board))
        return table + "\n\n" + "\n\n".join(escape.markdown(line) for line in protocol_lines(board)) + "\n"
    if fmt == "latex":
        return _latex(board)
    if fmt == "html":
        table = display_table(board).to_html(index=False, escape=True, border=0)
        notes = "".join(f"<p>{escape.html_text(line)}</p>\n" for line in protocol_lines(board))
        return table + "\n" + notes
    raise GanzooError(f"unknown format '{fmt}'; use md, latex, csv or html")


_latex_escape = escape.latex  # the one LaTeX escaping place (escape.py)
BOLD = "\ue000"  # marks a cell to set in bold: a private-use character no escaping touches


def _latex_rows(table: pd.DataFrame, kinds: Optional[pd.Series] = None) -> tuple[str, list[str]]:
    """A table's header line and body lines, every cell escaped; a cell wrapped in BOLD is set in bold (textbf), and
    a rule separates rows of different kinds."""
    header = " & ".join(escape.latex(c) for c in table.columns) + r" \\"
    body = []
    for i, (_, row) in enumerate(table.iterrows()):
        cells = []
        for value in row:
            text = escape.latex(value)
            if BOLD in text:
                text = r"\textbf{" + text.replace(BOLD, "") + "}"
            cells.append(text)
        body.append(" & ".join(cells) + r" \\")
        if kinds is not None and i + 1 < len(kinds) and kinds.iloc[i + 1] != kinds.iloc[i]:
            body.append(r"\midrule")  # reference rows (real data, untrained) set apart from the ranking
    return header, body


def _latex(board: pd.DataFrame) -> str:
    table = display_table(board, bold=lambda s: f"{BOLD}{s}{BOLD}")
    header, body = _latex_rows(table, board["kind"])
    notes = "\n".join(escape.latex_comment(line) for line in protocol_lines(board))
    caption = escape.latex(" ".join(protocol_lines(board)[:1]))
    text_columns = 4 + int("setup" in table.columns)  # variant, [setup,] arch, dataset, then numbers
    return "\n".join([
        r"% requires \usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "l" * text_columns + "r" * (len(table.columns) - text_columns) + "}",
        r"\toprule", header, r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
        r"\caption{" + caption + "}", r"\end{table}", notes, ""])


def write_reports(folder: Path | str, board: pd.DataFrame) -> dict[str, Path]:
    """leaderboard.{csv,md,tex,html}, protocol.json and the plots, all written atomically."""
    from .plots import write_plots

    folder = Path(folder)
    written = {}
    for fmt, suffix in (("csv", "csv"), ("md", "md"), ("latex", "tex"), ("html", "html")):
        text = render(board, fmt)
        path = folder / f"leaderboard.{suffix}"
        atomic_write(path, lambda f, t=text: f.write(t), mode="w")
        written[fmt] = path
    write_json(folder / "protocol.json", {"protocol": board.attrs.get("protocol", {}),
                                          "store": ResultsStore.open(folder).meta()})
    written.update(write_plots(folder))
    frame = per_seed(folder)
    if (frame["kind"] == "search").any():
        from .sweep import sweep_table

        table = sweep_table(frame)
        atomic_write(folder / "sweep.csv", lambda f: f.write(escape.csv_frame(table).to_csv(index=False)), mode="w")
        atomic_write(folder / "sweep.md", lambda f: f.write(escape.markdown_table(table) + "\n"), mode="w")
        written.update(sweep_csv=folder / "sweep.csv", sweep_md=folder / "sweep.md")
    return written


# ---------------------------------------------------------------------------------------------------------
# comparing two leaderboards


def compared_metrics(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> list[dict]:
    """The columns compare() sets side by side: the primary metric both sides rank by (FID, reverse KL, ...)
    first, then up to two more ranked columns of the same metric (IS and KID beside FID)."""
    columns_b = {c["name"] for c in metric_columns(frame_b)}
    common = [c for c in metric_columns(frame_a) if c["name"] in columns_b and c.get("better")]
    if not common:
        return []
    ranks = list(_rank_columns(frame_a).values())
    primary = next((c for c in common if c.get("board") in ranks or c["name"] in ranks), common[0])
    same_metric = [c for c in common if c is not primary and c.get("metric") == primary.get("metric")]
    return [primary] + same_metric[:2]


def compare(a: Path | str, b: Path | str, force: bool = False) -> pd.DataFrame:
    """Rows of A and B side by side: the primary metric (FID, with IS and KID; reverse KL, with modes and % high
    quality; ...), B - A, and Welch's t-test p over seeds, Holm-adjusted on the primary metric.

    Raises GanzooError naming the differing protocol fields unless `force`.
    """
    frame_a, frame_b = per_seed(a), per_seed(b)
    for frame in (frame_a, frame_b):
        frame["setup"] = frame["setup"].fillna("") if "setup" in frame else ""
    differing = protocol_differences(frame_a, frame_b)
    if differing and not force:
        raise GanzooError("the two leaderboards were scored under different protocols (" +
                          "; ".join(f"{k}: {va} vs {vb}" for k, (va, vb) in differing.items()) +
                          "); their rows cannot be ranked against each other (--force to show them anyway)")
    keys = ["variant", "setup", "arch", "dataset"]
    metrics = compared_metrics(frame_a, frame_b)
    if not metrics:
        raise GanzooError("the two leaderboards share no ranked metric to compare")
    primary = metrics[0]["name"]
    runs_a = frame_a[(frame_a["status"] == "completed")]
    runs_b = frame_b[(frame_b["status"] == "completed")]
    index = pd.concat([runs_a[keys + ["kind"]], runs_b[keys + ["kind"]]]).drop_duplicates(keys)
    rows = []
    for _, key in index.iterrows():
        sel_a = runs_a[(runs_a[keys] == key[keys].values).all(axis=1)]
        sel_b = runs_b[(runs_b[keys] == key[keys].values).all(axis=1)]
        row = {**{k: key[k] for k in keys}, "kind": key["kind"], "seeds_a": len(sel_a), "seeds_b": len(sel_b)}
        for metric in (c["name"] for c in metrics):
            va = pd.to_numeric(sel_a.get(metric, pd.Series(dtype=float)), errors="coerce").dropna().to_numpy()
            vb = pd.to_numeric(sel_b.get(metric, pd.Series(dtype=float)), errors="coerce").dropna().to_numpy()
            mean_a = float(va.mean()) if len(va) else math.nan
            mean_b = float(vb.mean()) if len(vb) else math.nan
            row[f"{metric}_a"], row[f"{metric}_b"], row[f"{metric}_delta"] = mean_a, mean_b, mean_b - mean_a
            row[f"{metric}_p"] = welch_p(va, vb)
        recipe_a, recipe_b = (_recipe_of(sel) for sel in (sel_a, sel_b))
        row.update(recipe_a=recipe_a, recipe_b=recipe_b, recipe_differs=recipe_a != recipe_b)
        rows.append(row)
    board = pd.DataFrame(rows)
    # Many rows, many tests: Holm's step-down correction keeps the chance of any false "significant" at 5%.
    from .sweep import holm

    runs = board["kind"] == "run"
    board[f"{primary}_p_holm"] = math.nan
    board.loc[runs, f"{primary}_p_holm"] = holm(board.loc[runs, f"{primary}_p"].tolist())
    board["significant"] = board[f"{primary}_p_holm"] < 0.05
    board["_order"] = board["kind"].map(KIND_ORDER).fillna(1)
    sign = 1 if metrics[0].get("better") == "lower" else -1
    board["_key_b"], board["_key_a"] = sign * board[f"{primary}_b"], sign * board[f"{primary}_a"]
    board = board.sort_values(["_order", "_key_b", "_key_a"], na_position="last", kind="stable")
    board = board.drop(columns=["_order", "_key_b", "_key_a"]).reset_index(drop=True)
    board.attrs["protocol_differences"] = differing
    board.attrs["compared"] = metrics
    return board


def _recipe_of(rows: pd.DataFrame) -> str:
    values = rows["recipe"].dropna().unique() if "recipe" in rows else []
    return " | ".join(map(str, values)) if len(values) else "-"


def welch_p(va: np.ndarray, vb: np.ndarray) -> float:
    """Two-sided p of Welch's t-test over seeds; NaN with fewer than two seeds on a side."""
    from scipy import stats

    if len(va) < 2 or len(vb) < 2:
        return math.nan
    if va.std() == 0 and vb.std() == 0:  # no spread at all: the test is degenerate, the answer is not
        return 1.0 if va.mean() == vb.mean() else 0.0
    with warnings.catch_warnings():  # scipy warns when values are nearly equal (e.g. IS identical over seeds)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(va, vb, equal_var=False).pvalue)


def protocol_differences(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> dict[str, tuple[str, str]]:
    differing = {}
    fields = comparable_fields(frame_a)
    fields += [f for f in comparable_fields(frame_b) if f not in fields]
    for field in fields:
        column = f"protocol.{field}"
        va = _values(frame_a, column)
        vb = _values(frame_b, column)
        if va != vb:
            differing[field] = (", ".join(sorted(va)) or "-", ", ".join(sorted(vb)) or "-")
    return differing


def _values(frame: pd.DataFrame, column: str) -> set[str]:
    if column not in frame:
        return set()
    runs = frame[(frame["kind"] == "run") & (frame["status"] == "completed")]
    return {str(v) for v in runs[column].dropna().unique()}


def render_comparison(board: pd.DataFrame, fmt: str = "md", label_a: str = "A", label_b: str = "B") -> str:
    if fmt == "csv":
        return escape.csv_frame(board).to_csv(index=False)
    shown = pd.DataFrame({"variant": board["variant"]})
    if (board["setup"].fillna("") != "").any():
        shown["setup"] = board["setup"].fillna("").replace("", "-")
    shown["arch"], shown["dataset"] = board["arch"], board["dataset"]
    shown["seeds"] = [f"{a}/{b}" for a, b in zip(board["seeds_a"], board["seeds_b"])]
    metrics = board.attrs.get("compared") or []
    for i, column in enumerate(metrics):
        metric, label, spec = column["name"], column.get("header") or column["name"], column.get("format", ".3g")
        shown[f"{label} {label_a}"] = [_fmt(v, spec) for v in board[f"{metric}_a"]]
        shown[f"{label} {label_b}"] = [_fmt(v, spec) for v in board[f"{metric}_b"]]
        shown[f"{label} delta"] = [_fmt(v, "+" + spec) for v in board[f"{metric}_delta"]]
        shown[f"{label} p"] = [_fmt(v, ".3f") for v in board[f"{metric}_p"]]
        if i == 0:
            shown[f"{label} p (Holm)"] = [_fmt(v, ".3f") for v in board[f"{metric}_p_holm"]]
    primary = metrics[0] if metrics else {"name": "fid", "header": "FID"}
    shown["recipe"] = ["differs: " + a + " vs " + b if d else "same" for a, b, d in
                       zip(board["recipe_a"], board["recipe_b"], board["recipe_differs"])]
    differing = board.attrs.get("protocol_differences") or {}
    tests = int(board[f"{primary['name']}_p_holm"].notna().sum())
    note = (f"\n\nWARNING: protocols differ ({', '.join(differing)}); shown because of --force, not comparable."
            if differing else "\n\nSame protocol on both sides. p: Welch's t-test over seeds (needs >= 2 per side); "
            f"{primary.get('header', primary['name'])} p (Holm): Holm-Bonferroni adjusted over the {tests} trained "
            "rows compared, significant below 0.05."
            " Rows whose recipe differs compare recipes as much as variants.")
    if fmt == "md":
        return escape.markdown_table(shown) + "\n\n" + escape.markdown(note.strip()) + "\n"
    if fmt == "html":
        return shown.to_html(index=False, escape=True, border=0) + f"<p>{escape.html_text(note.strip())}</p>\n"
    if fmt == "latex":
        header, body = _latex_rows(shown)
        return "\n".join([r"% requires \usepackage{booktabs}",
                          r"\begin{tabular}{" + "l" * (4 + int("setup" in shown)) + "r" * (len(shown.columns) - 4 -
                                                                                         int("setup" in shown)) + "}",
                          r"\toprule", header, r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
                          escape.latex_comment(note.strip()), ""])
    raise GanzooError(f"unknown format '{fmt}'; use md, latex, csv or html")
