"""Leaderboards from a results store: aggregate seeds, rank by FID, render for papers, compare two of them.

`leaderboard(folder)` gives one row per (variant, architecture, dataset) with numeric columns (mean, sd over
seeds, 95% confidence half-width); `render(board, fmt)` formats it as Markdown, LaTeX (booktabs, best value in
bold), HTML or CSV, with the protocol printed under the table; `compare(a, b)` sets two leaderboards side by
side with per-row deltas and Welch's t-test over seeds, refusing to rank rows scored under different protocols.
"""
from __future__ import annotations

import html
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .errors import GanzooError
from .files import atomic_write, write_json
from .store import ResultsStore

GROUP = ["kind", "variant", "arch", "dataset"]
KIND_ORDER = {"real": 0, "run": 1, "untrained": 2}
# (column in the per-seed records, leaderboard column prefix, direction for "best": -1 lower is better)
METRICS = [("fid", "fid", -1), ("is_mean", "is", +1), ("kid_mean", "kid", -1), ("precision", "precision", +1),
           ("recall", "recall", +1), ("best_fid", "best_fid", -1),
           ("final_fid", "last_fid", -1), ("classes_covered", "classes", +1), ("class_kl", "class_kl", -1)]
# Protocol fields that must agree before two scores may be ranked against each other.
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


def leaderboard(folder: Path | str) -> pd.DataFrame:
    """Aggregate a report folder's results over seeds; real data first, then ranked by FID (lower is better).
    A sweep's search runs are not rows here (sweep.sweep_table and the sweep plots show them)."""
    frame = per_seed(folder)
    board = aggregate(frame[frame["kind"].isin(KIND_ORDER)])
    selections = frame[frame["kind"] == "selection"]
    if not selections.empty:
        from .sweep import selection_rule

        chosen = {(r.variant, r.arch, r.dataset): r for r in selections.itertuples()}
        board["selected_by"] = [
            (f"setting {int(chosen[key].setting)} of {int(chosen[key].settings_scored)} scored, "
             f"search FID {chosen[key].selection_fid:.2f}") if key in chosen else ""
            for key in zip(board["variant"], board["arch"], board["dataset"])]
        board.attrs["selection_rule"] = selection_rule()
    return board


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("fid", "is_mean", "kid_mean", "precision", "recall", "best_fid", "final_fid", "classes_covered",
                   "class_kl", "steps",
                   "wall_time_s", "images_per_s"):
        if column not in frame:
            frame[column] = np.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    rows = []
    for keys, group in frame.groupby(GROUP, sort=False, dropna=False):
        done = group[group["status"] == "completed"]
        row: dict[str, Any] = dict(zip(GROUP, keys))
        row.update(seeds=len(group), completed=len(done), failed=int((group["status"] == "failed").sum()),
                   diverged=int((group["status"] == "diverged").sum()))
        for source, name, _ in METRICS:
            values = done[source].dropna().to_numpy(dtype=float)
            mean, sd, half = _mean_sd_ci(values)
            row[name], row[f"{name}_sd"] = mean, sd
            if name in ("fid", "is", "kid"):
                row[f"{name}_ci95"] = half
        recipes = group["recipe"].dropna().unique() if "recipe" in group else []
        row["recipe"] = recipes[0] if len(recipes) == 1 else ("mixed: " + " | ".join(recipes) if len(recipes) else "")
        for column in RECIPE_COLUMNS + sorted(c for c in frame.columns if c.startswith("option.")):
            if column in group:
                values = group[column].dropna().unique()
                row[column] = values[0] if len(values) == 1 else (None if not len(values) else
                                                                   "mixed: " + " | ".join(map(str, values)))
        row["steps"] = group["steps"].max()
        row["wall_time_s"] = done["wall_time_s"].mean()
        row["images_per_s"] = done["images_per_s"].mean()
        errors = group.loc[group["status"] != "completed", "error"].dropna() if "error" in group else []
        row["error"] = next((e for e in errors if e), "")
        row["status"] = _status(row)
        for field in COMPARABLE:
            column = f"protocol.{field}"
            if column in done and done[column].notna().any():
                values = done[column].dropna().astype(str).unique()
                row[column] = values[0] if len(values) == 1 else "mixed: " + ", ".join(values)
        rows.append(row)
    board = pd.DataFrame(rows)
    board["_order"] = board["kind"].map(KIND_ORDER).fillna(1)
    board = board.sort_values(["_order", "fid"], na_position="last", kind="stable").drop(columns="_order")
    board = board.reset_index(drop=True)
    board.attrs["protocol"] = protocol_of(frame)
    board.attrs["all_completed"] = bool((board["completed"] == board["seeds"]).all())
    return board


def _mean_sd_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the 95% confidence half-width (Student's t) over seeds."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if n == 1:
        return mean, math.nan, math.nan
    sd = float(values.std(ddof=1))
    return mean, sd, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


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
           "last_fid": "last FID (curve)", "classes": "classes >=5%", "class_kl": "class KL"}


def _fmt(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{spec}}"


def display_table(board: pd.DataFrame, bold: Optional[callable] = None) -> pd.DataFrame:
    """The leaderboard as strings: 'mean ± sd' per metric, confidence interval, seeds, speed, status.

    `bold(text)` wraps the best value of each metric column among trained variants (LaTeX uses it)."""
    bold = bold or (lambda s: s)
    runs = board["kind"] == "run"
    best = {}
    for _, name, direction in METRICS:
        values = board.loc[runs & (board["completed"] > 0), name].dropna()
        if len(values):
            best[name] = values.min() if direction < 0 else values.max()
    # KID's scale depends on the extractor's features (about 1e-2 for Inception, hundreds for the classifier)
    spec = {"fid": ".2f", "is": ".2f", "kid": ".4g", "precision": ".3f", "recall": ".3f", "best_fid": ".2f",
            "last_fid": ".2f", "classes": ".1f",
            "class_kl": ".3f"}
    out = pd.DataFrame({"variant": board["variant"], "arch": board["arch"], "dataset": board["dataset"]})
    for column, title in _differing_recipe_columns(board):
        out[title] = [_recipe_cell(v) for v in board[column]]
    if "selected_by" in board:
        out["selected by"] = board["selected_by"].fillna("").replace("", "-")
    out["seeds"] = [f"{c}/{s}" for c, s in zip(board["completed"], board["seeds"])]
    for _, name, _ in METRICS:
        cells = []
        for i, row in board.iterrows():
            text = _fmt(row[name], spec[name])
            if not math.isnan(row.get(f"{name}_sd", math.nan)):
                text += f" ± {_fmt(row[f'{name}_sd'], spec[name])}"
            if runs[i] and name in best and row[name] == best[name]:
                text = bold(text)
            cells.append(text)
        out[HEADERS[name]] = cells
        if name == "fid":
            out["FID 95% CI"] = [
                "-" if math.isnan(r["fid_ci95"]) else f"[{r['fid'] - r['fid_ci95']:.2f}, {r['fid'] + r['fid_ci95']:.2f}]"
                for _, r in board.iterrows()]
    out["steps"] = [_fmt(v, ".0f") for v in board["steps"]]
    out["train s"] = [_fmt(v, ".0f") for v in board["wall_time_s"]]
    out["img/s"] = [_fmt(v, ".0f") for v in board["images_per_s"]]
    errors = board["error"] if "error" in board else pd.Series("", index=board.index)
    out["status"] = [f"{status}: {_shorten(error)}" if isinstance(error, str) and error else status
                     for status, error in zip(board["status"], errors)]  # the reason, not just "1 failed"
    return out


def _differing_recipe_columns(board: pd.DataFrame) -> list[tuple[str, str]]:
    """The training fields whose values differ between trained rows (the rest is common to all: the protocol)."""
    runs = board[board["kind"] == "run"]
    shown = []
    for column in RECIPE_COLUMNS + sorted(c for c in board.columns if c.startswith("option.")):
        if column == "setting" or column not in runs:
            continue
        values = {str(v) for v in runs[column] if v is not None and v == v}
        if len(values) > 1 or (column.startswith("option.") and values) or (column == "setting_desc" and values):
            title = {"setting_desc": "setting", "d_steps": "D steps"}.get(column, column.replace("option.", ""))
            shown.append((column, title))
    return shown


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
    lines.append("Rows: mean ± sd over seeds; FID 95% CI from Student's t; real data = real training images "
                 "scored against the reference split by the same pipeline; curve FIDs use the in-training "
                 "evaluation sample count.")
    if board.attrs.get("selection_rule"):
        lines.append("Sweep: " + board.attrs["selection_rule"] + ".")
    return lines


def render(board: pd.DataFrame, fmt: str = "md") -> str:
    """The leaderboard as Markdown, LaTeX, HTML or CSV; the protocol follows every table."""
    if fmt == "csv":  # plain data that pandas.read_csv reads as it is; the protocol is in protocol.json
        return board.to_csv(index=False)
    if fmt == "md":
        table = display_table(board).to_markdown(index=False)
        return table + "\n\n" + "\n\n".join(protocol_lines(board)) + "\n"
    if fmt == "latex":
        return _latex(board)
    if fmt == "html":
        table = display_table(board).to_html(index=False, escape=True, border=0)
        notes = "".join(f"<p>{html.escape(line)}</p>\n" for line in protocol_lines(board))
        return table + "\n" + notes
    raise GanzooError(f"unknown format '{fmt}'; use md, latex, csv or html")


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace(">=", r"$\geq$")


def _latex(board: pd.DataFrame) -> str:
    marker = "\x00"  # survive escaping, then become \textbf{...}
    table = display_table(board, bold=lambda s: f"{marker}{s}{marker}")
    header = " & ".join(_latex_escape(str(c)) for c in table.columns) + r" \\"
    body = []
    for i, (_, row) in enumerate(table.iterrows()):
        cells = []
        for value in row:
            text = _latex_escape(str(value))
            if marker in text:
                text = r"\textbf{" + text.replace(marker, "") + "}"
            cells.append(text)
        body.append(" & ".join(cells) + r" \\")
        if i + 1 < len(board) and board["kind"].iloc[i + 1] != board["kind"].iloc[i]:
            body.append(r"\midrule")  # reference rows (real data, untrained) set apart from the ranking
    notes = "\n".join("% " + line for line in protocol_lines(board))
    caption = _latex_escape(" ".join(protocol_lines(board)[:1]))
    return "\n".join([
        r"% requires \usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "l" * 4 + "r" * (len(table.columns) - 4) + "}",
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
        atomic_write(folder / "sweep.csv", lambda f: f.write(table.to_csv(index=False)), mode="w")
        atomic_write(folder / "sweep.md", lambda f: f.write(table.to_markdown(index=False) + "\n"), mode="w")
        written.update(sweep_csv=folder / "sweep.csv", sweep_md=folder / "sweep.md")
    return written


# ---------------------------------------------------------------------------------------------------------
# comparing two leaderboards


def compare(a: Path | str, b: Path | str, force: bool = False) -> pd.DataFrame:
    """Rows of A and B side by side: mean FID / IS / KID, B - A, and Welch's t-test p over seeds.

    Raises GanzooError naming the differing protocol fields unless `force`.
    """
    frame_a, frame_b = per_seed(a), per_seed(b)
    differing = protocol_differences(frame_a, frame_b)
    if differing and not force:
        raise GanzooError("the two leaderboards were scored under different protocols (" +
                          "; ".join(f"{k}: {va} vs {vb}" for k, (va, vb) in differing.items()) +
                          "); their rows cannot be ranked against each other (--force to show them anyway)")
    keys = ["variant", "arch", "dataset"]
    runs_a = frame_a[(frame_a["status"] == "completed")]
    runs_b = frame_b[(frame_b["status"] == "completed")]
    index = pd.concat([runs_a[keys + ["kind"]], runs_b[keys + ["kind"]]]).drop_duplicates(keys)
    rows = []
    for _, key in index.iterrows():
        sel_a = runs_a[(runs_a[keys] == key[keys].values).all(axis=1)]
        sel_b = runs_b[(runs_b[keys] == key[keys].values).all(axis=1)]
        row = {**{k: key[k] for k in keys}, "kind": key["kind"], "seeds_a": len(sel_a), "seeds_b": len(sel_b)}
        for metric in ("fid", "is_mean", "kid_mean"):
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
    board["fid_p_holm"] = math.nan
    board.loc[runs, "fid_p_holm"] = holm(board.loc[runs, "fid_p"].tolist())
    board["significant"] = board["fid_p_holm"] < 0.05
    board["_order"] = board["kind"].map(KIND_ORDER).fillna(1)
    board = board.sort_values(["_order", "fid_b", "fid_a"], na_position="last", kind="stable")
    board = board.drop(columns="_order").reset_index(drop=True)
    board.attrs["protocol_differences"] = differing
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
    for field in COMPARABLE:
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
        return board.to_csv(index=False)
    shown = pd.DataFrame({"variant": board["variant"], "arch": board["arch"], "dataset": board["dataset"],
                          "seeds": [f"{a}/{b}" for a, b in zip(board["seeds_a"], board["seeds_b"])]})
    for metric, label, spec in (("fid", "FID", ".2f"), ("is_mean", "IS", ".2f"), ("kid_mean", "KID", ".4g")):
        shown[f"{label} {label_a}"] = [_fmt(v, spec) for v in board[f"{metric}_a"]]
        shown[f"{label} {label_b}"] = [_fmt(v, spec) for v in board[f"{metric}_b"]]
        shown[f"{label} delta"] = [_fmt(v, "+" + spec) for v in board[f"{metric}_delta"]]
        shown[f"{label} p"] = [_fmt(v, ".3f") for v in board[f"{metric}_p"]]
        if metric == "fid":
            shown["FID p (Holm)"] = [_fmt(v, ".3f") for v in board["fid_p_holm"]]
    shown["recipe"] = ["differs: " + a + " vs " + b if d else "same" for a, b, d in
                       zip(board["recipe_a"], board["recipe_b"], board["recipe_differs"])]
    differing = board.attrs.get("protocol_differences") or {}
    tests = int(board["fid_p_holm"].notna().sum())
    note = (f"\n\nWARNING: protocols differ ({', '.join(differing)}); shown because of --force, not comparable."
            if differing else "\n\nSame protocol on both sides. p: Welch's t-test over seeds (needs >= 2 per side); "
            f"FID p (Holm): Holm-Bonferroni adjusted over the {tests} trained rows compared, significant below 0.05."
            " Rows whose recipe differs compare recipes as much as variants.")
    if fmt == "md":
        return shown.to_markdown(index=False) + note + "\n"
    if fmt == "html":
        return shown.to_html(index=False, border=0) + f"<p>{html.escape(note.strip())}</p>\n"
    if fmt == "latex":
        return shown.to_latex(index=False) + "% " + note.strip() + "\n"
    raise GanzooError(f"unknown format '{fmt}'; use md, latex, csv or html")
