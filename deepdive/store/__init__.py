"""Run store: one SQLite database (WAL) per workspace, beside one folder per run.

    runs/deepdive.sqlite          runs, per-epoch metrics, per-example predictions, artifacts, analyses,
                                  people's reviews of suspected label errors
    runs/<run_id>/                checkpoints, config.json, analysis outputs (large arrays live here as files)

One connection per Store; every write is one short IMMEDIATE transaction, so a second process (the dashboard
reading while a run trains) only ever waits `timeout` seconds for a lock and never sees half a write.
"""
import json
import math
import re
import secrets
import sqlite3
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import numpy as np

from deepdive.errors import DeepdiveError, RunError
from deepdive.paths import DEFAULT_WORKSPACE, TRAIN_STATE
from deepdive.store.schema import DDL, HISTOGRAM_KINDS, MIGRATIONS, REVIEW_VERDICTS, SCHEMA_VERSION, STATUSES

__all__ = ["Store", "RunRecord", "STATUSES", "DB_NAME", "code_version", "to_json"]

DB_NAME = "deepdive.sqlite"
STALE_AFTER_SECONDS = 600  # a `running` run without a heartbeat for this long is treated as killed
MAX_NAME, MAX_NOTES = 200, 10_000   # characters of a run's name and notes (Store.edit_run)
EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")   # the epochs table's metrics
EPOCH_COLUMNS = ("epoch", *EPOCH_FIELDS, "member")   # its columns: Store.epochs' keys but `metrics` (the others)
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{0,63}")   # an epoch's own metric (valid_metrics)
# an image's tag (valid_tag): "blurry", "check later", "9s"; no "+", "&", "=" or "/", which a link to the predictions
# filtered by it (#/.../predictions/tag=...) would read otherwise
TAG = re.compile(r"[^\W_][\w .:#-]{0,39}")
MAX_METRICS = 256                   # differently named own metrics per run: scalars per epoch, not a data dump
MAX_PARAMS = 300                    # flat configuration values per run (RunRecord.params)
DELETED_PREFIX = ".deleted-"   # a deleted run's folder, renamed aside until it is removed (Store.delete_run)
# A heartbeat proves the process is alive, so it also revives a run that was marked stale too early.
_HEARTBEAT_SQL = ("UPDATE runs SET heartbeat_at = ?, status = 'running', error = NULL"
                  " WHERE id = ? AND status IN ('running', 'interrupted')")


@dataclass
class RunRecord:
    id: str
    name: str
    dataset: str
    status: str
    config_json: str
    data_source_json: str
    code_version: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    train_seconds: float | None
    test_accuracy: float | None
    num_params: int | None
    model_arch: str | None
    class_names_json: str
    device: str | None
    run_dir: Path  # absolute; the db stores it relative to the workspace so workspaces can be moved
    heartbeat_at: str | None
    error: str | None
    notes: str | None

    @property
    def config(self) -> dict:
        return json.loads(self.config_json)

    @property
    def data_source(self) -> dict:
        return json.loads(self.data_source_json)

    @property
    def resumable(self) -> bool:
        """An unfinished `deepdive train` run that left a training state: `deepdive resume` can finish it."""
        return self.status in ("interrupted", "failed") and (self.run_dir / TRAIN_STATE).is_file()

    @property
    def params(self) -> dict:
        """The run's configuration as flat scalars, {"resolved.lr": 0.2, "preset": "default", ...}: every number,
        string and bool in it under its dotted path (lists, empty values and dicts of over 50 entries left out), at
        most MAX_PARAMS."""
        out = {}

        def walk(value, path):
            if len(out) >= MAX_PARAMS:
                return
            if isinstance(value, dict):
                if len(value) > 50:     # data (e.g. reviewed_labels' index -> label map), not settings
                    return
                for k, v in value.items():
                    walk(v, f"{path}.{k}" if path else str(k))
            elif isinstance(value, (bool, int, float, str)) and path:
                out[path] = value

        walk(self.config, "")
        return out

    @property
    def recipe(self) -> dict | None:
        """How a `deepdive train` run was trained: {preset, epochs (per member), seed, ensemble, and reviewed_labels
        (how many labels people changed or left out) if it trained with them}; None for runs
        logged through the Python API, whose config is the user's own."""
        cfg = self.config
        if not cfg.get("preset"):
            return None
        recipe = {"preset": cfg["preset"], "epochs": (cfg.get("resolved") or {}).get("epochs", cfg.get("epochs")),
                  "seed": cfg.get("seed"), "ensemble": cfg.get("ensemble"), "limit_train": cfg.get("limit_train"),
                  "overrides": cfg.get("overrides") or {}}
        if cfg.get("reviewed_labels"):   # trained with people's reviews of its labels
            reviewed = cfg["reviewed_labels"]
            recipe["reviewed_labels"] = len(reviewed.get("relabel") or {}) + len(reviewed.get("leave_out") or [])
        return recipe

    @property
    def recipe_text(self) -> str | None:
        """The recipe in a few words, e.g. "default · 20 ep · seed 0 · ×3 · 4 reviewed labels", with what the run
        changed of its preset (--arch, --precision, --prune, an advice's augmentation) and the training images it was
        limited to, e.g. "fast · 1 ep · seed 0 · 3,000 images · fp32 · arch stack5"; None for a run without one."""
        return self._recipe_words(seed=True)

    @property
    def recipe_group(self) -> str:
        """The group of `deepdive runs --group-by recipe` and the runs page's grouping: the dataset and the recipe
        without its seed, so the seeds of one recipe go together ("mnist · default · 24 ep"); a run logged through
        the Python API, which has no recipe, goes by its name ("custom · my-net")."""
        return f"{self.dataset} · {self._recipe_words(seed=False) or self.name}"

    def _recipe_words(self, seed: bool) -> str | None:
        r = self.recipe
        if r is None:
            return None
        return " · ".join([r["preset"]] + [text for ok, text in (
            (r["epochs"] is not None, f"{r['epochs']} ep"), (seed and r["seed"] is not None, f"seed {r['seed']}"),
            ((r["ensemble"] or 1) > 1, f"×{r['ensemble']}"),
            (r.get("limit_train") is not None, f"{r.get('limit_train') or 0:,} images"),
            ("reviewed_labels" in r, f"{r.get('reviewed_labels')} reviewed labels")) if ok] +
            [_override_text(k, v) for k, v in sorted(r.get("overrides", {}).items())])

    @property
    def class_names(self) -> list[str]:
        return json.loads(self.class_names_json)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d


def valid_histogram(run_id, epoch, position, h) -> tuple:
    """One histogram entry (deepdive.train.histograms) as a row of the histograms table, or a DeepdiveError that
    names what is wrong with it."""
    try:
        name, kind, counts = str(h["name"]), h["kind"], [int(c) for c in h["counts"]]
        lo, hi, mean, std = (float(h[k]) for k in ("lo", "hi", "mean", "std"))
    except (KeyError, TypeError, ValueError) as e:
        raise DeepdiveError(f"a histogram needs name, kind, lo, hi, mean, std and counts (a list of whole "
                            f"numbers): {e}") from None
    if kind not in HISTOGRAM_KINDS:
        raise DeepdiveError(f"histogram {name!r}: kind must be one of {', '.join(HISTOGRAM_KINDS)}, got {kind!r}")
    if not all(math.isfinite(v) for v in (lo, hi, mean, std)) or hi < lo or not counts or min(counts) < 0:
        raise DeepdiveError(f"histogram {name!r} ({kind}): lo <= hi, finite, and counts not negative, got "
                            f"lo {lo}, hi {hi}, {len(counts)} counts")
    return (run_id, int(epoch), name, kind, int(position), lo, hi, mean, std, json.dumps(counts))


def _override_text(key, value) -> str:
    """One setting a run changed of its preset, in words: "arch stack5", "fp32", "augment rotate 15, shift 2"."""
    if key == "amp" and isinstance(value, bool):
        return "bf16" if value else "fp32"
    if isinstance(value, dict):
        return f"{key} " + ", ".join(f"{k} {_word(v)}" for k, v in sorted(value.items()))
    return f"{key} {_word(value)}"


def _word(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_COLUMNS = [f.name for f in fields(RunRecord)]


def _now() -> str:
    # Fixed-width ISO-8601 UTC, so string comparison orders timestamps.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def to_json(obj) -> str:
    """JSON for the store and run folders; numpy scalars/arrays and Paths become plain values."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot store {type(o).__name__} as JSON")

    return json.dumps(obj, default=default, sort_keys=True)


@cache
def code_version() -> str:
    """`git describe --always --dirty` of the deepdive checkout, else the package version."""
    from deepdive import __version__

    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                                 text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return f"deepdive {__version__}"


def _valid_name(name) -> str:
    """A run's name, stripped; RunError if empty, 'latest' (the CLI's word for the newest run) or too long."""
    text = "" if name is None else str(name).strip()
    if not text or text == "latest":
        raise RunError(f"invalid run name {name!r}: give a non-empty name other than 'latest'")
    if len(text) > MAX_NAME:
        raise RunError(f"a run name has at most {MAX_NAME} characters, got {len(text)}")
    return text


def valid_metrics(metrics: dict, per_step=False) -> dict:
    """{name: float or None} of an epoch's own metrics (per_step: of a step's); DeepdiveError naming the first bad
    name or value. A name starts with a letter and holds letters, digits and _ . / - (at most 64): "grad_norm",
    "val/f1", "system/cpu_percent"; a "group/" prefix groups the dashboard's charts. Values are numbers (a 0-d
    tensor or array included); None and non-finite ones are kept as None. A step may log "epoch" (where in
    training it is, as W&B's loops do: the dashboard can draw the step's curves against it)."""
    out = {}
    for name, value in metrics.items():
        if name in ("epoch", "member") and not (per_step and name == "epoch"):
            # an epoch's number and ensemble member: columns of the epochs table, never metrics
            raise DeepdiveError(f"metric {name} has a column of its own in the epochs table; "
                                + ("log it with run.log" if per_step else "pass it as such"))
        if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
            raise DeepdiveError(f"invalid metric name {name!r}: start with a letter, then letters, digits or "
                                "_ . / -, at most 64 characters")
        try:
            out[name] = _finite(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):      # RuntimeError: torch's item() of a tensor of many
            raise DeepdiveError(f"metric {name} must be a number, got {value!r}") from None
    return out


def valid_step(step) -> int:
    """A training step: an integer >= 0 (numpy's too, not a bool); DeepdiveError otherwise."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise DeepdiveError(f"step must be an integer >= 0, got {step!r}")
    return int(step)


def valid_tag(tag) -> str:
    """A tag, stripped; DeepdiveError unless it is 1-40 characters of letters, digits, spaces and _ . : # - that
    start with a letter or digit."""
    text = "" if tag is None else str(tag).strip()
    if not TAG.fullmatch(text):
        raise DeepdiveError(f"invalid tag {tag!r}: 1-40 characters, letters, digits, spaces and _ . : # -, "
                            "starting with a letter or digit")
    return text


def _finite(value) -> float | None:
    """float(value), None for None, NaN and infinities; TypeError or ValueError for anything but a number."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):     # float() would parse "0.5"
        raise TypeError(f"not a number: {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def _check_name_count(c, table, run_id, names, rest):
    """DeepdiveError if `names` would take the run past MAX_METRICS differently named metrics in `table` (`rest`
    ends the message)."""
    if not names:
        return
    known = {r[0] for r in c.execute(f"SELECT DISTINCT name FROM {table} WHERE run_id = ?", (run_id,))}
    if len(known | set(names)) > MAX_METRICS:
        raise DeepdiveError(f"run {run_id} would log more than {MAX_METRICS} differently named metrics{rest}")


def refuse_running(run):
    """RunError if run record `run` is still running: it cannot be deleted (Store.delete_run, `deepdive delete`)."""
    if run.status == "running":
        raise RunError(f"run {run.id} ({run.name}) is still running (last heartbeat {run.heartbeat_at}); stop it "
                       f"first (a run whose process died is marked interrupted {STALE_AFTER_SECONDS // 60} min "
                       "after its last heartbeat)")


def folder_bytes(path) -> int:
    """The bytes of the files under `path` (a run folder's size)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class Store:
    def __init__(self, workspace, conn: sqlite3.Connection):
        self.workspace = Path(workspace).resolve()
        self._conn = conn
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()  # lets a web server share one Store between request threads

    # ---- lifecycle ----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, workspace=DEFAULT_WORKSPACE, *, create=True, timeout=30.0,
             stale_after=STALE_AFTER_SECONDS) -> "Store":
        """Open (creating with create=True) the workspace's store; marks runs without a recent heartbeat."""
        ws = Path(workspace)
        db = ws / DB_NAME
        if not create and not db.is_file():
            raise RunError(f"no deepdive workspace at {ws} (no {DB_NAME} there); train a run first: "
                           f"deepdive train --workspace {ws}")
        try:
            ws.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create workspace folder {ws}: {e.strerror or e}") from None
        conn = None
        try:
            conn = sqlite3.connect(db, timeout=timeout, isolation_level=None, check_same_thread=False)
            store = cls(ws, conn)
            store._setup()
            store.mark_stale(stale_after)
            return store
        except BaseException as e:
            if conn is not None:
                conn.close()
            if isinstance(e, sqlite3.DatabaseError):  # not a database, locked for longer than timeout, read-only...
                raise RunError(f"cannot use {db} as a deepdive database: {e}") from None
            raise

    def _setup(self):
        c = self._conn
        mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RunError(f"{self.db_path}: SQLite refused WAL mode (got {mode!r}); is the folder on a network drive?")
        c.execute("PRAGMA synchronous=NORMAL")  # durable in WAL except for the last commits on power loss
        c.execute("PRAGMA foreign_keys=ON")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RunError(f"{self.db_path} was written by a newer deepdive (schema v{version}, this one reads "
                           f"v{SCHEMA_VERSION}); upgrade deepdive")
        if version < SCHEMA_VERSION:
            # An existing database (version >= 1) is migrated step by step, a fresh one (0) created at the latest;
            # both in one transaction. executescript commits any open transaction first, so the script carries its
            # own BEGIN/COMMIT.
            steps = "\n".join(MIGRATIONS[v] for v in range(version, SCHEMA_VERSION)) if version else ""
            try:
                c.executescript(f"BEGIN IMMEDIATE;\n{steps}\n{DDL}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    @property
    def db_path(self) -> Path:
        return self.workspace / DB_NAME

    def close(self):
        with self._lock:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _tx(self):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql, params=()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _require_run(self, conn, run_id):
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise RunError(f"unknown run id {run_id!r} in {self.workspace}")

    # ---- runs ---------------------------------------------------------------------------------------------
    def create_run(self, name, dataset, config: dict, data_source: dict, class_names, device) -> RunRecord:
        name = _valid_name(name)
        run_id = new_run_id()
        (self.workspace / run_id).mkdir(parents=True)
        now = _now()
        with self._tx() as c:
            c.execute(
                "INSERT INTO runs (id, name, dataset, status, config_json, data_source_json, code_version,"
                " created_at, started_at, class_names_json, device, run_dir, heartbeat_at)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, dataset, to_json(config), to_json(data_source), code_version(), now, now,
                 to_json(list(class_names)), str(device), run_id, now))
        return self.get_run(run_id)

    def edit_run(self, run_id, name=None, notes=None) -> RunRecord:
        """Rename a run and/or set its notes (None: leave as is; notes "": none). Names follow create_run's rule."""
        if name is not None:
            name = _valid_name(name)
        if notes is not None and len(str(notes)) > MAX_NOTES:
            raise RunError(f"a run's notes have at most {MAX_NOTES:,} characters, got {len(str(notes)):,}")
        with self._tx() as c:
            self._require_run(c, run_id)
            if name is not None:
                c.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))
            if notes is not None:
                c.execute("UPDATE runs SET notes = ? WHERE id = ?", (str(notes).strip() or None, run_id))
        return self.get_run(run_id)

    def set_config(self, run_id, config: dict):
        with self._tx() as c:
            self._require_run(c, run_id)
            c.execute("UPDATE runs SET config_json = ? WHERE id = ?", (to_json(config), run_id))

    def heartbeat(self, run_id):
        with self._tx() as c:
            c.execute(_HEARTBEAT_SQL, (_now(), run_id))

    def finish_run(self, run_id, test_accuracy, train_seconds, num_params, model_arch):
        now = _now()
        with self._tx() as c:
            self._require_run(c, run_id)
            c.execute("UPDATE runs SET status = 'finished', finished_at = ?, heartbeat_at = ?, test_accuracy = ?,"
                      " train_seconds = ?, num_params = ?, model_arch = ?, error = NULL WHERE id = ?",
                      (now, now, float(test_accuracy), float(train_seconds), int(num_params), model_arch, run_id))

    def reopen_run(self, run_id):
        """An interrupted or failed run goes back to `running` (to be resumed); only one caller can win this."""
        now = _now()
        with self._tx() as c:
            self._require_run(c, run_id)
            cur = c.execute("UPDATE runs SET status = 'running', finished_at = NULL, error = NULL, heartbeat_at = ?"
                            " WHERE id = ? AND status IN ('interrupted', 'failed')", (now, run_id))
            if cur.rowcount != 1:
                status = c.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
                raise RunError(f"run {run_id} is {status}: only an interrupted or failed run can be resumed")

    def mark_interrupted(self, run_id, message="interrupted"):
        with self._tx() as c:
            c.execute("UPDATE runs SET status = 'interrupted', finished_at = ?, error = ?"
                      " WHERE id = ? AND status = 'running'", (_now(), message, run_id))

    def mark_failed(self, run_id, message):
        with self._tx() as c:
            c.execute("UPDATE runs SET status = 'failed', finished_at = ?, error = ?"
                      " WHERE id = ? AND status IN ('running', 'interrupted')", (_now(), str(message), run_id))

    def mark_stale(self, stale_after=STALE_AFTER_SECONDS) -> int:
        """Mark `running` runs whose heartbeat is older than stale_after seconds as interrupted (process killed)."""
        cutoff = (datetime.now(timezone.utc) - timedelta(seconds=stale_after)).isoformat(timespec="milliseconds")
        with self._tx() as c:
            cur = c.execute("UPDATE runs SET status = 'interrupted', error = 'no heartbeat since ' || heartbeat_at"
                            " || ' (process killed?)' WHERE status = 'running' AND heartbeat_at < ?", (cutoff,))
            return cur.rowcount

    def _record(self, row) -> RunRecord:
        d = {k: row[k] for k in _COLUMNS}
        d["run_dir"] = self.workspace / d["run_dir"]
        return RunRecord(**d)

    def list_runs(self) -> list[RunRecord]:
        """All runs, newest first."""
        return [self._record(r) for r in self._query("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC")]

    def get_run(self, ref) -> RunRecord:
        """A run by id, name (newest with that name), unique id prefix, or 'latest'."""
        ref = str(ref).strip()
        if not ref:
            raise RunError("empty run reference; give a run id, id prefix, name or 'latest'")
        if ref == "latest":
            rows = self._query("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1")
            if not rows:
                raise RunError(f"no runs in {self.workspace} yet; train one with: deepdive train")
            return self._record(rows[0])
        for sql in ("SELECT * FROM runs WHERE id = ?",
                    "SELECT * FROM runs WHERE name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1"):
            rows = self._query(sql, (ref,))
            if rows:
                return self._record(rows[0])
        rows = self._query("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC",
                           (len(ref), ref))
        if len(rows) == 1:
            return self._record(rows[0])
        if rows:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise RunError(f"run prefix {ref!r} is ambiguous: it matches {len(rows)} runs ({ids}"
                           f"{', ...' if len(rows) > 5 else ''}); give more characters")
        known = self.list_runs()
        if not known:
            raise RunError(f"no run {ref!r}: {self.workspace} has no runs yet; train one with: deepdive train")
        listed = ", ".join(f"{r.id} ({r.name})" for r in known[:5])
        more = f" and {len(known) - 5} more (see: deepdive runs)" if len(known) > 5 else ""
        raise RunError(f"no run {ref!r} in {self.workspace}; known runs: {listed}{more}")

    def delete_run(self, run_id) -> int:
        """Remove a run: its rows (epochs, predictions, artifacts and analyses go with it), the reviews of images
        that are its own (sources 'run:<id>/...', a run logged with log_evaluation) and its folder. Reviews of a
        dataset's images stay: they belong to the images. A running run is refused. Whole or not at all: the folder
        is renamed aside first and renamed back if the rows cannot go; a crash after the rows went leaves a
        `.deleted-*` folder that the next delete removes. Returns the bytes freed."""
        import os
        import shutil

        run = self.get_run(run_id)
        if run.id != run_id:
            raise RunError(f"delete_run takes a run id, got {run_id!r} (run {run.id})")
        refuse_running(run)
        aside = self.workspace / f"{DELETED_PREFIX}{run.id}-{secrets.token_hex(3)}"
        moved = run.run_dir.is_dir()
        if moved:
            os.rename(run.run_dir, aside)
        try:
            with self._tx() as c:
                own = f"run:{run.id}/"
                for table in ("label_reviews", "image_tags"):     # its own images' (a log_evaluation run's)
                    c.execute(f"DELETE FROM {table} WHERE substr(source, 1, ?) = ?", (len(own), own))
                c.execute("DELETE FROM runs WHERE id = ?", (run.id,))
        except BaseException:
            if moved:
                os.rename(aside, run.run_dir)
            raise
        freed = folder_bytes(aside) if moved else 0
        for leftover in self.workspace.glob(f"{DELETED_PREFIX}*"):    # this one and any a crash left behind,
            gone_id = leftover.name[len(DELETED_PREFIX):].rsplit("-", 1)[0]
            if not self._query("SELECT 1 FROM runs WHERE id = ?", (gone_id,)):   # not one being deleted now
                shutil.rmtree(leftover, ignore_errors=True)
        return freed

    # ---- epochs -------------------------------------------------------------------------------------------
    def log_epoch(self, run_id, epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds, member=None,
                  metrics=None, steps=(), histograms=()):
        """One epoch's metrics; `member` is the ensemble member the epoch trained (None for a single model);
        `metrics` any other scalars by name (see valid_metrics); `steps` what was logged per step during it, in one
        transaction with it (see log_steps); `histograms` its parameters' (deepdive.train.histograms entries).
        Re-logging an epoch replaces all of them. A value that is not finite (a diverged loss) is kept as NULL: a
        gap in the curves, and JSON can carry it."""
        hist_rows = [valid_histogram(run_id, epoch, i, h) for i, h in enumerate(histograms or ())]
        extra = valid_metrics(metrics or {})
        clash = sorted(set(extra) & set(EPOCH_FIELDS))
        if clash:
            raise DeepdiveError(f"metric {clash[0]} has a column of its own in the epochs table; pass it as such")
        now = _now()
        with self._tx() as c:
            self._require_run(c, run_id)
            c.execute("DELETE FROM epoch_metrics WHERE run_id = ? AND epoch = ?", (run_id, int(epoch)))
            c.execute("INSERT OR REPLACE INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc, lr, "
                      "seconds, member) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (run_id, int(epoch), *(_finite(v) for v in (train_loss, train_acc, val_loss, val_acc, lr,
                                                                  seconds)),
                       None if member is None else int(member)))
            _check_name_count(c, "epoch_metrics", run_id, extra, "; log per-step values with run.log_step (the "
                              "store keeps scalars per epoch)")
            c.executemany("INSERT INTO epoch_metrics (run_id, epoch, name, value) VALUES (?, ?, ?, ?)",
                          [(run_id, int(epoch), k, v) for k, v in extra.items()])
            self._insert_steps(c, run_id, steps)
            c.execute("DELETE FROM histograms WHERE run_id = ? AND epoch = ?", (run_id, int(epoch)))
            c.executemany("INSERT INTO histograms (run_id, epoch, name, kind, position, lo, hi, mean, std, counts) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", hist_rows)
            c.execute(_HEARTBEAT_SQL, (now, run_id))

    def histograms(self, run_id) -> list[dict]:
        """The run's parameter histograms, by parameter (in the model's order, as they were logged), kind (weights
        first) and epoch: [{name, kind, epoch, lo, hi, mean, std, counts}]."""
        rows = self._query(
            "SELECT h.name, h.kind, h.epoch, h.lo, h.hi, h.mean, h.std, h.counts FROM histograms h JOIN "
            "(SELECT name, MIN(position) AS first FROM histograms WHERE run_id = ? GROUP BY name) f USING (name) "
            "WHERE h.run_id = ? ORDER BY f.first, h.name, h.kind = 'grad', h.epoch", (run_id, run_id))
        return [{"name": r[0], "kind": r[1], "epoch": r[2], "lo": r[3], "hi": r[4], "mean": r[5], "std": r[6],
                 "counts": json.loads(r[7])} for r in rows]

    def log_steps(self, run_id, points):
        """Scalars logged per training step: `points` is an iterable of (step, {name: value}) (names and values as
        valid_metrics takes them; a step a non-negative integer). Re-logging a (name, step) replaces its value."""
        with self._tx() as c:
            self._require_run(c, run_id)
            self._insert_steps(c, run_id, points)
            c.execute(_HEARTBEAT_SQL, (_now(), run_id))

    def _insert_steps(self, c, run_id, points):
        rows = []
        for step, values in points:
            step = valid_step(step)
            rows += [(run_id, name, step, value) for name, value in valid_metrics(values, per_step=True).items()]
        _check_name_count(c, "step_metrics", run_id, {r[1] for r in rows}, " per step; the store keeps scalars, "
                          "not a data dump")
        c.executemany("INSERT OR REPLACE INTO step_metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)", rows)

    def steps(self, run_id, max_points=None) -> dict:
        """{name: {"step": [...], "value": [...], "every": k}} of the scalars the run logged per step, by name, in
        step order. With max_points, a longer series is averaged over runs of k consecutive steps (each point at
        the last step of its run, as TensorBoard's downsampled charts stand at their newest point); k is 1 for a
        series returned whole."""
        out = {}
        spans = self._query("SELECT name, COUNT(*), MIN(step), MAX(step) FROM step_metrics WHERE run_id = ? "
                            "GROUP BY name ORDER BY name", (run_id,))
        for name, count, first, last in spans:
            every = 1 if max_points is None or count <= max_points else -(-(last - first + 1) // int(max_points))
            if every == 1:
                rows = self._query("SELECT step, value FROM step_metrics WHERE run_id = ? AND name = ? "
                                   "ORDER BY step", (run_id, name))
            else:
                rows = self._query("SELECT MAX(step), AVG(value) FROM step_metrics WHERE run_id = ? AND name = ? "
                                   "GROUP BY (step - ?) / ? ORDER BY 1", (run_id, name, first, every))
            out[name] = {"step": [r[0] for r in rows], "value": [_finite(r[1]) for r in rows], "every": every}
        return out

    def epochs(self, run_id) -> list[dict]:
        """The run's epochs in order: epoch, the fixed columns, member, and `metrics` {name: value} (the others)."""
        rows = self._query("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
        extra = {}
        for epoch, name, value in self._query("SELECT epoch, name, value FROM epoch_metrics WHERE run_id = ? "
                                              "ORDER BY name", (run_id,)):
            extra.setdefault(epoch, {})[name] = value
        # _finite: a workspace written before log_epoch kept infinities as NULL may hold some
        return [{**{k: _finite(r[k]) if k in EPOCH_FIELDS else r[k] for k in r.keys() if k != "run_id"},
                 "metrics": extra.get(r["epoch"], {})} for r in rows]

    # ---- predictions --------------------------------------------------------------------------------------
    def save_predictions(self, run_id, split, true, probs, losses, idx=None):
        """Replace the run's predictions on `split` in one transaction. idx defaults to 0..N-1."""
        probs = np.ascontiguousarray(probs, dtype="<f4")
        true = np.asarray(true, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        idx = np.arange(len(true)) if idx is None else np.asarray(idx, dtype=np.int64)
        if probs.ndim != 2:
            raise ValueError(f"probs must be (N, num_classes), got shape {probs.shape}")
        if not (len(true) == len(probs) == len(losses) == len(idx)):
            raise ValueError(f"predictions for {split!r}: true {len(true)}, probs {len(probs)}, "
                             f"losses {len(losses)}, idx {len(idx)} rows differ")
        if len(true) and (true.min() < 0 or true.max() >= probs.shape[1]):
            raise ValueError(f"true labels must be in [0, {probs.shape[1]}) for {probs.shape[1]} classes")
        pred = probs.argmax(1)
        conf = probs.max(1) if len(probs) else np.zeros(0, np.float32)
        rows = ((run_id, split, int(i), int(t), int(p), float(c), float(l), row.tobytes())
                for i, t, p, c, l, row in zip(idx, true, pred, conf, losses, probs))
        with self._tx() as c:
            self._require_run(c, run_id)
            c.execute("DELETE FROM predictions WHERE run_id = ? AND split = ?", (run_id, split))
            c.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def predictions(self, run_id, split) -> dict:
        """{'idx', 'true', 'pred', 'confidence', 'loss', 'probs' (N, C) float32}, ordered by idx."""
        rows = self._query("SELECT idx, true_label, pred_label, confidence, loss, probs FROM predictions"
                           " WHERE run_id = ? AND split = ? ORDER BY idx", (run_id, split))
        if not rows:
            raise RunError(f"run {run_id} has no predictions on split {split!r}")
        n = len(rows)
        probs = np.frombuffer(b"".join(r[5] for r in rows), dtype="<f4").reshape(n, -1).astype(np.float32)
        return {
            "idx": np.fromiter((r[0] for r in rows), np.int64, n),
            "true": np.fromiter((r[1] for r in rows), np.int64, n),
            "pred": np.fromiter((r[2] for r in rows), np.int64, n),
            "confidence": np.fromiter((r[3] for r in rows), np.float32, n),
            "loss": np.fromiter((r[4] for r in rows), np.float32, n),
            "probs": probs,
        }

    # ---- artifacts ----------------------------------------------------------------------------------------
    def add_artifact(self, run_id, name, relpath, kind):
        """Register a file inside the run folder (relpath is relative to it)."""
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"artifact path must be relative to the run folder, got {relpath!r}")
        with self._tx() as c:
            self._require_run(c, run_id)
            c.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
                      (run_id, name, rel.as_posix(), kind, _now()))

    def artifacts(self, run_id) -> list[dict]:
        """[{'name', 'path' (absolute Path), 'kind', 'created_at'}] of the run."""
        run_dir = self.get_run(run_id).run_dir
        rows = self._query("SELECT name, path, kind, created_at FROM artifacts WHERE run_id = ? ORDER BY name",
                           (run_id,))
        return [{"name": r["name"], "path": run_dir / r["path"], "kind": r["kind"], "created_at": r["created_at"]}
                for r in rows]

    # ---- analyses -----------------------------------------------------------------------------------------
    def save_analysis(self, run_id, split, summary: dict, stage_seconds: dict, status="finished"):
        with self._tx() as c:
            self._require_run(c, run_id)
            c.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?, ?)",
                      (run_id, split, status, to_json(summary), to_json(stage_seconds), _now()))

    def analysis(self, run_id, split) -> dict | None:
        """{'status', 'summary', 'stage_seconds', 'created_at'} of the run's analysis on split, or None."""
        rows = self._query("SELECT * FROM analyses WHERE run_id = ? AND split = ?", (run_id, split))
        if not rows:
            return None
        r = rows[0]
        return {"status": r["status"], "summary": json.loads(r["summary_json"]),
                "stage_seconds": json.loads(r["stage_seconds_json"]), "created_at": r["created_at"]}

    # ---- label reviews ------------------------------------------------------------------------------------
    def set_label_review(self, dataset, source, idx, given_label, verdict, label=None, run_id=None) -> dict:
        """Record (or replace) a person's verdict on image `idx` of `source`: 'relabel' with the right `label`,
        'keep' (the given label is right) or 'ambiguous'."""
        if verdict not in REVIEW_VERDICTS:
            raise DeepdiveError(f"unknown review verdict {verdict!r}; verdicts are {', '.join(REVIEW_VERDICTS)}")
        if (verdict == "relabel") != (label is not None):
            raise DeepdiveError("a 'relabel' review needs the right label, and only it takes one")
        if label is not None and int(label) == int(given_label):
            raise DeepdiveError(f"relabel to {label}, the label it already has: that is verdict 'keep'")
        row = (dataset, source, int(idx), int(given_label), verdict, None if label is None else int(label), run_id,
               _now())
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO label_reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        return dict(zip(("dataset", "source", "idx", "given_label", "verdict", "label", "run_id", "reviewed_at"), row))

    def delete_label_review(self, dataset, source, idx) -> bool:
        """Forget the review of one image; False if it had none."""
        with self._tx() as c:
            return c.execute("DELETE FROM label_reviews WHERE dataset = ? AND source = ? AND idx = ?",
                             (dataset, source, int(idx))).rowcount > 0

    # ---- tags (deepdive.analysis.tags) ----------------------------------------------------------------------
    def add_tag(self, dataset, source, idx, tag, run_id=None) -> int:
        """Put `tag` on image `idx` of `source`, or on each of a list of them, in one transaction (an image that
        has it keeps it as it was); returns how many images gained it."""
        tag, now = valid_tag(tag), _now()
        idxs = [int(i) for i in np.atleast_1d(idx)]
        with self._tx() as c:
            before = c.total_changes
            c.executemany("INSERT OR IGNORE INTO image_tags VALUES (?, ?, ?, ?, ?, ?)",
                          [(dataset, source, i, tag, run_id, now) for i in idxs])
            return c.total_changes - before

    def remove_tag(self, dataset, source, idx, tag) -> int:
        """Take `tag` off image `idx` of `source`, or off each of a list of them; returns how many had it."""
        idxs = [int(i) for i in np.atleast_1d(idx)]
        with self._tx() as c:
            before = c.total_changes
            c.executemany("DELETE FROM image_tags WHERE dataset = ? AND source = ? AND idx = ? AND tag = ?",
                          [(dataset, source, i, str(tag).strip()) for i in idxs])
            return c.total_changes - before

    def image_tags(self, dataset, source=None, idx=None) -> list[dict]:
        """The tags on `dataset`'s images (of one `source`, of one image `idx` of it), by source, index and tag."""
        where, params = ["dataset = ?"], [dataset]
        for key, value in (("source", source), ("idx", idx)):
            if value is not None:
                where.append(f"{key} = ?")
                params.append(value)
        rows = self._query(f"SELECT * FROM image_tags WHERE {' AND '.join(where)} ORDER BY source, idx, tag", params)
        return [dict(r) for r in rows]

    def label_reviews(self, dataset, source=None) -> list[dict]:
        """The reviews of `dataset` (of one `source` if given), by source and index."""
        where, params = ("dataset = ?", (dataset,)) if source is None else \
            ("dataset = ? AND source = ?", (dataset, source))
        rows = self._query(f"SELECT * FROM label_reviews WHERE {where} ORDER BY source, idx", params)
        return [dict(r) for r in rows]
