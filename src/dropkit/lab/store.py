"""The lab's store: every run in one SQLite file (the embedded default), keyed by its config hash.

A run's life is two transactions. ``claim`` marks it ``running`` (creating the row or resetting an unfinished or
failed one, and dropping any curves it had); ``finish`` writes its per-epoch curves, final metrics, placement,
environment and wall time *and* flips it to ``done`` in one transaction, so a run killed at any point leaves
either a finished row or an unfinished one with no result, never half a result. ``fail`` records a run that
raised (e.g. a method that does not fit the model), with the error. A sweep re-run skips ``done`` rows and redoes
the rest. WAL mode and a busy timeout let a report read while a sweep writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Store", "STATUSES", "SCHEMA_VERSION", "EXPERIMENT"]

SCHEMA_VERSION = 1
STATUSES = ("running", "done", "failed")
#: the ``kind`` of a result recorded by an experiment script (``record_experiment``), not by the trainer
EXPERIMENT = "experiment"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash  TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL DEFAULT 'run',
    method       TEXT NOT NULL,
    dataset      TEXT NOT NULL,
    model        TEXT NOT NULL,
    seed         INTEGER NOT NULL,
    train_size   INTEGER,
    tag          TEXT,
    config       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    error        TEXT,
    environment  TEXT,
    placement    TEXT,
    metrics      TEXT,
    probe        TEXT,
    extra        TEXT,
    started_at   REAL,
    finished_at  REAL,
    wall_s       REAL,
    attempts     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS curves (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch   INTEGER NOT NULL,
    metric  TEXT NOT NULL,
    value   REAL,
    PRIMARY KEY (run_id, epoch, metric)
);
"""


class Store:
    """A SQLite file of runs. ``Store(path)`` creates it (and its folder) if needed.

    Args:
        path: the database file (``":memory:"`` for a throw-away store).
    """

    def __init__(self, path: str | os.PathLike = "runs.db") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if p.exists() and p.is_dir():
                raise ValueError(f"db {self.path!r} is a folder; give a file path such as runs.db")
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._conn.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(f"{self.path}: store schema {version} is newer than this dropkit's "
                                 f"({SCHEMA_VERSION}); upgrade dropkit")
            with self.transaction() as cur:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path}: not a dropkit store (SQLite said: {err})") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception (KeyboardInterrupt included)."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    # ------------------------------------------------------------------------------------------ writing
    def status(self, config_hash: str) -> str | None:
        row = self._conn.execute("SELECT status FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
        return None if row is None else row[0]

    def claim(self, config_hash: str, config: Mapping[str, Any], *, kind: str = "run", tag: str | None = None) -> int:
        """Mark a run ``running`` (new, or reset from unfinished/failed); return its id. A done run is refused."""
        with self.transaction() as cur:
            row = cur.execute("SELECT id, status FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
            if row is not None and row[1] == "done":
                raise ValueError(f"run {config_hash} is already done")
            if row is None:
                cur.execute(
                    "INSERT INTO runs (config_hash, kind, method, dataset, model, seed, train_size, tag, config, "
                    "status, started_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, 1)",
                    (config_hash, kind, config["method"], config["data"], config["model"], config["seed"],
                     config.get("train_size"), tag, json.dumps(config, sort_keys=True), time.time()))
                return int(cur.lastrowid)
            run_id = int(row[0])
            cur.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
            cur.execute("UPDATE runs SET status = 'running', error = NULL, metrics = NULL, probe = NULL, "
                        "placement = NULL, environment = NULL, extra = NULL, finished_at = NULL, wall_s = NULL, "
                        "started_at = ?, attempts = attempts + 1, tag = COALESCE(?, tag) WHERE id = ?",
                        (time.time(), tag, run_id))
            return run_id

    def finish(self, config_hash: str, result: Mapping[str, Any]) -> None:
        """Write a run's curves and results and mark it done, atomically."""
        with self.transaction() as cur:
            row = cur.execute("SELECT id, status FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
            if row is None or row[1] != "running":
                raise ValueError(f"run {config_hash} was not claimed (status {row and row[1]!r})")
            run_id = int(row[0])
            cur.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
            cur.executemany(
                "INSERT INTO curves (run_id, epoch, metric, value) VALUES (?, ?, ?, ?)",
                [(run_id, int(r["epoch"]), k, None if v is None else float(v))
                 for r in result.get("curves", []) for k, v in r.items() if k != "epoch"])
            extra = {k: result[k] for k in ("task", "primary", "schedule") if k in result}
            cur.execute(
                "UPDATE runs SET status = 'done', metrics = ?, placement = ?, environment = ?, probe = ?, extra = ?, "
                "finished_at = ?, wall_s = ? WHERE id = ?",
                (json.dumps(result["metrics"]), json.dumps(result.get("placement")),
                 json.dumps(result.get("environment")),
                 None if result.get("probe") is None else json.dumps(result["probe"]), json.dumps(extra),
                 time.time(), float(result.get("wall_s", 0.0)), run_id))

    def record_experiment(self, experiment: str, config: Mapping[str, Any], metrics: Mapping[str, Any], *,
                          tag: str | None = None, environment: Mapping[str, Any] | None = None,
                          wall_s: float = 0.0) -> str:
        """Store one finished result of an experiment script (kind ``"experiment"``) and return its key.

        The key hashes the experiment's name and ``config``; recording the same config again replaces the earlier
        result (an experiment script reruns all its arms at once). The ``model`` column holds the experiment's
        name; ``method``, ``data`` and ``seed`` come from ``config`` when it has them.

        Args:
            experiment: the script's name, e.g. ``"moe_lm"``.
            config: what determines this result (JSON-serialisable).
            metrics: its numbers (JSON-serialisable).
        """
        if not isinstance(experiment, str) or not experiment:
            raise ValueError(f"experiment must be a non-empty name, got {experiment!r}")
        for name, value in (("config", config), ("metrics", metrics)):
            if not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
        stored = {"experiment": experiment, **config}
        blob = json.dumps(stored, sort_keys=True, separators=(",", ":"))
        key = f"{experiment}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
        now = time.time()
        with self.transaction() as cur:
            cur.execute("DELETE FROM runs WHERE config_hash = ?", (key,))
            cur.execute(
                "INSERT INTO runs (config_hash, kind, method, dataset, model, seed, train_size, tag, config, status, "
                "environment, metrics, started_at, finished_at, wall_s, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, 1)",
                (key, EXPERIMENT, str(config.get("method", experiment)), str(config.get("data", "")), experiment,
                 int(config.get("seed", 0)), config.get("train_size"), tag, blob,
                 None if environment is None else json.dumps(environment), json.dumps(dict(metrics)),
                 now - wall_s, now, float(wall_s)))
        return key

    def fail(self, config_hash: str, error: str, *, environment: Mapping[str, Any] | None = None) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE runs SET status = 'failed', error = ?, environment = ?, finished_at = ? "
                        "WHERE config_hash = ? AND status = 'running'",
                        (error, None if environment is None else json.dumps(environment), time.time(), config_hash))

    # ------------------------------------------------------------------------------------------ reading
    def runs(self, *, status: str | Iterable[str] | None = None, kind: str | None = None,
             tag: str | None = None, curves: bool = True) -> list[dict[str, Any]]:
        """The stored runs as dicts (JSON columns parsed; ``curves`` as a list of per-epoch dicts)."""
        where, args = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise ValueError(f"status must be among {STATUSES}, got {bad}")
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if tag is not None:
            where.append("tag = ?")
            args.append(tag)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        cur = self._conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            rec = dict(zip(names, values))
            for key in ("config", "environment", "placement", "metrics", "probe", "extra"):
                rec[key] = None if rec[key] is None else json.loads(rec[key])
            out.append(rec)
        if curves and out:
            by_id: dict[int, dict[int, dict[str, float]]] = {}
            for run_id, epoch, metric, value in self._conn.execute(
                    "SELECT run_id, epoch, metric, value FROM curves ORDER BY run_id, epoch"):
                by_id.setdefault(run_id, {}).setdefault(epoch, {"epoch": epoch})[metric] = value
            for rec in out:
                rec["curves"] = list(by_id.get(rec["id"], {}).values())
        return out

    def counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {s: int(n) for s, n in rows}
