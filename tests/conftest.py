"""Shared fixtures. Tests run on CPU only and keep ganzoo's caches and data folders inside pytest's tmp dirs."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganzoo.cli import main
from ganzoo.plugins import get_plugin_manager


@pytest.fixture(autouse=True, scope="session")
def _isolated_user_folders(tmp_path_factory):
    """Never read or write the user's ~/.cache/ganzoo or data folder from a test."""
    root = tmp_path_factory.mktemp("ganzoo-home")
    old = {k: os.environ.get(k) for k in ("GANZOO_CACHE", "GANZOO_DATA")}
    os.environ["GANZOO_CACHE"] = str(root / "cache")
    os.environ["GANZOO_DATA"] = str(root / "data")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cli(capsys):
    """Run the ganzoo CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def register_plugin():
    """Register plugin objects for one test (as a notebook user might), unregistering them afterwards."""
    pm = get_plugin_manager()
    added = []

    def register(plugin, name: str):
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    yield register
    for plugin in added:
        pm.unregister(plugin)


def run_ganzoo(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh process (entry points are discovered anew there)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ganzoo", *map(str, argv)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


@pytest.fixture(scope="session")
def reference_classifier(_isolated_user_folders):
    """mnist5k's reference classifier (a PreparedExtractor), trained once per session into the session's cache."""
    from ganzoo.evaluation import Scorer

    return Scorer("mnist5k", "classifier", device="cpu", progress=False).prepared


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 20-step mnist5k run with a checkpoint: enough for commands that read a run."""
    import ganzoo

    return ganzoo.train(steps=20, checkpoint_every=10, out=tmp_path_factory.mktemp("tiny") / "run", progress=False)


@contextlib.contextmanager
def killed_after_checkpoint(step: int):
    """Training stops (KeyboardInterrupt) right after writing the checkpoint of `step`, as a kill there would."""
    from ganzoo import checkpoint

    real_save = checkpoint.save

    def save_then_crash(path, payload):
        sha = real_save(path, payload)
        if payload["step"] == step:
            raise KeyboardInterrupt
        return sha

    checkpoint.save = save_then_crash
    try:
        yield
    finally:
        checkpoint.save = real_save


def write_bench_config(path: Path, *, variants: list[str], seeds: list[int], steps: int, eval_every: int,
                       n_fake: int, checkpoint_every: int) -> Path:
    """A benchmark preset sized for tests: mlp on mnist5k, batch 32, small evaluations."""
    path.write_text(f"""
[bench]
variants = {variants!r}
archs = ["mlp"]
datasets = ["mnist5k"]
seeds = {seeds!r}
steps = {steps}
eval_every = {eval_every}
eval_samples = 200
n_fake = {n_fake}

[train]
batch_size = 32
checkpoint_every = {checkpoint_every}
""".replace("'", '"'))
    return path


def killed_and_resumed(tmp_path: Path, monkeypatch, **settings):
    """The same run trained straight through, and killed right after its first checkpoint (like kill -9) then
    resumed by running the same command again: returns (straight, resumed) Runs, whose checkpoints and logs a test
    compares."""
    import ganzoo
    from ganzoo import checkpoint

    settings = {"progress": False, **settings}
    straight = ganzoo.train(out=tmp_path / "straight", **settings)
    real_save = checkpoint.save

    def save_then_die(path, payload):
        real_save(path, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        ganzoo.train(out=tmp_path / "resumed", **settings)
    monkeypatch.setattr(checkpoint, "save", real_save)
    return straight, ganzoo.train(out=tmp_path / "resumed", **settings)


def assert_same_checkpoints(a, b, parts=("generator", "discriminator")) -> None:
    """Bit-identical tensors in the named parts of two runs' checkpoints, and the same per-step log (but time)."""
    import pandas as pd
    import torch

    first, second = (torch.load(r.checkpoint, weights_only=True) for r in (a, b))
    for part in parts:
        assert first[part].keys() == second[part].keys(), part
        for key in first[part]:
            assert torch.equal(first[part][key], second[part][key]), f"{part}.{key}"
    columns = [c for c in a.read_log().columns if c != "time_s"]
    pd.testing.assert_frame_equal(a.read_log()[columns], b.read_log()[columns])
