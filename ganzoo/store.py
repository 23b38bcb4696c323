"""The results store of a report folder: one SQLite file (standard library; pandas reads it directly).

Each grid cell's record is committed in its own transaction, so a crash loses nothing already written and
readers (a leaderboard rendered while the benchmark runs) always see whole records. A file that is not a
ganzoo store, or is damaged, is reported and never overwritten.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import GanzooError

FORMAT = "ganzoo-results"
VERSION = "1"
FINAL_STATUSES = ("completed", "diverged")  # a failed cell is retried on the next run; these are not

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,      -- run:<config hash>, real:<dataset>, untrained:<arch>:<dataset>
    kind TEXT NOT NULL,        -- run, real, untrained
    status TEXT NOT NULL,      -- completed, failed, diverged
    record TEXT NOT NULL,      -- the flat JSON record: axes, metrics, protocol.*, training stats
    written_at TEXT NOT NULL
)""",
)


class ResultsStore:
    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self.db = connection

    @classmethod
    def open(cls, path: Path | str, create: bool = False) -> "ResultsStore":
        path = Path(path)
        if path.is_dir():
            path = path / "results.sqlite"
        if not path.is_file() and not create:
            raise GanzooError(f"no ganzoo results at {path} (run `ganzoo bench --out {path.parent}` first)")
        if create:
            cls._create(path)
        try:
            db = sqlite3.connect(f"file:{path}?mode={'rw' if create else 'ro'}", uri=True, timeout=60)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise GanzooError(f"{path} is not a ganzoo results store or is damaged ({exc}); "
                              "it was left untouched") from None
        if meta.get("format") != FORMAT:
            raise GanzooError(f"{path} is a SQLite file but not a ganzoo results store; it was left untouched")
        if meta.get("version") != VERSION:
            raise GanzooError(f"{path} has results format version {meta.get('version')}; "
                              f"this ganzoo reads version {VERSION}")
        return cls(path, db)

    @staticmethod
    def _create(path: Path) -> None:
        """Make the tables and meta rows of a new store, safely when several processes do it at once: an
        immediate transaction lets one set up the empty file while the others wait, then find it done."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise GanzooError(f"cannot create the results store {path}: {exc}") from None
        try:
            db.execute("BEGIN IMMEDIATE")
            if not db.execute("SELECT name FROM sqlite_master").fetchall():  # an empty file: ours to set up
                for statement in SCHEMA:
                    db.execute(statement)
                db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", [
                    ("format", FORMAT), ("version", VERSION), ("created_by", f"ganzoo {__version__}"),
                    ("created_at", _now())])
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # the disk full or read-only, the file locked for a minute
            raise GanzooError(f"cannot create the results store {path}: {exc}") from None
        except sqlite3.DatabaseError:
            pass  # not a SQLite file, or another one: reported (and left untouched) by open() below
        finally:
            db.close()

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, value FROM meta").fetchall())

    @contextlib.contextmanager
    def _writing(self, what: str):
        """A write that the disk refuses (full, read-only, I/O error) is one line naming the store; every record
        committed before it stays (each is its own transaction)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise GanzooError(f"cannot write {what} to the results store {self.path} ({exc}); the records already "
                              "written are kept: free space (or fix the folder) and run the command again") from None

    def claim(self, settings: dict[str, Any], spec: dict[str, Any], provenance: dict[str, str]) -> None:
        """Tie the folder to one benchmark protocol: more variants or seeds may be added later, but cells
        trained or scored differently would make the leaderboard compare unlike with unlike."""
        stored = self.meta().get("settings")
        wanted = json.dumps(settings, sort_keys=True)
        if stored is not None and stored != wanted:
            try:
                old = json.loads(stored)
            except (json.JSONDecodeError, RecursionError):
                old = None
            if not isinstance(old, dict):
                raise GanzooError(f"results store {self.path}: its benchmark settings are corrupt; "
                                  "it was left untouched")
            new = json.loads(wanted)
            # values, not spellings: 0 and 0.0 are the same setting (true and 1 are not)
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                             if not same_value(old.get(k), new.get(k)))
            if diff:
                raise GanzooError(f"{self.path.parent} holds results of a benchmark with other settings ({diff}); "
                                  "choose another --out")
            wanted = stored  # the same settings, spelt otherwise: the folder keeps its own spelling
        with self._writing("the benchmark's settings"), self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (wanted,))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('spec', ?)", (json.dumps(spec, sort_keys=True),))
            for name, value in provenance.items():  # the latest run's versions; each record keeps its own too
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def has(self, key: str, final_only: bool = False) -> bool:
        row = self.db.execute("SELECT status FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return False
        return row[0] in FINAL_STATUSES if final_only else row[0] == "completed"

    def put(self, key: str, record: dict[str, Any]) -> None:
        record = {"key": key, **record}
        with self._writing(f"the record {key}"), self.db:
            self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                            (key, record["kind"], record["status"], json.dumps(record, default=_jsonable), _now()))

    def records(self) -> list[dict[str, Any]]:
        try:
            rows = self.db.execute("SELECT key, record FROM results ORDER BY rowid").fetchall()
        except sqlite3.DatabaseError as exc:
            raise GanzooError(f"results store {self.path} is damaged ({exc})") from None
        out = []
        for key, text in rows:
            try:
                record = json.loads(text) if isinstance(text, (str, bytes)) else None
            except (json.JSONDecodeError, RecursionError):  # RecursionError: JSON nested thousands deep
                record = None
            if not isinstance(record, dict) or not {"kind", "status"} <= set(record):
                raise GanzooError(f"results store {self.path}: the record {key} is corrupt; it was left untouched")
            out.append(record)
        validate(out, [key for key, _ in rows], self.path)
        return out

    def frame(self):
        """One row per stored record (per seed), as a pandas DataFrame."""
        import pandas as pd

        records = self.records()
        frame = pd.DataFrame(records)
        # A column of integers with gaps (a failed cell has no protocol) would become floats (300.0): keep them
        # integers, so that protocols compare and print as they were stored.
        for column in frame.columns:
            values = [r[column] for r in records if r.get(column) is not None]
            if values and frame[column].dtype == float and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in values):
                frame[column] = frame[column].astype("Int64")
        return frame

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------------------------------------
# what a reader may trust: every record is checked as it is read, so a damaged or tampered store is refused in
# one line instead of giving a wrong table (a copied record as a second seed, a metric as text, a row gone)

KINDS = ("run", "real", "untrained", "search", "selection")
STATUSES = ("completed", "failed", "diverged")
# per-seed numbers besides the metrics (the metrics are what each record's metric_info names, and the columns of
# records written before metrics were plugins)
NUMERIC = ("steps", "wall_time_s", "images_per_s", "g_images_per_s", "d_images_per_s", "best_fid", "final_fid",
           "best_fid_step", "eval_seconds", "fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall",
           "classes_covered", "class_kl")
LEGACY_PROTOCOL = ("extractor", "n_fake")  # what a record written before metric_info must carry when scored


def validate(records: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    """Refuse (GanzooError, one line naming the record) records that would make a wrong table: a kind or status
    the readers do not know, a record filed under another key or a second copy of a cell, a metric that is not a
    finite number (or NaN for none), a scored record without its protocol fields, records of one dataset scored
    under different protocols, a sweep's choice without its fields."""
    where = f"results store {path}"
    seen: dict[tuple, str] = {}
    protocols: dict[str, tuple[str, dict]] = {}
    for key, record in zip(keys, records):
        def bad(what: str) -> GanzooError:
            return GanzooError(f"{where}: the record {_short(key)} {what}; it was left untouched")

        kind, status = record["kind"], record["status"]
        if not isinstance(kind, str) or kind not in KINDS:
            raise bad(f"has kind {_short(kind)} (expected one of {', '.join(KINDS)})")
        if not isinstance(status, str) or status not in STATUSES:
            raise bad(f"has status {_short(status)} (expected one of {', '.join(STATUSES)})")
        if record.get("key", key) != key:
            raise bad(f"says it is {_short(record.get('key'))}: a record copied under another key")
        names = ("variant", "arch", "dataset") + (("setup",) if record.get("setup") is not None else ())
        for name in names:
            if not isinstance(record.get(name), str):
                raise bad(f"has {name} {_short(record.get(name))} (expected text)")
        integers = ("setting", "settings_scored") if kind == "selection" else \
            ("seed",) + (("setting",) if kind == "search" else ())
        for name in integers:
            if not _is_int(record.get(name)):
                raise bad(f"has {name} {_short(record.get(name))} (expected an integer)")
        if kind == "selection":
            if not isinstance(record.get("setting_applied"), dict) or not _is_number(record.get("selection_fid")):
                raise bad("is a sweep's choice without its setting_applied table or its selection_fid")
            identity = (kind, record["variant"], record["arch"], record["dataset"])
        else:
            identity = (kind, record["variant"], record.get("setup") or "", record["arch"], record["dataset"],
                        record["seed"], record.get("setting"))
        if identity in seen:
            raise bad(f"is a second copy of the record {_short(seen[identity])} (the same cell: "
                      f"{' '.join(str(v) for v in identity[:6] if v not in ('', None))}), which would count twice")
        seen[identity] = key
        info = record.get("metric_info")
        if info is not None and not (isinstance(info, dict) and isinstance(info.get("columns", {}), dict)
                                     and isinstance(info.get("comparable", []), list)
                                     and isinstance(info.get("rank_by"), (str, type(None)))):
            raise bad("has a malformed metric_info")
        columns = [c for c in (info or {}).get("columns", {})] + [c for c in NUMERIC if c in record]
        for column in columns:
            value = record.get(column)
            if value is not None and not _is_number(value):
                raise bad(f"has {column} = {_short(value)}, not a number")
        if kind in ("selection", "real") or status != "completed":
            continue  # the real-data row is a reference: it scores what real data it has (no reference split)
        fields = ([f for f in info.get("comparable", []) if isinstance(f, str)] if info
                  else list(LEGACY_PROTOCOL))
        missing = [f for f in fields if f"protocol.{f}" not in record]
        if fields and len(missing) == len(fields):  # a metric may leave out a field it does not use (the mixtures'
            # reference split), but a score with none of its protocol cannot be compared with anything
            raise bad(f"is scored but lacks its protocol field(s) {', '.join(missing[:4])}: its score cannot be "
                      "compared with any other")
        protocol = {f: record[f"protocol.{f}"] for f in fields if f"protocol.{f}" in record}
        first = protocols.setdefault(record["dataset"], (key, protocol))
        differing = [f for f in protocol if f in first[1] and not same_value(protocol[f], first[1][f])]
        if differing:
            f = differing[0]
            raise bad(f"was scored under another protocol than the record {_short(first[0])} of the same dataset "
                      f"({f}: {_short(protocol[f])} vs {_short(first[1][f])}); one report folder holds one protocol")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A real number that is finite, or NaN (no score); text, booleans and infinities are not scores."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (value != value or abs(value) != float("inf")))


def _short(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: repr, control characters escaped, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def same_value(a: Any, b: Any) -> bool:
    """JSON values equal as values: numbers by value (0 == 0.0), booleans only to booleans, tables and lists
    element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
