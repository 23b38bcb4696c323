"""Where a benchmark's cells run. `ganzoo bench --jobs N` (child processes on this machine) and `--executor ray`
(a local Ray instance), both on CPU: the same results as one cell after another in one process, a worker killed
mid-cell recorded as failed (Ray: retried first) and resumed by a rerun, no child outliving a killed driver, a
one-line message without Ray.

The Ray tests are skipped where Ray is not installed; tox installs the `ray` extra, so CI runs them.
"""
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_ganzoo, write_bench_config

import ganzoo
from ganzoo import checkpoint
from ganzoo.errors import GanzooError
from ganzoo.executors import make_executor
from ganzoo.store import ResultsStore

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'ganzoo[ray]'; tox installs it)")

METRICS = ["fid", "fid_sd", "is", "kid", "best_fid", "last_fid", "classes", "class_kl", "completed", "steps"]
# Fields of a record that measure the machine, not the result.
TIMING = {"wall_time_s", "g_images_per_s", "d_images_per_s", "eval_seconds", "protocol.eval_seconds", "protocol.train_wall_time_s", "protocol.evaluated_at",
          "protocol.classifier_train_seconds"}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return write_bench_config(tmp_path_factory.mktemp("cfg") / "tiny.toml",
                              variants=["vanilla"], seeds=[0, 1],
                              steps=40, eval_every=20, n_fake=300, checkpoint_every=10)


@pytest.fixture(scope="module")
def local_board(tiny_config, tmp_path_factory):
    """The local executor with the threads a Ray task gets with --cpus-per-run 1 (OMP_NUM_THREADS=1: torch's
    and numpy's BLAS sums depend on the thread count, and a GAN amplifies the last digits)."""
    out = tmp_path_factory.mktemp("local") / "bench"
    done = run_ganzoo("bench", "--config", tiny_config, "--out", out, "--quiet", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return out, ganzoo.leaderboard(out)


def _records(out: Path) -> dict:
    store = ResultsStore.open(out)
    try:
        return {r["key"]: r for r in store.records()}
    finally:
        store.close()


@needs_ray
def test_ray_executor_gives_the_local_leaderboard_and_store(tiny_config, local_board, tmp_path, cli):
    local_out, local = local_board
    out = tmp_path / "ray"
    code, stdout, err = cli("bench", "--config", tiny_config, "--out", out, "--executor", "ray", "--quiet")
    assert code == 0, err
    assert any(line.startswith("vanilla ") for line in stdout.splitlines())  # its row of the compact table
    runs = _assert_same_results(out, local_board)
    for run in runs:  # the run folders the report reads are there
        for name in ("config.json", "run.json", "log.csv", "eval.csv", "checkpoint.pt", "samples.png"):
            assert (out / run / name).is_file(), (run, name)
    assert (out / "samples.png").is_file() and (out / "curves.png").is_file()


def _assert_same_results(out: Path, local_board) -> list[str]:
    """`out` holds what the one-process, one-thread run (local_board) holds: the same leaderboard, the same store
    record for record (up to timings and the report folder's own path), and bit-identical trained weights.
    Returns the run folders."""
    local_out, local = local_board
    board = ganzoo.leaderboard(out)
    pd.testing.assert_frame_equal(board[["variant"] + METRICS], local[["variant"] + METRICS], check_exact=True)
    ours, theirs = _records(out), _records(local_out)
    assert ours.keys() == theirs.keys()
    for key, record in ours.items():
        expected = {k: v.replace(str(local_out), str(out)) if isinstance(v, str) else v
                    for k, v in theirs[key].items() if k not in TIMING}
        assert {k: v for k, v in record.items() if k not in TIMING} == expected, key
    runs = [r["run"] for r in ours.values() if r["kind"] == "run"]
    for run in runs:
        mine, reference = (checkpoint.load(folder / run / "checkpoint.pt") for folder in (out, local_out))
        for net in ("generator", "discriminator"):
            assert all(torch.equal(mine[net][k], reference[net][k]) for k in reference[net]), (run, net)
    return runs


# A variant whose worker process dies mid-task (SIGKILL, as when the OOM killer strikes or a node is lost).
# Every attempt leaves a marker file; `crash-once` dies on its first attempt only, `crash-always` on every one.
CRASHING = """
    import os
    import signal
    from pathlib import Path

    from ganzoo.hookspecs import hookimpl
    from ganzoo.specs import VariantSpec
    from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

    MARKS = Path({marks!r})
    calls = {{}}

    def dying(name, at_call, always):
        def generator_loss(fake, real=None):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == 1:  # this attempt's first step in this process
                (MARKS / f"{{name}}-attempt-{{os.getpid()}}").touch()
            if calls[name] == at_call and (always or len(list(MARKS.glob(name + "-attempt-*"))) == 1):
                os.kill(os.getpid(), signal.SIGKILL)
            return non_saturating_generator_loss(fake, real)
        return generator_loss

    def dying_once_anywhere(at_call):
        # dies at its `at_call`-th step in the one process (of all that train it) that takes the kill token
        def generator_loss(fake, real=None):
            calls["token"] = calls.get("token", 0) + 1
            if calls["token"] == at_call:
                try:
                    (MARKS / "kill-token").unlink()
                except FileNotFoundError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return non_saturating_generator_loss(fake, real)
        return generator_loss

    @hookimpl
    def ganzoo_variants():
        return [VariantSpec(name="crash-token", description="vanilla; one worker of all dies at its step 10",
                            discriminator_loss=bce_discriminator_loss, generator_loss=dying_once_anywhere(10)),
                VariantSpec(name="crash-once", description="vanilla; its worker dies at step 25 of attempt 1",
                            discriminator_loss=bce_discriminator_loss, generator_loss=dying("crash-once", 25, False)),
                VariantSpec(name="crash-always", description="vanilla; its worker dies at step 1, every time",
                            discriminator_loss=bce_discriminator_loss, generator_loss=dying("crash-always", 1, True))]
"""


@pytest.fixture
def crashing_plugin(tmp_path, monkeypatch, register_plugin):
    """Installed as pip would (module + dist-info on PYTHONPATH) so Ray's workers load it from its entry point;
    registered in this process too, where the driver checks variant names."""
    site, marks = tmp_path / "site", tmp_path / "marks"
    site.mkdir()
    marks.mkdir()
    (site / "ganzoo_crashing.py").write_text(textwrap.dedent(CRASHING.format(marks=str(marks))))
    info = site / "ganzoo_crashing-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ganzoo-crashing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ganzoo]\ncrashing = ganzoo_crashing\n")
    # Ray's workers inherit the environment of the process that starts Ray (bench does, below).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.syspath_prepend(str(site))
    (marks / "kill-token").touch()  # crash-token's: the first worker to take it dies
    module = importlib.import_module("ganzoo_crashing")
    register_plugin(module, "ganzoo_crashing")
    yield marks
    sys.modules.pop("ganzoo_crashing", None)


@needs_ray
def test_killed_worker_is_retried_then_recorded_as_failed(tiny_config, crashing_plugin, local_board, tmp_path):
    marks, out = crashing_plugin, tmp_path / "ray"
    board = ganzoo.bench(config=tiny_config, out=out, progress=False, variants="crash-once,crash-always",
                         seeds=[0], executor=make_executor("ray", max_retries=1))
    attempts = lambda name: len(list(marks.glob(f"{name}-attempt-*")))  # noqa: E731
    assert attempts("crash-once") == 2 and attempts("crash-always") == 2  # one retry each, no more

    rows = board.set_index("variant")
    assert rows.loc["crash-once", "status"] == "1 ok"
    assert rows.loc["crash-always", "status"] == "1 failed"
    error = rows.loc["crash-always", "error"]
    assert error.startswith("Ray task lost after 2 attempts: ") and "\n" not in error
    assert not board.attrs["all_completed"]
    # The retry resumed from the killed attempt's checkpoint (step 20) in the shared run folder: no step lost
    # or repeated, and the score is exactly that of the same training never interrupted (vanilla, seed 0).
    run = next(out.glob("runs/crash-once-*"))
    assert pd.read_csv(run / "log.csv")["step"].tolist() == list(range(1, 41))
    vanilla = _records(local_board[0])
    vanilla = next(r for r in vanilla.values() if r["kind"] == "run" and r["seed"] == 0)
    crash_once = next(r for r in _records(out).values() if r.get("variant") == "crash-once")
    assert crash_once["fid"] == vanilla["fid"] and crash_once["kid_mean"] == vanilla["kid_mean"]
    # The leaderboard shows all of it, and the report was written.
    text = (out / "leaderboard.md").read_text()
    assert "| crash-once" in text and "| crash-always" in text and "1 failed" in text


def test_without_ray_the_message_says_how_to_install_it(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    code, out, err = cli("bench", "--variants", "vanilla", "--seeds", "0", "--steps", "5", "--out", tmp_path / "b",
                         "--executor", "ray", "--quiet")
    assert code == 2 and out == ""
    assert err == "ganzoo: error: the Ray executor needs Ray: pip install 'ganzoo[ray]'\n"
    assert not (tmp_path / "b").exists()
    with pytest.raises(GanzooError, match=r"pip install 'ganzoo\[ray\]'"):
        ganzoo.bench(out=tmp_path / "b", variants="vanilla", seeds=[0], executor="ray")


@pytest.mark.parametrize("argv, message", [
    (["--executor", "slurm"], "unknown executor 'slurm'; available: local, ray"),
    (["--ray-address", "auto"], "--ray-address: only with --executor ray"),
    (["--gpus-per-run", "1", "--max-retries", "3"], "--gpus-per-run, --max-retries: only with --executor ray"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "gpus-per-run must be a number >= 0, got -1.0"),
    (["--executor", "ray", "--gpus-per-run", "1.5"], "gpus-per-run above 1 must be a whole number"),
    (["--executor", "ray", "--cpus-per-run", "0"], "cpus-per-run must be a number > 0"),
    (["--executor", "ray", "--max-retries", "-1"], "max-retries must be an integer >= 0, got -1"),
    (["--jobs", "0"], "jobs must be an integer >= 1, got 0"),
    (["--executor", "ray", "--jobs", "2"], "--jobs: only with --executor local"),
])
def test_executor_bad_input_is_one_line(argv, message, cli, tmp_path):
    code, _, err = cli("bench", "--variants", "vanilla", "--seeds", "0", "--out", tmp_path / "b", "--quiet", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_worker_that_cannot_see_the_report_folder_sends_the_run_back(tmp_path, monkeypatch):
    """A Ray task's body on a node without the driver's filesystem, run in this process: it trains in a scratch
    folder, returns the record and the run files, and the driver files them under <out>/runs/."""
    from ganzoo.bench import BenchSpec, _cell_job
    from ganzoo.executors import _receive, _remote_job, _scratch
    from ganzoo.runs import RUN_FILES, open_run

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node-tmp"))  # that node's own temporary folder
    spec = BenchSpec(variants="vanilla", seeds=[0], steps=20, eval_every=10, eval_samples=200, n_fake=300,
                     train={"batch_size": 32, "checkpoint_every": 10})
    out = tmp_path / "report"  # holds no results.sqlite, as the driver's folder looks from another node
    job = _cell_job(spec.train_config("vanilla", "mlp", "mnist5k", 0), out, spec, False, None)
    threads = torch.get_num_threads()
    try:
        record, files, base = _remote_job(job.fn, {**job.kwargs, "out": out.resolve()}, job.folder, 1)
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "completed", record.get("error")
    assert set(files) == set(RUN_FILES) and base == str(_scratch(out.resolve()))
    assert not out.exists()  # the worker wrote nothing at the driver's path...
    assert not (_scratch(out.resolve()) / job.folder).exists()  # ...and cleaned up its scratch run folder

    record = _receive(job, record, files, base)
    assert record["run"] == job.folder and record["protocol.run"] == str(out / job.folder)
    assert str(tmp_path / "node-tmp") not in json.dumps(record)
    run = open_run(out / job.folder)
    assert run.status == "completed" and run.step == 20 and len(run.read_eval()) == 2
    assert ganzoo.sample(out / job.folder, n=4).shape[0] == 4  # the checkpoint came back whole


# --- the local executor with --jobs: child processes ----------------------------------------------------------


def test_jobs_give_the_one_thread_leaderboard(tiny_config, local_board, tmp_path):
    """Two cells at once in child processes on one thread each: the same store and weights, bit for bit, as one
    cell after another on one thread."""
    out = tmp_path / "jobs"
    done = run_ganzoo("bench", "--config", tiny_config, "--out", out, "--jobs", "2", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert len(_assert_same_results(out, local_board)) == 2


def test_a_killed_child_is_recorded_failed_and_a_rerun_resumes_it(tiny_config, crashing_plugin, local_board,
                                                                  tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the children's thread count, as in local_board
    marks, out = crashing_plugin, tmp_path / "jobs"
    settings = dict(config=tiny_config, out=out, progress=False, variants="crash-once,crash-always", seeds=[0],
                    jobs=2)
    rows = ganzoo.bench(**settings).set_index("variant")
    for name in ("crash-once", "crash-always"):  # both children were SIGKILLed; the grid still completed
        assert rows.loc[name, "status"] == "1 failed"
        assert rows.loc[name, "error"] == ("its worker process died (killed by SIGKILL); rerun the command to retry "
                                           "it from its last checkpoint")
    assert (out / "leaderboard.md").is_file()

    board = ganzoo.bench(**settings)  # the rerun retries the failed cells
    rows = board.set_index("variant")
    assert rows.loc["crash-once", "status"] == "1 ok" and rows.loc["crash-always", "status"] == "1 failed"
    assert not board.attrs["all_completed"]
    assert len(list(marks.glob("crash-once-attempt-*"))) == 2
    # crash-once resumed from its step-20 checkpoint: no step lost or repeated, and exactly vanilla's score
    run = next(out.glob("runs/crash-once-*"))
    assert pd.read_csv(run / "log.csv")["step"].tolist() == list(range(1, 41))
    vanilla = next(r for r in _records(local_board[0]).values() if r["kind"] == "run" and r["seed"] == 0)
    crash_once = next(r for r in _records(out).values() if r.get("variant") == "crash-once")
    assert crash_once["fid"] == vanilla["fid"] and crash_once["kid_mean"] == vanilla["kid_mean"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; children die with the driver on Linux")
def test_no_child_outlives_a_killed_driver_and_the_rerun_completes(tiny_config, tmp_path):
    """kill -9 of `ganzoo bench --jobs 2` while both cells train: the children die with it (an orphan would race
    the rerun for the same run folder), and the same command then resumes both cells to completion."""
    out = tmp_path / "jobs"
    argv = [sys.executable, "-m", "ganzoo", "bench", "--config", str(tiny_config), "--out", str(out), "--jobs", "2",
            "--steps", "400", "--eval-every", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while len([p for p in out.glob("runs/*/log.csv") if len(p.read_text().splitlines()) > 1]) < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "the two cells did not start training"
            time.sleep(0.2)
        children = _spawned_children(driver.pid)
        assert len(children) == 2  # both cells training at once
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 30
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, children))
    steps_at_kill = {p.parent.name: len(p.read_text().splitlines()) - 1 for p in out.glob("runs/*/log.csv")}
    assert all(0 < n < 400 for n in steps_at_kill.values()), steps_at_kill

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    board = ganzoo.leaderboard(out)
    assert board.set_index("variant").loc["vanilla", "status"] == "2 ok"
    for log in out.glob("runs/*/log.csv"):  # resumed from checkpoints: no step lost or repeated
        assert pd.read_csv(log)["step"].tolist() == list(range(1, 401))


def _spawned_children(pid: int) -> list[int]:
    """The multiprocessing children (not its resource tracker) whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_variant_registered_only_in_this_process_is_refused_for_other_processes(register_plugin, tmp_path):
    """A notebook's own plugin object cannot reach a child process or a Ray worker: refused up front, in one
    line that says how to fix it, instead of every cell failing with 'unknown variant'."""
    from ganzoo.hookspecs import hookimpl
    from ganzoo.specs import VariantSpec
    from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

    class NotebookPlugin:
        @hookimpl
        def ganzoo_variants(self):
            return [VariantSpec(name="my-idea", description="vanilla, defined in a notebook",
                                discriminator_loss=bce_discriminator_loss,
                                generator_loss=non_saturating_generator_loss)]

    register_plugin(NotebookPlugin(), "notebook")
    settings = dict(out=tmp_path / "b", progress=False, variants="my-idea", seeds=[0], steps=5)
    with pytest.raises(GanzooError) as err:
        ganzoo.bench(**settings, jobs=2)
    assert str(err.value).startswith("variant 'my-idea' comes from plugin 'notebook', registered in this Python "
                                     "process only; --jobs runs cells in other processes, which load plugins from "
                                     "installed packages")
    assert not (tmp_path / "b").exists()
    if importlib.util.find_spec("ray") is not None:
        with pytest.raises(GanzooError, match="'my-idea' .* only; Ray runs cells in other processes"):
            ganzoo.bench(**settings, executor=make_executor("ray"))
    assert ganzoo.bench(**settings).set_index("variant").loc["my-idea", "status"] == "1 ok"  # one at a time: fine


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "sweep.toml"
    path.write_text("""
[bench]
variants = ["vanilla"]
seeds = [0]
steps = 20
eval_every = 0
n_fake = 300
[train]
batch_size = 32
[sweep]
settings = 3
selection_seed = 100
[sweep.space]
lr = {log_uniform = [1e-4, 1e-3]}
""")
    return path


@pytest.fixture(scope="module")
def local_sweep(sweep_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-sweep") / "bench"
    done = run_ganzoo("bench", "--config", sweep_config, "--out", out, "--quiet", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return out, ganzoo.leaderboard(out)


@pytest.mark.parametrize("argv", [["--jobs", "2"], pytest.param(["--executor", "ray"], marks=needs_ray)])
def test_a_sweep_gives_the_same_results_on_every_executor(sweep_config, local_sweep, tmp_path, argv):
    out = tmp_path / "elsewhere"
    done = run_ganzoo("bench", "--config", sweep_config, "--out", out, "--quiet", *argv, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    _assert_same_results(out, local_sweep)  # search, selection and report records alike
    kinds = sorted(r["kind"] for r in _records(out).values())
    assert kinds.count("search") == 3 and kinds.count("selection") == 1 and kinds.count("run") == 1


def test_a_sweep_whose_worker_is_killed_chooses_only_once_every_setting_is_scored(crashing_plugin, tmp_path, cli,
                                                                                    monkeypatch):
    """A --jobs 2 sweep whose worker is SIGKILLed during the search: the run says so (exit 1) and records no
    choice, the variant stays on the board as a row with the error; the rerun trains the lost setting and only
    then chooses, among all of them."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = tmp_path / "sweep.toml"
    config.write_text("""
[bench]
variants = ["crash-token"]
seeds = [0]
steps = 20
eval_every = 0
n_fake = 300
[train]
batch_size = 32
checkpoint_every = 5
[sweep]
settings = 3
selection_seed = 100
[sweep.space]
lr = {log_uniform = [1e-4, 1e-3]}
""")
    out = tmp_path / "sweep"
    argv = ("bench", "--config", config, "--out", out, "--quiet", "--jobs", "2")
    code, _, err = cli(*argv)
    assert not (crashing_plugin / "kill-token").exists()  # a worker did die
    assert code == 1, err
    records = list(_records(out).values())
    assert sorted(r["status"] for r in records if r["kind"] == "search") == ["completed", "completed", "failed"]
    assert not [r for r in records if r["kind"] in ("selection", "run")]  # no choice without the lost setting
    row = ganzoo.leaderboard(out).set_index("variant").loc["crash-token"]
    assert row["status"] == "no setting chosen (search: 2 ok, 1 failed)"
    assert row["error"].startswith("its worker process died (killed by SIGKILL)")
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex"):
        assert "crash-token" in (out / name).read_text(), name

    code, _, err = cli(*argv)  # the rerun: the lost setting first, then the choice among all three
    assert code == 0, err
    records = list(_records(out).values())
    search = {r["setting"]: r for r in records if r["kind"] == "search"}
    assert {r["status"] for r in search.values()} == {"completed"}
    selection = next(r for r in records if r["kind"] == "selection")
    assert selection["settings_scored"] == 3
    assert selection["setting"] == min(search, key=lambda i: search[i]["fid"])
    assert [r["setting"] for r in records if r["kind"] == "run"] == [selection["setting"]]
