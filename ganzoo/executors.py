"""Where a benchmark's jobs run: on this machine (`local`, the default) or as Ray tasks on a cluster (`ray`).

A job is one record of the results store: a real-data reference row, an untrained-generator row, or a grid
cell (train, then score). bench() builds the jobs the store still lacks and hands them to an executor, which
calls the job's function (the same function whichever executor runs it) and yields the record back to the
driver. The driver alone writes the results store, so the store is the same whichever executor ran the grid,
and resume works the same way: the driver skips the cells already recorded before anything is submitted.

Local, ``jobs=1`` (the default): one job after another in this process. ``jobs=N``: up to N jobs at once, each
in a fresh child process (started with "spawn": safe with CUDA and OpenMP), which is how several small runs
share one GPU, or how a multi-core CPU trains one run per core instead of spreading one run thinly.

- Each child runs torch on ``cpu_count // N`` threads unless OMP_NUM_THREADS says otherwise; its scores are
  bit-identical to a ``jobs=1`` run with that thread count (torch's sums depend on the thread count).
- Children load plugins from their entry points, as a fresh ``ganzoo`` command does: a variant registered
  only inside this Python process (a notebook's ``pm.register``) does not exist in them, so bench() refuses
  it up front (registry.require_installed); the same holds for Ray workers.
- A child that dies (killed, out of memory) is recorded as failed with its exit signal, and the grid goes on;
  rerunning the command retries the cell from its last checkpoint. A child never outlives the driver (on
  Linux it is killed with it), so a rerun never races an orphan writing the same run folder.

Ray (``pip install 'ganzoo[ray]'``, imported only here and only when chosen):

- Each job is a task requesting ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (default: one GPU when the
  benchmark trains on GPU, none on CPU; a fraction such as 0.25 lets several small runs share one GPU). A task
  runs torch on as many threads as it has CPUs (Ray sets OMP_NUM_THREADS alike), so its scores are
  bit-identical to a local run with that thread count.
- Run folders. A worker trains straight into ``<out>/runs/<run>`` when it can see the report folder at the
  same absolute path (a local Ray instance, or a cluster on a shared filesystem; the test is that
  ``<out>/results.sqlite`` exists there). Otherwise it trains into a scratch folder on its node
  (``$TMPDIR/ganzoo-scratch/<hash of out>/``). Either way the task returns the record together with the run's
  small files (config.json, run.json, log.csv, eval.csv, eval.json, samples.png and checkpoint.pt, which the
  report's sample grids load), and the driver writes those under ``<out>/runs/`` (files already there with the
  same bytes are left alone). Paths in the record are rewritten from the worker's folder to the driver's.
- Limits. A cell cut short (its worker killed, or the driver stopped, which cancels the tasks in flight)
  resumes from its last checkpoint only where its retry, or the rerun of the command, can see that checkpoint:
  always on a shared filesystem, on the same node with scratch folders; elsewhere it starts again from step 0.
  Workers need ganzoo (same version) and the datasets, and read their own ganzoo cache (point
  GANZOO_CACHE and GANZOO_DATA at a shared folder to train the reference classifier once per cluster rather
  than once per node); ``--inception-weights`` must name a path that exists on the workers.
- A task whose worker dies (process killed, node lost, out of memory) is retried up to ``max_retries`` times
  (Ray's own retry of system failures), then recorded as failed with the reason, and the grid goes on. An error
  raised by the job itself is not retried: a cell already turns its errors into failed records, and a
  reference row's error stops the benchmark exactly as it does locally.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import GanzooError
from .files import atomic_write
from .runs import RUN_FILES

# each executor and the options it takes
OPTIONS = {"local": {"jobs"}, "ray": {"address", "gpus_per_run", "cpus_per_run", "max_retries"}}
RAY_MISSING = "the Ray executor needs Ray: pip install 'ganzoo[ray]'"
STOP_GRACE_S = 10  # how long a stopped benchmark waits for its child processes to exit cleanly


@dataclass(frozen=True)
class Job:
    """One record to compute: `fn(**kwargs)` returns it (fn is module-level, so Ray ships it by reference)."""

    key: str  # the results-store key
    label: str  # shown on the progress bar
    fn: Callable[..., dict]
    kwargs: dict
    row: dict  # the record's identity fields, for a job whose worker died before it could return one
    folder: Optional[str] = None  # the run folder it writes, relative to the report folder; kwargs["out"] is that


def make_executor(name: str = "local", **options: Any):
    """`local` (option: jobs) or `ray` (address, gpus_per_run, cpus_per_run, max_retries); None means default."""
    options = {k: v for k, v in options.items() if v is not None}
    if name not in OPTIONS:
        raise GanzooError(f"unknown executor {name!r}; available: {', '.join(OPTIONS)}")
    foreign = sorted(set(options) - OPTIONS[name])
    if foreign:
        given = ", ".join("--" + {"address": "ray-address"}.get(k, k.replace("_", "-")) for k in foreign)
        owner = next((n for n, known in OPTIONS.items() if foreign[0] in known), None)
        if owner is None:
            raise GanzooError(f"unknown executor option(s) {', '.join(foreign)}; "
                              f"{name} takes {', '.join(sorted(OPTIONS[name]))}")
        raise GanzooError(f"{given}: only with --executor {owner}")
    return LocalExecutor(**options) if name == "local" else RayExecutor(**options)


class LocalExecutor:
    """Jobs on this machine: in this process, in the order given (jobs=1), or up to `jobs` child processes at
    once, records yielded as they finish (see the module docstring)."""

    name = "local"

    def __init__(self, jobs: int = 1):
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise GanzooError(f"jobs must be an integer >= 1, got {jobs!r}")
        self.jobs = jobs
        self.in_process = jobs == 1  # the cell's own training progress bar can show under the grid's

    def check(self, spec) -> None:
        pass

    @contextmanager
    def session(self, spec, out: Path):
        yield self

    def run(self, jobs: Iterable[Job], bar) -> Iterator[tuple[Job, dict]]:
        if self.jobs > 1:
            yield from _run_in_children(list(jobs), self.jobs, bar)
            return
        for job in jobs:
            bar.set_postfix_str(job.label)
            yield job, job.fn(**job.kwargs)


def _run_in_children(jobs: list[Job], limit: int, bar) -> Iterator[tuple[Job, dict]]:
    """Up to `limit` jobs at once, one spawned child process each; whatever happens here, no child outlives it."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = max(1, _cpu_count() // limit)
    pending, running = list(jobs), {}  # receiving end of the child's pipe -> (process, job)
    try:
        while pending or running:
            while pending and len(running) < limit:
                job = pending.pop(0)
                receive, send = context.Pipe(duplex=False)
                # not daemonic: a daemon may not start processes of its own (DataLoader workers, compile pools)
                process = context.Process(target=_child, args=(job.fn, job.kwargs, threads, os.getpid(), send),
                                          name=f"ganzoo {job.label}")
                process.start()
                send.close()  # the child holds the only sending end: EOF here means it is gone
                running[receive] = (process, job)
            _show(bar, running)
            for receive in wait(list(running)):
                process, job = running.pop(receive)
                _show(bar, running)
                try:
                    outcome, value = receive.recv()
                except (EOFError, OSError):  # died before it could answer
                    outcome, value = "lost", None
                receive.close()
                process.join()
                if outcome == "error":  # the job's own error: the same outcome as running it in this process
                    raise value
                if outcome == "lost":
                    value = {**job.row, "status": "failed",
                             "error": f"its worker process died ({_exit_reason(process.exitcode)}); "
                                      "rerun the command to retry it from its last checkpoint"}
                yield job, value
    finally:
        # Stop what is still running as Ctrl-C would: a child interrupted by SIGINT returns and exits normally,
        # releasing its semaphores and locks (SIGKILL straight away left the resource tracker warning about
        # leaked semaphores). One that does not stop in time is killed.
        for process, _ in running.values():
            with suppress(OSError):
                os.kill(process.pid, signal.SIGINT)
        for process, _ in running.values():
            process.join(timeout=STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()


def _show(bar, running: dict) -> None:
    """The jobs in flight, on the grid's progress bar."""
    labels = [job.label for _, job in running.values()]
    bar.set_postfix_str(f"{len(labels)} running: {', '.join(labels)}" if labels else "")


def _child(fn: Callable[..., dict], kwargs: dict, threads: int, parent: int, send) -> None:
    """The body of a local child process: run one job, send ("ok", record) or ("error", exception) back."""
    _die_with_parent(parent)
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(threads)
    try:
        send.send(("ok", fn(**kwargs)))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the driver handles it
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver's own SIGINT may follow: exit cleanly once
    except Exception as exc:  # noqa: BLE001 - handed to the driver, which raises it as a local run would
        try:
            send.send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled: keep its text
            send.send(("error", GanzooError(f"{type(exc).__name__}: {_one_line(exc)}")))


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this process when the driver dies (even by SIGKILL); elsewhere, best effort."""
    if sys.platform.startswith("linux"):
        import ctypes

        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died before the line above took effect
        os._exit(1)


def _exit_reason(code: Optional[int]) -> str:
    if code is not None and code < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _cpu_count() -> int:
    with suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class RayExecutor:
    """Each job a Ray task; records come back to the driver as tasks finish (see the module docstring)."""

    name = "ray"
    in_process = False  # workers' output is not shown (log_to_driver=False): no nested bars

    def __init__(self, address: Optional[str] = None, gpus_per_run: Optional[float] = None,
                 cpus_per_run: float = 1, max_retries: int = 2):
        if gpus_per_run is not None:
            if not _finite(gpus_per_run) or gpus_per_run < 0:
                raise GanzooError(f"gpus-per-run must be a number >= 0, got {gpus_per_run!r}")
            if gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
                raise GanzooError(f"gpus-per-run above 1 must be a whole number (Ray's rule), got {gpus_per_run}")
        if not _finite(cpus_per_run) or cpus_per_run <= 0:
            raise GanzooError(f"cpus-per-run must be a number > 0, got {cpus_per_run!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise GanzooError(f"max-retries must be an integer >= 0, got {max_retries!r}")
        try:
            import ray  # noqa: F401 - only to fail early, before the report folder is touched
        except ImportError:
            raise GanzooError(RAY_MISSING) from None
        self.address, self.gpus_per_run, self.cpus_per_run, self.max_retries = (
            address, gpus_per_run, cpus_per_run, max_retries)
        self._started = False
        self._gpus = 0.0
        self._in_flight: dict = {}

    def check(self, spec) -> None:
        """Settings that cannot work on any cluster, refused before the report folder is touched."""
        device = spec.device or "auto"
        if device.startswith("cuda:") and device != "cuda:0":
            raise GanzooError(f"--device {device} cannot be used with --executor ray: Ray gives each task its "
                              "own GPU(s); use --device auto or cuda")
        if device.startswith("cuda") and self.gpus_per_run == 0:
            raise GanzooError(f"--device {device} with --gpus-per-run 0: the tasks would see no GPU")

    @contextmanager
    def session(self, spec, out: Path):
        import ray

        self._started = not ray.is_initialized()  # a notebook's own ray.init() is used as it is, and kept
        if self._started:
            try:
                # A local instance unless told otherwise ("local" never joins a cluster by accident).
                ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise GanzooError(f"could not start or reach Ray at {self.address or 'a local instance'}: "
                                  f"{_one_line(exc)}") from None
        try:
            self._resources(spec)
            yield self
        finally:
            for ref in list(self._in_flight):  # an error or Ctrl-C on the driver: leave nothing running
                with suppress(Exception):  # best effort: the cluster may be gone already
                    ray.cancel(ref, force=True)
            self._in_flight.clear()
            if self._started:
                ray.shutdown()

    def _resources(self, spec) -> None:
        import ray

        total = ray.cluster_resources()
        device = spec.device or "auto"
        gpus = self.gpus_per_run
        if gpus is None:  # one GPU per run when the benchmark trains on GPU, else none
            gpus = 1.0 if device.startswith("cuda") or (device == "auto" and total.get("GPU", 0) > 0) else 0.0
        self._gpus = gpus
        for what, want in (("GPU", gpus), ("CPU", self.cpus_per_run)):
            have = total.get(what, 0)
            if want > have:
                message = (f"each task asks for {want:g} {what}(s) but the Ray cluster has {have:g}; "
                           f"set --{what.lower()}s-per-run")
                if self._started:  # a local instance cannot grow: the tasks would wait forever
                    raise GanzooError(message)
                print(f"ganzoo: warning: {message} (waiting for the cluster to scale up)", file=sys.stderr)

    def run(self, jobs: Iterable[Job], bar) -> Iterator[tuple[Job, dict]]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        task = ray.remote(_remote_job).options(num_cpus=self.cpus_per_run, num_gpus=self._gpus,
                                              max_retries=self.max_retries, retry_exceptions=False)
        for job in jobs:
            kwargs = job.kwargs
            if job.folder is not None:  # workers do not share the driver's working directory
                kwargs = {**kwargs, "out": Path(kwargs["out"]).resolve()}
            ref = task.remote(job.fn, kwargs, job.folder, self.cpus_per_run)
            self._in_flight[ref] = job
        while self._in_flight:
            done, _ = ray.wait(list(self._in_flight), num_returns=1)
            for ref in done:
                job = self._in_flight.pop(ref)
                try:
                    record, files, base = ray.get(ref)
                except RayTaskError as exc:  # the job's own error: the same outcome as running it locally
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else exc) from None
                except RayError as exc:  # the worker or its node died, every attempt
                    attempts = self.max_retries + 1
                    record = {**job.row, "status": "failed", "error": f"Ray task lost after {attempts} attempt"
                              f"{'s' if attempts > 1 else ''}: {type(exc).__name__}: {_one_line(exc)}"}
                    files, base = {}, None
                record = _receive(job, record, files, base)
                bar.set_postfix_str(f"{job.label} {record.get('status', '')}")
                yield job, record


def _remote_job(fn: Callable[..., dict], kwargs: dict, folder: Optional[str], cpus: float):
    """The body of every Ray task: run the job; for a cell, also gather its run folder's files and say where
    it trained. Returns (record, files by name, the folder that stood in for the report folder)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))  # what the task was given, not every core of a shared node
    if folder is None:
        return fn(**kwargs), {}, None
    out = Path(kwargs["out"])
    shared = (out / "results.sqlite").is_file()  # the driver's report folder is visible from here
    base = out if shared else _scratch(out)
    record = fn(**{**kwargs, "out": base})
    run_dir = base / folder
    files = {name: (run_dir / name).read_bytes() for name in RUN_FILES if (run_dir / name).is_file()}
    if not shared:  # everything worth keeping is on its way to the driver
        shutil.rmtree(run_dir, ignore_errors=True)
    return record, files, str(base)


def _scratch(out: Path) -> Path:
    """A per-report folder on this node; stable, so a retry here resumes from the killed attempt's checkpoint."""
    digest = hashlib.sha256(str(out).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "ganzoo-scratch" / digest


def _receive(job: Job, record: dict, files: dict[str, bytes], base: Optional[str]) -> dict:
    """The driver's side of a cell: its run files into <out>/runs/, the record's paths as the driver names them."""
    if job.folder is None:
        return record
    _write_run_files(Path(job.kwargs["out"]) / job.folder, files)
    return _rehome(record, base, job.kwargs["out"])


def _write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        if name not in RUN_FILES:  # only the known run files, never a path from elsewhere
            continue
        target = run_dir / name
        if target.is_file() and target.read_bytes() == data:  # trained in place (local Ray, shared filesystem)
            continue
        atomic_write(target, lambda f, data=data: f.write(data))


def _rehome(record: dict, base: Optional[str], out: Path | str) -> dict:
    """Paths the worker wrote into the record (protocol.run, generated_from) as the driver names them."""
    if not base or base == str(out):
        return record
    old, new = base + os.sep, str(Path(out)) + os.sep
    return {k: v.replace(old, new) if isinstance(v, str) else v for k, v in record.items()}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
