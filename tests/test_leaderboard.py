"""Leaderboards from stored results: aggregation, ranking, rendering, comparison, damaged stores."""
import math
import sqlite3

import numpy as np
import pytest
from scipy import stats

from ganzoo import compare, leaderboard
from ganzoo.errors import GanzooError
from ganzoo.leaderboard import render
from ganzoo.store import ResultsStore

PROTOCOL = {"protocol.extractor": "classifier", "protocol.extractor_weights_sha256": "abc123",
            "protocol.n_fake": 5000, "protocol.n_real": 1000, "protocol.reference_split": "test",
            "protocol.image_size": "28x28", "protocol.scores_are": "classifier IS/FID/KID (not Inception)"}


def record(kind, variant, seed, fid, is_mean=5.0, kid=0.01, status="completed", **extra):
    return {"kind": kind, "variant": variant, "arch": "mlp" if kind != "real" else "-", "dataset": "mnist5k",
            "seed": seed, "status": status, "error": "" if status == "completed" else "boom",
            "fid": fid, "is_mean": is_mean, "is_std": 0.1, "kid_mean": kid, "kid_std": 0.001,
            "classes_covered": 10, "class_kl": 0.05, "steps": 100, "wall_time_s": 10.0, "images_per_s": 640.0,
            "best_fid": fid, "final_fid": fid, **PROTOCOL, **extra}


def make_store(folder, records):
    store = ResultsStore.open(folder / "results.sqlite", create=True)
    store.claim({"n_fake": 5000}, {}, {"ganzoo_version": "test", "git_commit": ""})
    for i, r in enumerate(records):
        store.put(f"{r['kind']}:{r['variant']}:{r['seed']}:{i}", r)
    store.close()
    return folder


@pytest.fixture
def small(tmp_path):
    return make_store(tmp_path / "a", [
        record("run", "lsgan", 0, 30.0, is_mean=7.0, kid=0.02),
        record("run", "lsgan", 1, 34.0, is_mean=7.4, kid=0.03),
        record("run", "vanilla", 0, 20.0, is_mean=8.0, kid=0.010),
        record("run", "vanilla", 1, 22.0, is_mean=8.2, kid=0.012),
        record("run", "broken", 0, math.nan, status="failed"),
        record("untrained", "untrained generator", 0, 400.0, is_mean=1.1, kid=0.9),
        record("real", "real data", 0, 0.5, is_mean=9.8, kid=0.0001),
    ])


def test_aggregates_over_seeds_and_ranks_by_fid(small):
    board = leaderboard(small)
    assert board["variant"].tolist() == ["real data", "vanilla", "lsgan", "broken", "untrained generator"]
    vanilla = board.set_index("variant").loc["vanilla"]
    assert vanilla["fid"] == pytest.approx(21.0)
    assert vanilla["fid_sd"] == pytest.approx(np.std([20.0, 22.0], ddof=1))
    assert math.isnan(vanilla["fid_ci95_low"]) and math.isnan(vanilla["fid_ci95_high"])  # two seeds: no interval
    assert vanilla["seeds"] == 2 and vanilla["completed"] == 2
    broken = board.set_index("variant").loc["broken"]
    assert broken["failed"] == 1 and broken["status"] == "1 failed" and broken["error"] == "boom"
    assert board.attrs["all_completed"] is False
    assert board.attrs["protocol"]["extractor"] == "classifier"


def test_markdown_rendering(small):
    text = render(leaderboard(small), "md")
    lines = text.splitlines()
    assert lines[0].startswith("| variant") and "FID 95% CI" in lines[0]
    assert "| real data" in lines[2]
    assert "21.00 ± 1.41" in text  # vanilla FID mean ± sd
    assert "0.011 ± 0.001414" in text  # KID, 4 significant digits
    assert "[8.29, 33.71]" not in text and "shown from 3 seeds on" in text  # two seeds: no interval, and why
    assert "classifier IS/FID/KID (not Inception)" in text
    assert "Protocol: " in text and "n_fake=5000" in text and "reference_split=test" in text


def test_latex_rendering_uses_booktabs_and_bolds_the_best(small):
    tex = render(leaderboard(small), "latex")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and "booktabs" in tex
    assert r"\textbf{21.00 $\pm$ 1.41}" in tex  # best FID among trained variants
    assert r"\textbf{8.10 $\pm$ 0.14}" in tex  # best IS (higher is better)
    assert r"\textbf{0.50}" not in tex  # the real-data row is a reference, never "best"
    assert "400.00" in tex and r"\textbf{400.00}" not in tex
    assert "% Protocol: " in tex
    body = tex.split(r"\midrule")[1]
    assert body.strip().startswith("real data")


def test_csv_and_html(small):
    csv_text = render(leaderboard(small), "csv")
    assert csv_text.splitlines()[0].startswith("kind,variant,arch,dataset,seeds")
    assert "# Protocol: " not in csv_text and not any(line.startswith("#") for line in csv_text.splitlines())
    assert "<table" in render(leaderboard(small), "html")
    with pytest.raises(GanzooError, match="unknown format 'pdf'"):
        render(leaderboard(small), "pdf")


def test_compare_deltas_and_welch_test(small, tmp_path):
    b = make_store(tmp_path / "b", [
        record("run", "lsgan", 0, 20.0), record("run", "lsgan", 1, 21.0), record("run", "lsgan", 2, 19.5),
        record("run", "vanilla", 0, 20.5), record("run", "vanilla", 1, 21.5),
    ])
    board = compare(small, b).set_index("variant")
    assert board.loc["lsgan", "fid_a"] == pytest.approx(32.0)
    assert board.loc["lsgan", "fid_b"] == pytest.approx(20.1666667)
    assert board.loc["lsgan", "fid_delta"] == pytest.approx(20.1666667 - 32.0)
    expected = stats.ttest_ind([30.0, 34.0], [20.0, 21.0, 19.5], equal_var=False).pvalue
    assert board.loc["lsgan", "fid_p"] == pytest.approx(expected)
    assert board.loc["vanilla", "fid_p"] == pytest.approx(
        stats.ttest_ind([20.0, 22.0], [20.5, 21.5], equal_var=False).pvalue)
    assert not board.loc["vanilla", "significant"]
    # Holm over the two trained rows: the smaller p doubled, the larger kept (not below the smaller's)
    ps = sorted([board.loc["lsgan", "fid_p"], board.loc["vanilla", "fid_p"]])
    assert sorted(board["fid_p_holm"].dropna()) == pytest.approx([min(1, 2 * ps[0]), max(min(1, 2 * ps[0]), ps[1])])
    assert board.loc["lsgan", "significant"] == (board.loc["lsgan", "fid_p_holm"] < 0.05)


def test_compare_refuses_different_protocols(small, tmp_path, cli):
    other = make_store(tmp_path / "b", [record("run", "vanilla", 0, 20.0, **{"protocol.n_fake": 10000,
                                                                           "protocol.extractor": "inception-v3-compat"})])
    with pytest.raises(GanzooError, match=r"different protocols \(extractor: classifier vs inception-v3-compat; "
                                          r"n_fake: 5000 vs 10000\)"):
        compare(small, other)
    code, _, err = cli("compare", small, other)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli("compare", small, other, "--force")
    assert code == 0 and "WARNING: protocols differ (extractor, n_fake)" in out


def test_leaderboard_cli_formats(small, cli, tmp_path):
    code, out, _ = cli("leaderboard", small, "--format", "latex")
    assert code == 0 and r"\toprule" in out
    code, _, _ = cli("leaderboard", small, "--format", "csv", "--output", tmp_path / "board.csv")
    assert code == 0 and (tmp_path / "board.csv").read_text().startswith("kind,variant")


def test_damaged_or_foreign_results_are_refused_and_left_alone(tmp_path, cli):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "results.sqlite").write_bytes(b"this is not a database at all" * 100)
    before = (garbage / "results.sqlite").read_bytes()
    code, _, err = cli("leaderboard", garbage)
    assert code == 2 and "not a ganzoo results store or is damaged" in err
    code, _, err = cli("bench", "--out", garbage, "--quiet", "--variants", "vanilla", "--seeds", "0")
    assert code == 2 and "left untouched" in err
    assert (garbage / "results.sqlite").read_bytes() == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "results.sqlite")
    db.execute("CREATE TABLE meta (name TEXT, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    db.commit()
    db.close()
    code, _, err = cli("leaderboard", foreign)
    assert code == 2 and "not a ganzoo results store" in err
    code, _, err = cli("leaderboard", tmp_path / "missing")
    assert code == 2 and "no ganzoo results at" in err


# ---- the FID interval stays inside FID's range ----


def test_fid_interval_is_positive_and_needs_three_seeds(tmp_path):
    """Two seeds 637.7 and 785.7 gave Student's t interval [-228.57, 1652.00]: an impossible negative FID."""
    spread = [10.0, 100.0, 1000.0]  # a plain t interval over these goes below zero too
    folder = make_store(tmp_path / "ci", [
        record("run", "vanilla", 0, 637.7), record("run", "vanilla", 1, 785.7),
        *[record("run", "lsgan", seed, fid) for seed, fid in enumerate(spread)],
    ])
    board = leaderboard(folder).set_index("variant")
    assert math.isnan(board.loc["vanilla", "fid_ci95_low"])  # no interval from two seeds
    logs = np.log(spread)
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    low, high = board.loc["lsgan", ["fid_ci95_low", "fid_ci95_high"]]
    assert (low, high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert 0 < low < 100 < high
    text = render(leaderboard(folder), "md")
    assert f"[{low:.2f}, {high:.2f}]" in text and "-228.57" not in text
    assert "interval of the mean of log FID" in text  # the choice, documented under the table


# ---- img/s: generated images per second, D's own column ----


def test_img_per_s_counts_generated_images_and_d_has_its_own_column(tmp_path):
    folder = make_store(tmp_path / "speed", [
        record("run", "vanilla", 0, 20.0, g_images_per_s=7000.0, d_images_per_s=7000.0, d_steps=1),
        record("run", "wgan", 0, 25.0, g_images_per_s=2400.0, d_images_per_s=12000.0, d_steps=5),
        # stored before both were recorded: images_per_s counted D's images
        record("run", "wgan-old", 0, 26.0, images_per_s=12000.0, d_steps=5),
    ])
    board = leaderboard(folder).set_index("variant")
    assert board.loc["wgan", "g_images_per_s"] == 2400 and board.loc["wgan", "d_images_per_s"] == 12000
    assert board.loc["wgan-old", "g_images_per_s"] == 2400 and board.loc["wgan-old", "d_images_per_s"] == 12000
    from ganzoo.leaderboard import display_table

    shown = display_table(leaderboard(folder)).set_index("variant")
    assert shown.loc["wgan", "img/s"] == "2400" and shown.loc["wgan", "D img/s"] == "12000"
    assert shown.loc["vanilla", "img/s"] == "7000" > shown.loc["wgan", "img/s"]


def test_training_records_generated_and_discriminator_throughput(tmp_path):
    import ganzoo

    run = ganzoo.train(variant="wgan", steps=3, batch_size=32, out=tmp_path / "w", progress=False)
    stats_ = run.stats
    assert stats_["d_images_per_s"] == pytest.approx(5 * stats_["g_images_per_s"])  # 5 critic steps
    assert "images_per_s" not in stats_


# ---- option columns: one per plugin and option ----


def test_options_of_two_plugins_never_share_a_column(tmp_path):
    folder = make_store(tmp_path / "options", [
        record("run", "lecam", 0, 20.0, **{"option.variant.lecam.lambda": 0.3}),
        record("run", "cr", 0, 21.0, **{"option.variant.cr.lambda": 10.0, "option.arch.dcgan.width": 64}),
    ])
    board = leaderboard(folder).set_index("variant")
    assert board.loc["lecam", "option.variant.lecam.lambda"] == 0.3
    assert board.loc["cr", "option.variant.cr.lambda"] == 10.0
    header = render(leaderboard(folder), "md").splitlines()[0]
    assert "| lecam.lambda " in header and "| cr.lambda " in header and "| dcgan.width " in header
    assert "| lambda " not in header


def test_results_stored_with_bare_option_names_are_read_per_variant(tmp_path):
    """Stores written before option columns were keyed by plugin hold option.<name>; each row's variant owns it."""
    folder = make_store(tmp_path / "old", [
        record("run", "lecam", 0, 20.0, **{"option.lambda": 0.3}),
        record("run", "cr", 0, 21.0, **{"option.lambda": 10}),
    ])
    board = leaderboard(folder).set_index("variant")
    assert board.loc["lecam", "option.variant.lecam.lambda"] == 0.3
    assert board.loc["cr", "option.variant.cr.lambda"] == 10
    assert "option.lambda" not in board


# ---- the terminal: a compact table that fits ----


@pytest.fixture
def wide(tmp_path):
    """A leaderboard with everything that made the old terminal table 400 characters wide."""
    recipes = dict(d_steps=5, optimizer="rmsprop", lr=5e-5, beta1=None, beta2=None)
    return make_store(tmp_path / "wide", [
        record("run", "vanilla", 0, 20.0, precision=0.8, recall=0.5, d_steps=1, optimizer="adam", lr=2e-4,
               beta1=0.5, beta2=0.999, **{"option.arch.mlp.width": 512}),
        record("run", "vanilla", 1, 22.0, precision=0.7, recall=0.6, d_steps=1, optimizer="adam", lr=2e-4,
               beta1=0.5, beta2=0.999, **{"option.arch.mlp.width": 512}),
        record("run", "wgan", 0, 30.0, precision=0.6, recall=0.4, **recipes, **{"option.variant.wgan.clip": 0.01,
                                                                                "option.arch.mlp.width": 256}),
        record("run", "feature-matching-with-a-long-name", 0, math.nan, status="failed", d_steps=1,
               error="RuntimeError: " + "a very long error message from deep inside a plugin " * 6),
        record("untrained", "untrained generator", 0, 400.0, precision=0.0, recall=0.0),
        record("real", "real data", 0, 0.5, precision=0.9, recall=0.9),
    ])


@pytest.mark.parametrize("width", [80, 120, 200])
def test_compact_table_fits_the_terminal_and_puts_scores_first(wide, width):
    from ganzoo.leaderboard import render_terminal

    text = render_terminal(leaderboard(wide), wide, width=width)
    assert max(map(len, text.splitlines())) <= width, text
    header = text.splitlines()[0].split()
    assert header[:3] == ["variant", "FID", "↓"]  # metrics first, FID ± sd the first of them
    table = text.split("\n\n")[0]
    assert "21.0 ± 1.4" in table and "real data" in table and "untrained generator" in table
    assert "1 failed: Run" in table  # the start of a failure's reason
    assert "option" not in table and "protocol" not in table.lower()
    assert "--format" in text and "extractor=classifier" in text
    if width == 200:  # room for every metric and the recipe fields that differ, abbreviated
        assert all(h in header for h in ("IS", "KID", "prec", "recall", "classes", "opt", "st", "mlp.width"))
        assert "lr" in header and "beta1" not in header and "b1" not in header  # beta1: one value (rmsprop has none)


def test_leaderboard_command_prints_the_compact_table_and_format_keeps_the_full_one(wide, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    code, out, _ = cli("leaderboard", wide)
    assert code == 0 and max(map(len, out.splitlines())) <= 90
    assert out.startswith("variant") and "Every column" in out
    code, full, _ = cli("leaderboard", wide, "--format", "md")
    assert code == 0 and full.startswith("| variant") and "| FID 95% CI " in full and "Protocol: " in full
    assert max(map(len, full.splitlines())) > 200  # every column, as before


def test_overfitting_gap_and_ada_p_are_shown_unranked_where_runs_have_them(tmp_path):
    """Small data: the runs' final stats d_gap (D on training minus held-out images) and augment_p become board
    columns, averaged over seeds, without a better direction; boards of runs without them are unchanged."""
    from ganzoo.leaderboard import display_table, summary_table

    folder = make_store(tmp_path / "a", [
        record("run", "vanilla", 0, 20.0, d_gap=0.10, augment_p=0.2),
        record("run", "vanilla", 1, 22.0, d_gap=0.20, augment_p=0.4),
        record("run", "lsgan", 0, 30.0, d_gap=0.01),
        record("real", "real data", 0, 0.5),
    ])
    board = leaderboard(folder)
    vanilla = board.set_index("variant").loc["vanilla"]
    assert vanilla["d_gap"] == pytest.approx(0.15) and vanilla["aug_p"] == pytest.approx(0.3)
    assert math.isnan(board.set_index("variant").loc["lsgan"]["aug_p"])
    table, _ = summary_table(board)
    assert "D gap (train - held-out)" in table.columns and "aug. p (final)" in table.columns
    assert "D gap (train - held-out)" not in table.attrs["arrows"]
    assert "D gap (train - held-out)" in display_table(board).columns
    plain = leaderboard(make_store(tmp_path / "b", [record("run", "vanilla", 0, 20.0)]))
    assert "d_gap" not in plain and "aug_p" not in plain


def _tamper(folder, sql, *params):
    db = sqlite3.connect(folder / "results.sqlite")
    with db:
        db.execute(sql, params)
    db.close()


def _copy_of(folder, source, target, **changes):
    """Write the record `source` under `target` (the same: edit it in place), with `changes` to its JSON, as an
    editor of the file would."""
    import json

    db = sqlite3.connect(folder / "results.sqlite")
    text = db.execute("SELECT record FROM results WHERE key = ?", (source,)).fetchone()[0]
    db.close()
    record = {**json.loads(text), **changes}
    _tamper(folder, "INSERT OR REPLACE INTO results VALUES (?, 'run', 'completed', ?, 'now')", target,
            json.dumps(record))


def _strip_protocol(folder):
    import json

    db = sqlite3.connect(folder / "results.sqlite")
    text = db.execute("SELECT record FROM results WHERE key = 'run:vanilla:0:2'").fetchone()[0]
    db.close()
    record = {k: v for k, v in json.loads(text).items() if not k.startswith("protocol.")}
    _tamper(folder, "UPDATE results SET record = ? WHERE key = 'run:vanilla:0:2'", json.dumps(record))


@pytest.mark.parametrize("attack, message", [
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:copy"), "says it is 'run:vanilla:0:2': a record copied"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:copy", key="run:vanilla:0:copy"),
     "is a second copy of the record 'run:vanilla:0:2'"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:2", fid="1.5"), "has fid = '1.5', not a number"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:2", fid=float("-inf")), "has fid = -inf, not a number"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:2", fid="abc"), "has fid = 'abc', not a number"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:2", kind=["run"]), "has kind ['run'] (expected one of"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "run:vanilla:0:2", **{"protocol.extractor": "inception-v3-compat"}),
     "was scored under another protocol than the record 'run:lsgan:0:0' of the same dataset (extractor: "),
    (_strip_protocol, "is scored but lacks its protocol field(s) extractor, n_fake"),
    (lambda f: _copy_of(f, "run:vanilla:0:2", "selection:x", kind="selection", key="selection:x", seed=-1),
     "has setting None (expected an integer)"),
    (lambda f: _tamper(f, "UPDATE results SET record = ? WHERE key = 'run:vanilla:0:2'", "[" * 100000 + "]" * 100000),
     "the record run:vanilla:0:2 is corrupt"),
    (lambda f: (_tamper(f, "ALTER TABLE results RENAME TO old"),
                _tamper(f, "CREATE TABLE results (key TEXT PRIMARY KEY, kind, status, record, written_at)"),
                _tamper(f, "INSERT INTO results SELECT * FROM old"),
                _tamper(f, "UPDATE results SET record = NULL WHERE key = 'run:vanilla:0:2'")),
     "the record run:vanilla:0:2 is corrupt"),
])
def test_a_tampered_store_is_refused_in_one_line(small, cli, attack, message):
    attack(small)
    for argv in (("leaderboard", small), ("compare", small, small)):
        code, out, err = cli(*argv)
        assert code == 2 and out == "", err
        assert err.startswith("ganzoo: error: results store ") and message in err and err.count("\n") == 1, err



HOSTILE = ['<script>alert(1)</script>|x', '<img src=x onerror=alert(1)>', r'\input{/etc/passwd}',
           '=HYPERLINK("http://evil")', "@SUM(1)", "+1+cmd", "-2+cmd|' /C calc'!A0", "esc\x1b]0;pwned\x07\x1b[2J"]


@pytest.fixture
def hostile(tmp_path):
    records = [record("run", name, seed, 20.0 + i + seed, error=name) for i, name in enumerate(HOSTILE)
               for seed in (0, 1)]
    return make_store(tmp_path / "h", records + [record("real", "real data", 0, 0.5)])


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_names_from_shared_results_are_text_in_every_format(hostile, cli):
    from ganzoo.leaderboard import render_comparison, render_terminal

    board = leaderboard(hostile)
    compared = compare(hostile, hostile)
    for md in (render(board, "md"), render_comparison(compared, "md")):
        import re

        assert not re.search(r"(?<!\\)[<>]", md) and "\x1b" not in md  # no markup: every < and > escaped
        lines = _table_lines(md)  # a "|" in a name is no column separator
        columns = lines[0].count("|") - lines[0].count("\\|")
        assert all(line.count("|") - line.count("\\|") == columns for line in lines), md
        assert r"\<script\>alert(1)\</script\>\|x" in md
    for tex in (render(board, "latex"), render_comparison(compared, "latex")):
        assert r"\input{" not in tex and r"\textbackslash{}input\{/etc/passwd\}" in tex and "\x1b" not in tex
        assert all(line.startswith("%") or not line.startswith(("\x07", "0;")) for line in tex.splitlines())
    for text in (render(board, "csv"), render_comparison(compared, "csv")):
        import io

        import pandas as pd

        frame = pd.read_csv(io.StringIO(text))
        for column in frame.columns[frame.dtypes == object]:
            cells = frame[column].dropna().astype(str)
            assert not cells.str.match(r"^[=+@\t\r]").any(), column  # no cell a spreadsheet would run
            assert not cells.str.match(r"^-[^0-9.]").any(), column
        assert "'=HYPERLINK(\"http://evil\")" in set(frame["variant"])
    assert "<script>" not in render(board, "html") and "&lt;script&gt;" in render(board, "html")
    assert "\x1b" not in render_terminal(board, width=200)
    code, out, err = cli("leaderboard", hostile)
    assert code == 0 and "\x1b" not in out and "\\x1b" in out


def test_plugin_text_reaches_the_terminal_as_text(register_plugin, cli):
    from ganzoo.hookspecs import hookimpl
    from ganzoo.specs import VariantSpec
    from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

    class Evil:
        @hookimpl
        def ganzoo_variants(self):
            return [VariantSpec(name="evil", description="\x1b]8;;http://evil\x07click\x1b]8;;\x07\x1b[2J",
                                discriminator_loss=bce_discriminator_loss,
                                generator_loss=non_saturating_generator_loss)]

    register_plugin(Evil(), "evil")
    for argv in (("list",), ("plugins",)):
        code, out, err = cli(*argv)
        assert "\x1b" not in out + err and "\x07" not in out + err
    code, out, _ = cli("list")
    assert "\\x1b]8;;http://evil\\x07click" in out


def test_a_variant_name_never_makes_nested_run_folders():
    import ganzoo
    from ganzoo.bench import run_folder

    import dataclasses

    config = ganzoo.TrainConfig(variant="vanilla")
    for name in ("a/../../b", "../x", "c\\d", "e\x1bf"):
        path = run_folder(dataclasses.replace(config, variant=name))
        assert path.parent.as_posix() == "runs" and len(path.parts) == 2 and ".." not in path.parts
        assert "/" not in path.name and "\\" not in path.name and "\x1b" not in path.name
