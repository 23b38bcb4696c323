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
    assert vanilla["fid_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([20.0, 22.0], ddof=1) / math.sqrt(2))
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
    assert "[8.29, 33.71]" in text  # 21 ± t(0.975, 1) * 1.414 / sqrt(2)
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
