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
    from ganzoo import checkpoint

    real_save = checkpoint.save

    def save_then_crash(path, payload):
        sha = real_save(path, payload)
        if payload["step"] == 40:
            raise KeyboardInterrupt
        return sha

    out = tmp_path_factory.mktemp("interrupted") / "run"
    checkpoint.save = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            ganzoo.train(out=out, progress=False, **INTERRUPTED)
    finally:
        checkpoint.save = real_save
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
