"""report.html: a benchmark as one self-contained page to share (images inlined, no script, nothing fetched).

It gathers what the report folder already holds: the leaderboard and its protocol, the command that made it,
the figures (FID curves, training dynamics), one sample grid per variant, and every failed or diverged cell
with its error. Written by `ganzoo bench` after the leaderboards and plots; `ganzoo leaderboard --format html`
stays the table alone.
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd

from . import __version__, escape
from .files import atomic_write

REPORT_FILE = "report.html"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { padding: 0.3em 0.6em; border-bottom: 1px solid #e5e5e5; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
.names-2 td:nth-child(-n+2), .names-2 th:nth-child(-n+2),
.names-3 td:nth-child(-n+3), .names-3 th:nth-child(-n+3) { text-align: left; }  /* arch, dataset: text */
table.leaderboard td { white-space: nowrap; }  /* never "4.57 ±" over "0.05" */
table.leaderboard td:last-child { white-space: normal; text-align: left; }
.wide { overflow-x: auto; }  /* a table too wide for the window scrolls by itself, never the page */
code, pre { background: #f5f5f5; padding: 0.2em 0.4em; border-radius: 3px; }
pre { padding: 0.8em; overflow-x: auto; white-space: pre-wrap; }
.protocol { font-size: 0.8em; color: #555; }
.grids { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1.5em; }
.grids img { width: 100%; height: auto; }
figure { margin: 0; } figcaption { font-size: 0.85em; text-align: center; }
img { max-width: 100%; } .failed td { color: #a00; text-align: left; }
"""


def _image(path: Path, alt: str, width: Optional[int] = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img src="data:image/png;base64,{data}" alt="{escape.html_text(alt)}"{size}>'


def write_html_report(folder: Path | str, board: pd.DataFrame, frame: pd.DataFrame, command: str,
                      store_meta: dict) -> Path:
    """Write <folder>/report.html from the aggregated board, the per-seed records and the files beside them."""
    from .leaderboard import protocol_lines

    folder = Path(folder)
    parts = [f"<h1>ganzoo benchmark: {escape.html_text(folder.resolve().name)}</h1>",
             "<p>Made by</p>", f"<pre>{escape.html_text(command)}</pre>",
             f"<p class='protocol'>ganzoo {escape.html_text(__version__)}"
             + (f", git commit {escape.html_text(store_meta['git_commit'])}" if store_meta.get("git_commit") else "")
             + f"; written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>"]

    scores, training = _leaderboard_tables(board)
    names = f"names-{scores.columns.get_loc('seeds')}"  # variant [, arch, dataset]: left-aligned text
    parts.append("<h2>Leaderboard</h2>")
    parts.append(f"<p>{escape.html_text(_shared_axes(board))}</p>")
    parts.append(_wide(scores.to_html(index=False, escape=True, border=0, classes=["leaderboard", names])))
    parts += [f"<p class='protocol'>{escape.html_text(line)}</p>" for line in protocol_lines(board)]
    parts.append("<h3>How each row was trained, and more scores</h3>")
    parts.append(_wide(training.to_html(index=False, escape=True, border=0, classes=["training", names])))

    problems = frame[frame["status"] != "completed"] if "status" in frame else frame.iloc[:0]
    parts.append("<h2>Failed or diverged cells</h2>")
    if problems.empty:
        parts.append("<p>None: every cell trained and was scored.</p>")
    else:
        shown = problems.reindex(columns=["variant", "arch", "dataset", "seed", "status", "error"]).fillna("")
        parts.append(shown.to_html(index=False, escape=True, border=0, classes="failed"))

    if (folder / "sweep.csv").is_file():
        from .sweep import selection_rule

        parts.append("<h2>Sweep</h2>")
        parts.append(f"<p>{escape.html_text(selection_rule())}.</p>")
        parts.append(pd.read_csv(folder / "sweep.csv").to_html(index=False, escape=True, border=0,
                                                                 float_format=lambda v: f"{v:.2f}"))
    figures = [("sweep_expected_min.png", "Expected best FID after k settings tried (95% bootstrap band)"),
               ("sweep_fid_settings.png", "FID over all settings tried, per variant"),
               ("curves.png", "FID during training (mean ± sd over seeds)"),
               ("losses.png", "Training dynamics: losses, D outputs, penalties")]
    drawn = [(name, title) for name, title in figures if (folder / name).is_file()]
    if drawn:
        parts.append("<h2>Training</h2>")
        parts += [f"<figure>{_image(folder / name, title)}<figcaption>{escape.html_text(title)}</figcaption></figure>"
                  for name, title in drawn]

    grids = _sample_grids(folder, frame)
    parts.append("<h2>Samples</h2>")
    if grids:
        parts.append("<p>Each variant's first completed seed, all from the same latent vectors.</p>")
        parts.append("<div class='grids'>" + "".join(
            f"<figure>{_image(path, label)}<figcaption>{escape.html_text(label)}</figcaption></figure>"
            for label, path in grids) + "</div>")
    else:
        parts.append("<p>No completed run to draw samples from.</p>")

    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>ganzoo benchmark: {escape.html_text(folder.resolve().name)}</title><style>{STYLE}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = folder / REPORT_FILE
    atomic_write(path, lambda f: f.write(page), mode="w")
    return path


# Scores set beside how each row was trained rather than in the leaderboard, which then fits a laptop screen.
SECONDARY_SCORES = ("best FID (curve)", "last FID (curve)", "class KL")


def _leaderboard_tables(board: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard split in two so that each fits a laptop screen: the scores (metrics first, status last)
    and how each row was trained (the recipe fields that differ, the curve's FIDs, steps, time, speed).
    arch and dataset are columns only when the grid has more than one (a line above says which)."""
    from .leaderboard import display_table, varying_axes

    table = display_table(board)
    identity = ["variant", *varying_axes(board)]
    metrics = [c for c in table.attrs["metric_columns"] if c not in SECONDARY_SCORES]
    scores = table[identity + ["seeds"] + metrics].assign(status=board["status"])  # errors: the next section
    options = table.attrs["option_columns"]
    rest = [c for c in table.columns if c not in ["variant", "arch", "dataset", "seeds", "status"] + metrics]
    training = table[identity + rest]
    if options:  # one cell per row, however many plugins bring options: the table keeps its width
        at = training.columns.get_loc(options[0])
        training = training.drop(columns=options)
        training.insert(at, "options", [", ".join(f"{name}={row[name]}" for name in options if row[name] != "-")
                                        or "-" for _, row in table.iterrows()])
    return scores, training.apply(lambda column: column.map(_unbreakable))  # options wrap, numbers never


def _unbreakable(cell: str) -> str:
    """'4.57 ± 0.05' and '[1.20, 3.40]' with no-break spaces: a cell that may wrap (the options) breaks between
    options, never inside a number."""
    cell = cell.replace(" ± ", "\u00a0±\u00a0")
    return cell.replace(", ", ",\u00a0") if cell.startswith("[") else cell


def _shared_axes(board: pd.DataFrame) -> str:
    """'Every row: architecture mlp, dataset mnist5k.' for the axes the tables leave out (one value each)."""
    from .leaderboard import varying_axes

    trained = board[board["kind"] != "real"]
    shared = [f"{label} {trained[axis].iloc[0]}" for axis, label in (("arch", "architecture"), ("dataset", "dataset"))
              if axis not in varying_axes(board) and len(trained)]
    return f"Every row: {', '.join(shared)}." if shared else ""


def _wide(table_html: str) -> str:
    return f"<div class='wide'>{table_html}</div>"


def _sample_grids(folder: Path, frame: pd.DataFrame) -> list[tuple[str, Path]]:
    """(label, samples.png of the first completed seed) per variant, architecture and dataset."""
    if "run" not in frame or "status" not in frame:
        return []
    runs = frame[(frame["kind"] == "run") & (frame["status"] == "completed") & frame["run"].notna()]
    grids = []
    for (variant, arch, dataset), group in runs.sort_values("seed").groupby(["variant", "arch", "dataset"]):
        first = group.iloc[0]
        path = folder / str(first["run"]) / "samples.png"
        if path.is_file():
            grids.append((f"{variant} / {arch} / {dataset}, seed {first['seed']}", path))
    return grids
