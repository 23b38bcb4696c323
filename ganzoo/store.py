"""The results store of a report folder: one SQLite file (standard library; pandas reads it directly).

Each grid cell's record is committed in its own transaction, so a crash loses nothing already written and
readers (a leaderboard rendered while the benchmark runs) always see whole records. A file that is not a
ganzoo store, or is damaged, is reported and never overwritten.
"""
from __future__ import annotations

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
        except sqlite3.DatabaseError:
            pass  # not a SQLite file, or another one: reported (and left untouched) by open() below
        finally:
            db.close()

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, value FROM meta").fetchall())

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
        with self.db:
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
        with self.db:
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
                record = json.loads(text)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not {"kind", "status"} <= set(record):
                raise GanzooError(f"results store {self.path}: the record {key} is corrupt")
            out.append(record)
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
