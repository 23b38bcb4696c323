"""Issue 14: concurrent writers, hostile and damaged cache files, damaged logs, and the inputs that used to slip
through or end in an internal error. The concurrency tests run real `ganzoo` processes side by side."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_ganzoo, write_bench_config
from ganzoo import locks
from ganzoo.store import ResultsStore


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganzoo", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _steps_once(path: Path, last: int) -> None:
    steps = pd.read_csv(path)["step"].tolist()
    assert steps == list(range(1, last + 1)), f"{path}: steps {steps[:5]}... ({len(steps)} rows)"


# ---- 1. one writer per run folder and per report folder ----


def test_a_held_run_folder_refuses_a_second_train(tmp_path):
    out = tmp_path / "run"
    with locks.hold(out, "run folder"):
        result = run_ganzoo("train", "--steps", "5", "--out", out, "--quiet")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ganzoo: error: run folder {out} is in use by another ganzoo process "
        f"(it holds {out / locks.LOCK_FILE}); wait for it to finish or choose another folder"]
    assert [p.name for p in out.iterdir()] == [locks.LOCK_FILE]  # nothing written


def test_two_trains_on_one_folder_never_both_succeed(tmp_path):
    out = tmp_path / "run"
    first = _start("train", "--steps", "300", "--batch-size", "16", "--out", out, "--quiet")
    second = _start("train", "--steps", "300", "--batch-size", "32", "--out", out, "--quiet")
    codes = [p.wait(timeout=300) for p in (first, second)]
    errors = first.stderr.read() + second.stderr.read()
    assert sorted(codes) == [0, 2], errors  # the loser is refused: by the lock, or as a different run
    assert "in use by another ganzoo process" in errors or "already holds a different run" in errors
    _steps_once(out / "log.csv", 300)


def test_two_benches_on_one_report_folder(tmp_path, reference_classifier):
    config = write_bench_config(tmp_path / "b.toml", variants=["vanilla"], seeds=[0, 1], steps=120, eval_every=40,
                                n_fake=200, checkpoint_every=40)
    out = tmp_path / "bench"
    procs = [_start("bench", "--config", config, "--out", out, "--quiet") for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    errors = "".join(p.stderr.read() for p in procs)
    assert 0 in codes and set(codes) <= {0, 2}, errors
    if 2 in codes:  # they overlapped (the usual case): the second was refused in one line
        assert f"report folder {out} is in use by another ganzoo process" in errors
    records = ResultsStore.open(out).frame()
    assert sorted(records["key"]) == sorted(set(records["key"])) and len(records) == 4
    for run in (out / "runs").iterdir():
        _steps_once(run / "log.csv", 120)
        assert pd.read_csv(run / "eval.csv")["step"].tolist() == [40, 80, 120]


def test_a_held_report_folder_refuses_a_bench(tmp_path):
    out = tmp_path / "bench"
    with locks.hold(out, "report folder"):
        result = run_ganzoo("bench", "--variants", "vanilla", "--seeds", "0", "--steps", "5", "--out", out,
                            "--quiet")
    assert result.returncode == 2
    assert f"ganzoo: error: report folder {out} is in use by another ganzoo process" in result.stderr
    assert not (out / "results.sqlite").exists()


def test_results_store_creation_does_not_race(tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from ganzoo.store import ResultsStore
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        for i in range(15):
            ResultsStore.open(Path({str(tmp_path)!r}) / f"s{{i}}" / "results.sqlite", create=True).close()
        """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(2)  # let every process import and wait at the start line
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    for i in range(15):
        meta = ResultsStore.open(tmp_path / f"s{i}").meta()
        assert meta["format"] == "ganzoo-results"


# ---- 2. no cache file is ever unpickled with code; 4. every cache entry is verified before use ----


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _damage(path: Path, tensor) -> None:
    """Change 64 bytes inside the stored values of `tensor` (the file stays a loadable torch file)."""
    data = bytearray(path.read_bytes())
    values = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(values[:256])
    assert at >= 0 and len(values) >= 256
    data[at + 64:at + 128] = bytes(255 - b for b in data[at + 64:at + 128])
    path.write_bytes(bytes(data))


@pytest.fixture
def fakes(test_images):
    return test_images[:200]


@pytest.fixture(scope="module")
def test_images():
    from ganzoo.data import load_split

    return load_split("mnist5k", "test").images


def test_a_planted_feature_cache_never_runs_code(reference_classifier, fakes, tmp_path):
    from ganzoo import caches
    from ganzoo.evaluation import Scorer
    from ganzoo.paths import cache_dir

    scorer = Scorer("mnist5k", n_real=300, progress=False)
    clean = Scorer("mnist5k", n_real=300, progress=False, cache=False).score(fakes).metrics
    marker = tmp_path / "code-ran"
    evil = {"x": _RunsCodeWhenUnpickled(marker)}
    prefix = f"{scorer.real_cache_name}-{scorer.prepared.fidelity_name}"
    planted = [cache_dir() / "fidelity" / f"{prefix}-{suffix}.pt"  # where torch-fidelity itself would look
               for suffix in ("features-logits", "features-features", "stat-fid-features")]
    planted.append(caches.fidelity_entry(scorer.real_cache_name))
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(evil, path)
    assert scorer.score(fakes).metrics == clean
    assert not marker.exists()
    assert scorer.score(fakes).metrics == clean  # from the rebuilt entry
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["garbled", "truncated"])
def test_a_damaged_feature_cache_is_named_and_rebuilt(reference_classifier, fakes, capsys, damage):
    from ganzoo import caches
    from ganzoo.evaluation import Scorer

    scorer = Scorer("mnist5k", n_real=400, progress=False)
    clean = scorer.score(fakes).metrics
    entry = caches.fidelity_entry(scorer.real_cache_name)
    if damage == "garbled":
        stored = torch.load(entry, weights_only=True)["tensors"]
        _damage(entry, max(stored.values(), key=lambda t: t.numel()))
    else:
        entry.write_bytes(entry.read_bytes()[:1000])
    capsys.readouterr()
    assert scorer.score(fakes).metrics == clean
    assert f"ganzoo: discarding the cache entry {entry}" in capsys.readouterr().err
    assert scorer.score(fakes).metrics == clean
    assert capsys.readouterr().err == ""  # rebuilt: read back without complaint


def test_a_classifier_with_changed_weights_is_named_and_rebuilt(reference_classifier, tmp_path, monkeypatch, capsys):
    from ganzoo.evaluation import Scorer
    from ganzoo_plugins import classifier

    monkeypatch.setenv("GANZOO_CACHE", str(tmp_path))
    monkeypatch.setitem(classifier.TRAINING, "max_steps", 4)
    first = Scorer("mnist5k", "classifier", progress=False).prepared
    path = Path(first.weights_path)
    _damage(path, torch.load(path, weights_only=True)["state_dict"]["fc1.weight"])
    again = Scorer("mnist5k", "classifier", progress=False).prepared
    err = capsys.readouterr().err
    assert f"classifier {path} does not match the SHA-256 recorded in it" in err and "rebuilding" in err
    assert again.weights_sha256 == first.weights_sha256
    assert classifier.load_classifier(path)["sha256"]


# ---- 3. resume checks log.csv and eval.csv against the checkpoint's step ----

INTERRUPTED = dict(steps=60, checkpoint_every=20, batch_size=32, eval_every=20, eval_samples=100)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, reference_classifier):
    """A run killed right after its checkpoint at step 40, with 5 more logged steps and a half-written row."""
    import ganzoo
    from conftest import killed_after_checkpoint

    out = tmp_path_factory.mktemp("interrupted") / "run"
    with killed_after_checkpoint(40), pytest.raises(KeyboardInterrupt):
        ganzoo.train(out=out, progress=False, **INTERRUPTED)
    log = out / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 41
    log.write_text("".join(lines) + "".join(f"{s}" + lines[-1][2:] for s in range(41, 46)) + "46,0.5")
    return out


@pytest.fixture
def damaged_copy(interrupted_run, tmp_path):
    import shutil

    return Path(shutil.copytree(interrupted_run, tmp_path / "run"))


def _resume(cli, run: Path):
    s = INTERRUPTED
    return cli("train", "--steps", s["steps"], "--checkpoint-every", s["checkpoint_every"], "--batch-size",
               s["batch_size"], "--eval-every", s["eval_every"], "--eval-samples", s["eval_samples"], "--out", run,
               "--quiet")


def test_resume_drops_only_rows_past_the_checkpoint(damaged_copy, cli):
    code, _, err = _resume(cli, damaged_copy)
    assert code == 0, err
    _steps_once(damaged_copy / "log.csv", 60)
    assert pd.read_csv(damaged_copy / "eval.csv")["step"].tolist() == [20, 40, 60]


@pytest.mark.parametrize("name, damage, why", [
    ("log.csv", lambda t: t[:t.index("\n29,")] + "\n" + t[t.index("\n41,") + 1:], "step 29 is missing"),
    ("log.csv", lambda t: t[:900], "is missing"),  # cut mid-row, before the checkpoint's step
    ("log.csv", lambda t: "", "no header line starting with 'step'"),
    ("log.csv", lambda t: t.replace("\n12,", "\n12,abc,", 1), "line 13 is not a row of"),
    ("log.csv", lambda t: t.replace("\n13,", "\n12,", 1), "step 12 at line 14 repeats"),
    ("eval.csv", lambda t: "", "no header line starting with 'step'"),
    ("eval.csv", lambda t: t.splitlines(keepends=True)[0], "step 20 is missing"),
])
def test_resume_refuses_a_damaged_log_naming_the_file(damaged_copy, cli, name, damage, why):
    path = damaged_copy / name
    path.write_text(damage(path.read_text()))
    before = path.read_bytes()
    code, out, err = _resume(cli, damaged_copy)
    assert code == 2 and out == "", err
    assert err.startswith(f"ganzoo: error: {path} is damaged (") and why in err and err.count("\n") == 1, err
    assert path.read_bytes() == before  # left as it was for the user to restore


# ---- 5, 7, 10: settings refused before anything is created; every TOML key works or is refused by name ----


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "-1"], "seeds must be non-negative integers, got -1"),
    (["--n-fake", "1"], "n-fake must be an integer of at least 2"),
    (["--variants", ""], "variants is empty"),
    (["--dataset-option", "colour=red"], "dataset 'mnist5k' takes no options, got colour"),
])
def test_bad_bench_settings_create_nothing(tmp_path, cli, argv, message):
    code, out, err = cli("bench", "--out", tmp_path / "b", "--quiet", *argv)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("toml, message", [
    ("[bench]\nseeds = [0.7, 1.9]\n", "seeds must be non-negative integers, got 0.7"),
    ("[bench]\nseeds = [true]\n", "seeds must be non-negative integers, got True"),
    ("[bench]\nseeds = 0\n", "seeds must be a list or a comma-separated string, got 0"),
    ("[bench]\n[bench.dataset_options]\nmnist5k = {size = 28}\n", "'dataset_options' is a table of its own"),
    ("[bench]\n[dataset_options]\nmnist = {size = 28}\n", "dataset_options for 'mnist', which is not one of"),
])
def test_bad_bench_toml_is_refused_by_name(tmp_path, cli, toml, message):
    config = tmp_path / "b.toml"
    config.write_text(toml)
    code, out, err = cli("bench", "--config", config, "--out", tmp_path / "b", "--quiet")
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "b").exists()


def test_bench_dataset_option_reaches_every_dataset():
    from ganzoo.bench import BenchSpec

    spec = BenchSpec(datasets="mnist5k,imagefolder", dataset_options={"imagefolder": {"size": 16}})
    assert spec.dataset_options == {"imagefolder": {"size": "16"}}  # as --dataset-option size=16 gives it
    assert spec.train_config("vanilla", "mlp", "imagefolder", 0).dataset_options == {"size": "16"}


# ---- 6. integer fields stay integers ----


def _store(folder: Path, n_fake, failed: bool) -> Path:
    records = [{"kind": "run", "variant": "vanilla", "arch": "mlp", "dataset": "mnist5k", "seed": 0,
                "status": "completed", "error": "", "fid": 10.0, "is_mean": 2.0, "kid_mean": 0.1,
                "protocol.n_fake": n_fake, "protocol.extractor": "classifier"}]
    if failed:
        records.append({**{k: v for k, v in records[0].items() if not k.startswith("protocol.")}, "seed": 1,
                        "status": "failed", "error": "out of memory in the generator", "fid": None})
    store = ResultsStore.open(folder / "results.sqlite", create=True)
    for i, r in enumerate(records):
        store.put(f"run:{i}", r)
    store.close()
    return folder


def test_integer_protocol_fields_stay_integers(tmp_path):
    from ganzoo import compare, leaderboard
    from ganzoo.leaderboard import render

    a, b = _store(tmp_path / "a", 300, failed=True), _store(tmp_path / "b", 300, failed=False)
    compare(a, b)  # used to refuse: n_fake: 300.0 vs 300
    text = render(leaderboard(a), "md")
    assert "n_fake=300" in text and "300.0" not in text


# ---- 8. one line and exit 2 instead of an internal error; a closed pipe is not an error ----


def test_internal_errors_become_one_line(tmp_path, cli, tiny_run):
    import json
    import shutil
    import sqlite3

    def refused(*argv, says):
        code, out, err = cli(*argv)
        assert code == 2 and says in err and err.startswith("ganzoo: error:") and err.count("\n") == 1, err

    afile = tmp_path / "afile"
    afile.write_text("x")
    refused("bench", "--out", afile, "--quiet", says=f"report folder {afile} exists and is not a folder")
    board = _store(tmp_path / "board", 300, failed=False)
    refused("leaderboard", board, "--output", tmp_path, says=f"cannot write {tmp_path}: it is a folder")
    refused("train", "--arch", "dcgan", "--batch-size", "1", "--steps", "2", "--out", tmp_path / "bn",
            says="architecture 'dcgan' uses batch norm, which needs a batch size of at least 2")
    db = sqlite3.connect(board / "results.sqlite")
    with db:
        db.execute("INSERT INTO meta VALUES ('settings', '{garbled')")
    db.close()
    refused("bench", "--out", board, "--quiet", "--variants", "vanilla", "--seeds", "0",
            says="its benchmark settings are corrupt")
    db = sqlite3.connect(board / "results.sqlite")
    with db:
        db.execute("UPDATE results SET record = '[1, 2]'")
    db.close()
    refused("leaderboard", board, says="the record run:0 is corrupt")
    for name, text, says in (("run.json", "[1, 2]", "run status"), ("run.json", '{"step": "abc"}', "run status"),
                             ("config.json", None, "malformed (dataset shape")):
        run = Path(shutil.copytree(tiny_run.path, tmp_path / f"run-{name}-{len(text or '')}"))
        if text is None:
            resolved = json.loads((run / name).read_text())
            resolved["resolved"]["dataset"]["shape"] = {"channels": "one"}
            text = json.dumps(resolved)
        (run / name).write_text(text)
        refused("sample", "--run", run, "--n", "4", "--grid", tmp_path / "g.png", says=says)


def test_a_closed_pipe_is_not_an_error():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `ganzoo list | head -0` would be
    result = subprocess.run([sys.executable, "-m", "ganzoo", "list"], stdout=write, stderr=subprocess.PIPE,
                            text=True, timeout=120)
    os.close(write)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# ---- 9. new files get the mode the umask gives ----


def test_written_files_follow_the_umask(tmp_path, tiny_run):
    from ganzoo.files import atomic_write, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o027)
        atomic_write(tmp_path / "b.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o640
    for name in ("config.json", "run.json", "checkpoint.pt", "samples.png"):
        assert (tiny_run.path / name).stat().st_mode & 0o777 == 0o666 & ~old, name


# ---- 11. failed cells' reasons in every table; a stopped --jobs benchmark leaks nothing ----


def test_failed_cells_show_their_error_in_every_table(tmp_path):
    from ganzoo import leaderboard
    from ganzoo.leaderboard import render

    board = leaderboard(_store(tmp_path / "a", 300, failed=True))
    for fmt in ("md", "latex", "html"):
        assert "1 failed: out of memory in the generator" in render(board, fmt), fmt


def test_ctrl_c_on_bench_jobs_leaks_no_semaphore(tmp_path, reference_classifier):
    import signal

    config = write_bench_config(tmp_path / "b.toml", variants=["vanilla", "lsgan"], seeds=[0], steps=20000,
                                eval_every=0, n_fake=200, checkpoint_every=100)
    out = tmp_path / "bench"
    proc = subprocess.Popen([sys.executable, "-m", "ganzoo", "bench", "--config", config, "--out", out, "--quiet",
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        while len([p for p in out.glob("runs/*/checkpoint.pt")]) < 2:  # both cells training
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "leaked" not in err and "resource_tracker" not in err and "Traceback" not in err, err


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, cli):
    """SQLite's "database or disk is full" (here: the store capped at its current size, as a full disk would)
    when the store commits a record or its settings: a one-line error naming the store; earlier records stay."""
    import sqlite3

    from ganzoo.errors import GanzooError
    from ganzoo.store import ResultsStore

    store = ResultsStore.open(tmp_path / "results.sqlite", create=True)
    store.put("run:a", {"kind": "run", "status": "failed", "variant": "a", "arch": "mlp", "dataset": "d", "seed": 0})
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(GanzooError, match=r"cannot write the record run:b to the results store .*results\.sqlite "
                                          r"\(database or disk is full\); the records already written are kept"):
        store.put("run:b", {"kind": "run", "status": "failed", "variant": "b", "arch": "mlp", "dataset": "d",
                            "seed": 0, "error": "x" * 100_000})
    with pytest.raises(GanzooError, match="cannot write the benchmark's settings"):
        store.claim({"n_fake": 1, "blob": "y" * 100_000}, {}, {})
    store.close()
    assert [r["key"] for r in ResultsStore.open(tmp_path).records()] == ["run:a"]


def test_hostile_bench_configs_are_one_line(tmp_path, cli):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = cli("bench", "--config", deep, "--out", tmp_path / "o1", "--quiet")
    assert code == 2 and "nests tables or arrays too deeply" in err and err.count("\n") == 1, err[:300]
    big = tmp_path / "big.toml"
    big.write_text('[bench]\nvariants = "' + "v" * 10_000_000 + '"\n')
    code, _, err = cli("bench", "--config", big, "--out", tmp_path / "o2", "--quiet")
    assert code == 2 and err.count("\n") == 1 and len(err) < 1000, err[:300]
    assert "(10000000 characters)" in err
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + b'[bench]\nvariants = ["no-such-variant"]\n')
    code, _, err = cli("bench", "--config", bom, "--out", tmp_path / "o3", "--quiet")
    assert code == 2 and "unknown variant 'no-such-variant'" in err, err  # read past the byte-order mark


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes")
def test_a_report_folder_name_that_is_not_utf8_is_refused_before_training(tmp_path, cli):
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff-name")
    code, _, err = cli("bench", "--variants", "vanilla", "--seeds", "0", "--steps", "1", "--out", out, "--quiet")
    assert code == 2 and "is not valid UTF-8; choose another --out" in err and err.count("\n") == 1, err
    assert not os.path.exists(out)


def test_a_run_trained_into_a_cells_folder_lends_it_no_stats(tmp_path):
    """`ganzoo train` into the folder a bench cell will use: the cell fails, and its record says what the cell did
    (nothing), not the intruder's steps and wall time; the cell's own run, trained, keeps its stats."""
    import ganzoo
    from ganzoo.bench import BenchSpec, _cell_row, _run_cell

    spec = BenchSpec(variants=("vanilla",), seeds=(0,), steps=4, eval_every=0, n_fake=50, device="cpu",
                     train={"batch_size": 16})
    config = spec.train_config("vanilla", "mlp", "mnist5k", 0)
    out = tmp_path / "bench"
    row = _cell_row(config)
    ganzoo.train(variant="lsgan", steps=3, batch_size=16, out=out / row["run"], progress=False)  # the intruder
    record = _run_cell(config, out, spec, False, None, row)
    assert record["status"] == "failed" and "already holds a different run" in record["error"]
    assert not {"steps", "wall_time_s", "g_images_per_s", "final_d_loss"} & set(record), record

    own = tmp_path / "own"
    record = _run_cell(config, own, spec, False, None, row)  # scoring may fail on 50 images; training happened
    assert record["steps"] == 4 and record["wall_time_s"] > 0
