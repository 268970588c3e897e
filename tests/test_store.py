"""Run store: round trips, WAL, run lookup, crash bookkeeping. No training here: everything is written directly."""
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from deepdive.errors import DeepdiveError, RunError
from deepdive.store import DB_NAME, Store
from deepdive.store.schema import SCHEMA_VERSION

CLASSES = [str(i) for i in range(10)]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "ws") as s:
        yield s


def new_run(store, name="r", **kw):
    args = dict(dataset="mnist", config={"preset": "fast", "lr": np.float32(0.5), "epochs": np.int64(3)},
                data_source={"kind": "cache", "location": "/x"}, class_names=CLASSES, device="cpu")
    args.update(kw)
    return store.create_run(name, **args)


def test_open_creates_wal_database_with_schema_version(tmp_path):
    ws = tmp_path / "new" / "ws"
    with Store.open(ws):
        pass
    conn = sqlite3.connect(ws / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "epochs", "predictions", "artifacts", "analyses"} <= tables
    conn.close()


def test_open_migrates_a_version_1_database(tmp_path):
    """A workspace written before epochs had a member column opens, keeps its rows, and takes member indices."""
    from deepdive.store.schema import DDL

    ws = tmp_path / "old"
    ws.mkdir()
    v1 = DDL.replace("    member INTEGER,                -- an ensemble's member index (its epochs are numbered on "
                     "across members)\n", "")
    v1 = v1.replace("    error TEXT,\n    notes TEXT                     -- what a person wrote about the run "
                    "(deepdive edit, the runs page)\n", "    error TEXT\n")
    v1 = v1[:v1.index("-- Any other scalar")] + v1[v1.index("CREATE TABLE IF NOT EXISTS predictions"):]
    v1 = v1[:v1.index("-- Words a person put")]
    assert "member" not in v1 and "notes" not in v1 and "epoch_metrics" not in v1 and "image_tags" not in v1
    assert "step_metrics" not in v1
    conn = sqlite3.connect(ws / DB_NAME)
    conn.executescript(v1 + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO runs (id, name, dataset, status, config_json, data_source_json, code_version, "
                 "created_at, class_names_json, run_dir) VALUES ('r1', 'old', 'mnist', 'finished', '{}', '{}', "
                 "'0.1', '2026-11-01T00:00:00+00:00', '[]', ?)", (str(ws / "r1"),))
    conn.execute("INSERT INTO epochs VALUES ('r1', 1, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5)")
    conn.commit()
    conn.close()
    with Store.open(ws) as s:
        s.log_epoch("r1", 2, 0.5, 0.8, 0.5, 0.8, 0.1, 2.5, member=1, metrics={"grad_norm": 3})
        assert [(e["epoch"], e["val_acc"], e["member"], e["metrics"]) for e in s.epochs("r1")] == \
            [(1, 0.75, None, {}), (2, 0.8, 1, {"grad_norm": 3.0})]
        assert s.get_run("r1").notes is None and s.edit_run("r1", notes="from v1").notes == "from v1"
    conn = sqlite3.connect(ws / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_epoch_metrics_by_name(store):
    """An epoch's other metrics: kept by name with it, replaced with it, gone with the run; a non-finite value is
    NULL (a gap; JSON carries it), a bad name or value refused with nothing written."""
    run, other = new_run(store, "m"), new_run(store, "other")
    store.log_epoch(run.id, 1, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5,
                    metrics={"grad_norm": np.float32(1.5), "val/f1": 0.5, "system/cpu_percent": 190})
    store.log_epoch(run.id, 2, float("inf"), 0.8, float("nan"), 0.8, 0.1, 2.5, metrics={"grad_norm": float("inf")})
    store.log_epoch(other.id, 1, 1, 1, 1, 1, 1, 1, metrics={"grad_norm": 9})
    one, two = store.epochs(run.id)
    assert one["metrics"] == {"grad_norm": 1.5, "system/cpu_percent": 190.0, "val/f1": 0.5}
    assert two["metrics"] == {"grad_norm": None} and (two["train_loss"], two["val_loss"]) == (None, None)
    store.log_epoch(run.id, 1, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5, metrics={"lr_scale": 2})   # re-logged: replaced
    assert store.epochs(run.id)[0]["metrics"] == {"lr_scale": 2.0}
    for bad, match in [({"1st": 1}, "invalid metric name '1st'"), ({"a b": 1}, "invalid metric name"),
                       ({"x" * 65: 1}, "at most 64"), ({"f1": "0.5"}, "f1 must be a number"),
                       ({"f1": [1, 2]}, "f1 must be a number"),
                       ({"member": 1}, "member has a column of its own"),
                       ({"val_acc": 0.9}, "val_acc has a column of its own")]:
        with pytest.raises(DeepdiveError, match=match):
            store.log_epoch(run.id, 3, 1, 1, 1, 1, 1, 1, metrics=bad)
    assert [e["epoch"] for e in store.epochs(run.id)] == [1, 2]
    with pytest.raises(DeepdiveError, match="more than 256 differently named metrics"):
        store.log_epoch(run.id, 3, 1, 1, 1, 1, 1, 1, metrics={f"m{i}": i for i in range(256)})
    assert [e["epoch"] for e in store.epochs(run.id)] == [1, 2]       # the whole epoch refused
    store.finish_run(run.id, test_accuracy=0.9, train_seconds=1.0, num_params=1, model_arch="cnn")
    store.delete_run(run.id)
    assert [tuple(r) for r in store._query("SELECT run_id, name FROM epoch_metrics")] == [(other.id, "grad_norm")]


def test_step_metrics_by_name_and_step(store):
    """What a run logged per step: by name in step order, a re-logged step replaced, a non-finite value a gap,
    series longer than max_points averaged over runs of consecutive steps; a bad step, name or value refused with
    nothing written; an epoch's steps written with it; gone with the run."""
    run, other = new_run(store, "s"), new_run(store, "other")
    store.log_steps(run.id, [(s, {"loss": 10.0 - s, "lr": 0.1}) for s in range(10)])
    store.log_steps(run.id, [(3, {"loss": float("nan")}), (10, {"loss": np.float32(0.5)})])
    store.log_steps(other.id, [(0, {"loss": 99})])
    steps = store.steps(run.id)
    assert list(steps) == ["loss", "lr"] and steps["lr"] == {"step": list(range(10)), "value": [0.1] * 10, "every": 1}
    assert steps["loss"]["step"] == list(range(11))
    assert steps["loss"]["value"] == [10, 9, 8, None, 6, 5, 4, 3, 2, 1, 0.5]
    # 11 steps to at most 4 points: runs of 3 (0-2, 3-5, 6-8, 9-10), each at its last step, NaN left out
    short = store.steps(run.id, max_points=4)["loss"]
    assert short == {"step": [2, 5, 8, 10], "value": [9, 5.5, 3, 0.75], "every": 3}
    assert store.steps(run.id, max_points=11)["loss"]["every"] == 1
    for points, match in [([(-1, {"loss": 1})], "step must be an integer >= 0"),
                          ([(1.5, {"loss": 1})], "step must be an integer >= 0"),
                          ([(True, {"loss": 1})], "step must be an integer >= 0"),
                          ([(20, {"a b": 1})], "invalid metric name"),
                          ([(20, {"loss": 1}), (21, {"loss": "1"})], "loss must be a number")]:
        with pytest.raises(DeepdiveError, match=match):
            store.log_steps(run.id, points)
    assert store.steps(run.id)["loss"]["step"][-1] == 10          # nothing of a refused call written
    with pytest.raises(DeepdiveError, match="more than 256 differently named metrics per step"):
        store.log_steps(run.id, [(0, {f"m{i}": i for i in range(255)})])
    store.log_epoch(run.id, 1, 1, 1, 1, 1, 1, 1, steps=[(11, {"loss": 0.25})])
    assert store.steps(run.id)["loss"]["value"][-1] == 0.25
    with pytest.raises(DeepdiveError, match="step must be an integer >= 0"):   # the epoch goes with its steps
        store.log_epoch(run.id, 2, 1, 1, 1, 1, 1, 1, steps=[(-5, {"loss": 0.25})])
    assert [e["epoch"] for e in store.epochs(run.id)] == [1]
    with pytest.raises(RunError, match="unknown run id"):
        store.log_steps("nope", [(0, {"loss": 1})])
    store.finish_run(run.id, test_accuracy=0.9, train_seconds=1.0, num_params=1, model_arch="cnn")
    store.delete_run(run.id)
    assert store.steps(run.id) == {} and list(store.steps(other.id)) == ["loss"]


def test_a_recipe_in_words_says_what_the_run_changed(store):
    """The runs table's recipe (and the runs page's grouping by recipe) tells apart runs that differ in anything
    they were trained with: the preset's settings they overrode and the training images they were limited to."""
    def text(**config):
        return store.create_run("r", "mnist", config, {}, ["0", "1"], "cpu").recipe_text

    assert text(preset="default", seed=0, epochs=None, resolved={"epochs": 24}) == "default · 24 ep · seed 0"
    assert text(preset="fast", seed=3, epochs=4, ensemble=3, limit_train=20000,
                overrides={"arch": "stack5", "amp": False, "prune": 0.0}) == \
        "fast · 4 ep · seed 3 · ×3 · 20,000 images · fp32 · arch stack5 · prune 0"
    assert text(preset="fast", seed=0, epochs=4, overrides={"augment": {"rotate": 15.0, "shift": 2}}) == \
        "fast · 4 ep · seed 0 · augment rotate 15, shift 2"
    assert text(name_only=True) is None            # a run logged through the Python API has no recipe


def test_open_refuses_missing_workspace_newer_schema_busy_and_non_database(tmp_path):
    with pytest.raises(RunError, match="no deepdive workspace"):
        Store.open(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()

    Store.open(tmp_path / "future").close()
    conn = sqlite3.connect(tmp_path / "future" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RunError, match="newer deepdive"):
        Store.open(tmp_path / "future")

    Store.open(tmp_path / "busy").close()
    holder = sqlite3.connect(tmp_path / "busy" / DB_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    with pytest.raises(RunError, match="database is locked"):
        Store.open(tmp_path / "busy", timeout=0.1)
    holder.execute("ROLLBACK")
    holder.close()

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunError, match="cannot use .* as a deepdive database: file is not a database"):
        Store.open(tmp_path / "junk")


def test_run_round_trip(store):
    run = new_run(store, "first")
    assert run.status == "running"
    assert run.run_dir == store.workspace / run.id and run.run_dir.is_dir()
    assert run.config == {"preset": "fast", "lr": 0.5, "epochs": 3}
    assert run.data_source == {"kind": "cache", "location": "/x"}
    assert run.class_names == CLASSES
    assert run.code_version  # git describe in a checkout, else the package version
    assert run.heartbeat_at == run.created_at

    store.log_epoch(run.id, 1, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5)
    store.log_epoch(run.id, 2, 0.5, 0.85, 0.45, 0.88, 0.05, 2.4)
    store.log_epoch(run.id, 2, 0.4, 0.86, 0.44, 0.89, 0.05, 2.3)  # re-logging an epoch replaces it
    epochs = store.epochs(run.id)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1] == {"epoch": 2, "train_loss": 0.4, "train_acc": 0.86, "val_loss": 0.44, "val_acc": 0.89,
                         "lr": 0.05, "seconds": 2.3, "member": None, "metrics": {}}
    store.log_epoch(run.id, 3, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5, member=1)   # an ensemble's second member
    assert store.epochs(run.id)[2]["member"] == 1

    store.set_config(run.id, {"preset": "fast", "resolved": {"epochs": 2}})
    store.finish_run(run.id, test_accuracy=0.9, train_seconds=4.8, num_params=1234, model_arch="cnn")
    done = store.get_run(run.id)
    assert (done.status, done.test_accuracy, done.train_seconds, done.num_params, done.model_arch) == \
        ("finished", 0.9, 4.8, 1234, "cnn")
    assert done.finished_at >= done.started_at
    assert done.config["resolved"] == {"epochs": 2}
    assert done.to_dict()["run_dir"] == str(run.run_dir)


def test_predictions_round_trip_with_probability_blobs(store):
    run = new_run(store)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=50).astype(np.float32)
    true = rng.integers(0, 10, 50)
    losses = -np.log(probs[np.arange(50), true])
    store.save_predictions(run.id, "test", true, probs, losses)

    got = store.predictions(run.id, "test")
    np.testing.assert_array_equal(got["idx"], np.arange(50))
    np.testing.assert_array_equal(got["true"], true)
    np.testing.assert_array_equal(got["pred"], probs.argmax(1))
    np.testing.assert_array_equal(got["probs"], probs)  # bit-exact float32
    assert got["probs"].dtype == np.float32 and got["probs"].shape == (50, 10)
    np.testing.assert_allclose(got["confidence"], probs.max(1), rtol=1e-6)
    np.testing.assert_allclose(got["loss"], losses, rtol=1e-6)
    blob = store._conn.execute("SELECT probs FROM predictions WHERE run_id = ? AND idx = 3", (run.id,)).fetchone()[0]
    assert np.frombuffer(blob, "<f4").tolist() == probs[3].tolist()  # documented layout: float32 little-endian

    # saving a split again replaces it; other splits are separate; explicit indices are kept
    store.save_predictions(run.id, "test", true[:5], probs[:5], losses[:5])
    store.save_predictions(run.id, "val", true[:3], probs[:3], losses[:3], idx=[7, 2, 40])
    assert len(store.predictions(run.id, "test")["idx"]) == 5
    assert store.predictions(run.id, "val")["idx"].tolist() == [2, 7, 40]
    with pytest.raises(RunError, match="no predictions on split 'train'"):
        store.predictions(run.id, "train")
    with pytest.raises(ValueError, match="rows differ"):
        store.save_predictions(run.id, "test", true[:4], probs[:5], losses[:5])
    with pytest.raises(RunError, match="unknown run id"):
        store.save_predictions("nope", "test", true, probs, losses)


def test_artifacts_and_analyses_round_trip(store):
    run = new_run(store)
    (run.run_dir / "model_best.pt").write_bytes(b"x")
    store.add_artifact(run.id, "model_best.pt", "model_best.pt", "checkpoint")
    store.add_artifact(run.id, "saliency", "analysis/test/saliency/gradient_errors.npy", "array")
    arts = {a["name"]: a for a in store.artifacts(run.id)}
    assert arts["model_best.pt"]["path"] == run.run_dir / "model_best.pt" and arts["model_best.pt"]["kind"] == "checkpoint"
    assert arts["saliency"]["path"] == run.run_dir / "analysis/test/saliency/gradient_errors.npy"
    with pytest.raises(ValueError, match="relative to the run folder"):
        store.add_artifact(run.id, "evil", "../other/file", "x")

    assert store.analysis(run.id, "test") is None
    summary = {"accuracy": np.float64(0.93), "per_class": [{"class": "1", "n": np.int64(5)}]}
    store.save_analysis(run.id, "test", summary, {"tables": 0.5, "saliency": 3.0})
    got = store.analysis(run.id, "test")
    assert got["status"] == "finished"
    assert got["summary"] == {"accuracy": 0.93, "per_class": [{"class": "1", "n": 5}]}
    assert got["stage_seconds"] == {"tables": 0.5, "saliency": 3.0}
    assert store.analysis(run.id, "val") is None


def test_get_run_by_id_prefix_name_latest_and_errors(store):
    with pytest.raises(RunError, match="no runs in .* yet"):
        store.get_run("latest")
    a = new_run(store, "alpha")
    b = new_run(store, "beta")
    c = new_run(store, "alpha")  # same name again: the name means the newest
    assert store.get_run(a.id).id == a.id
    assert store.get_run("latest").id == c.id
    assert store.get_run("alpha").id == c.id
    assert store.get_run("beta").id == b.id
    assert store.get_run(b.id[:-1]).id == b.id  # unique prefix (ids differ in their random suffix)
    assert [r.id for r in store.list_runs()] == [c.id, b.id, a.id]
    with pytest.raises(RunError, match="ambiguous"):
        store.get_run(a.id[:4])  # the year: every run matches
    with pytest.raises(RunError, match="invalid run name"):
        new_run(store, "latest")  # would be unreachable by name
    with pytest.raises(RunError) as err:
        store.get_run("gamma")
    assert "no run 'gamma'" in str(err.value) and a.id in str(err.value) and "beta" in str(err.value)


def test_interrupted_and_failed_runs_keep_their_epochs(store):
    run = new_run(store)
    store.log_epoch(run.id, 1, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5)
    store.mark_interrupted(run.id)
    got = store.get_run(run.id)
    assert got.status == "interrupted" and got.finished_at
    assert [e["epoch"] for e in store.epochs(run.id)] == [1]

    other = new_run(store)
    store.mark_failed(other.id, "RuntimeError: boom")
    assert (store.get_run(other.id).status, store.get_run(other.id).error) == ("failed", "RuntimeError: boom")
    store.mark_interrupted(other.id)  # a failed run stays failed
    assert store.get_run(other.id).status == "failed"


def test_stale_heartbeat_marks_run_interrupted_on_open(tmp_path):
    ws = tmp_path / "ws"
    with Store.open(ws) as s:
        stale, fresh = new_run(s, "stale"), new_run(s, "fresh")
        s.log_epoch(stale.id, 1, 1.0, 0.5, 1.0, 0.5, 0.1, 1.0)
        old = (datetime.now(timezone.utc) - timedelta(minutes=11)).isoformat(timespec="milliseconds")
        s._conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (old, stale.id))
    with Store.open(ws) as s:
        got = s.get_run(stale.id)
        assert got.status == "interrupted" and "no heartbeat" in got.error
        assert s.epochs(stale.id)[0]["epoch"] == 1
        assert s.get_run(fresh.id).status == "running"
        # a late heartbeat proves the process is alive after all
        s.heartbeat(stale.id)
        assert s.get_run(stale.id).status == "running"


def test_concurrent_writers_from_two_connections(tmp_path):
    ws = tmp_path / "ws"
    with Store.open(ws) as s:
        run = new_run(s)
    errors = []

    def writer(offset):
        try:
            with Store.open(ws) as mine:
                for e in range(offset, offset + 20):
                    mine.log_epoch(run.id, e, 1, 1, 1, 1, 1, 1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k * 100,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Store.open(ws) as s:
        assert len(s.epochs(run.id)) == 60


def test_copy_workspace_fixture_keeps_the_open_store_intact(tmp_path, copy_workspace, run_cli):
    ws = tmp_path / "ws"
    with Store.open(ws) as live:  # like the session's tiny_run store
        run = new_run(live)
        live.log_epoch(run.id, 1, 1, 1, 1, 1, 1, 1)
        copy = copy_workspace(ws, tmp_path / "copy")
        assert run_cli("runs", "--workspace", ws, "--json").returncode == 0  # another process opens and closes it
        assert (ws / f"{DB_NAME}-wal").exists()  # it did not take the database for unused and drop the WAL
        live.log_epoch(run.id, 2, 1, 1, 1, 1, 1, 1)
    with Store.open(ws) as reopened:
        assert [e["epoch"] for e in reopened.epochs(run.id)] == [1, 2]
    with Store.open(copy) as copied:
        assert [e["epoch"] for e in copied.epochs(run.id)] == [1] and (copy / run.id).is_dir()


def test_delete_run_removes_its_rows_own_reviews_and_folder_and_nothing_else(store, monkeypatch):
    keep, gone = new_run(store, "keep"), new_run(store, "gone")
    for run in (keep, gone):
        store.log_epoch(run.id, 1, 0.9, 0.7, 0.8, 0.75, 0.1, 2.5)
        store.save_predictions(run.id, "test", np.array([1, 2]), np.full((2, 10), 0.1, np.float32), np.ones(2))
        store.save_analysis(run.id, "test", {"n": 2}, {"load": 0.1})
        (run.run_dir / "model_best.pt").write_bytes(b"x" * 1000)
        store.add_artifact(run.id, "model_best.pt", "model_best.pt", "checkpoint")
        store.finish_run(run.id, 0.9, 1.0, 10, "cnn")
    store.set_label_review("mnist", "test", 7, 1, "relabel", 2, run_id=gone.id)          # the image's: stays
    store.set_label_review("custom", f"run:{gone.id}/test", 3, 1, "keep", run_id=gone.id)   # the run's own: goes
    store.set_label_review("custom", f"run:{keep.id}/train", 3, 1, "keep", run_id=keep.id)
    (store.workspace / f".deleted-{gone.id}0-abc123").mkdir()      # left by a crash: swept (its id is gone)
    busy = store.workspace / f".deleted-{keep.id}-def456"          # another delete's, its rows not gone yet: kept
    busy.mkdir()

    assert store.delete_run(gone.id) == 1000
    assert [r.id for r in store.list_runs()] == [keep.id] and not gone.run_dir.exists()
    assert store.epochs(gone.id) == [] and store.analysis(gone.id, "test") is None
    with pytest.raises(RunError, match="no run"):
        store.get_run(gone.id)
    assert [(r["dataset"], r["source"]) for r in store.label_reviews("mnist")] == [("mnist", "test")]
    assert [r["source"] for r in store.label_reviews("custom")] == [f"run:{keep.id}/train"]
    assert store.epochs(keep.id) and store.predictions(keep.id, "test")["true"].tolist() == [1, 2]
    assert (keep.run_dir / "model_best.pt").is_file() and list(store.workspace.glob(".deleted-*")) == [busy]
    busy.rmdir()

    running = new_run(store, "busy")
    with pytest.raises(RunError, match="still running"):
        store.delete_run(running.id)
    store.mark_interrupted(running.id)
    with pytest.raises(RunError, match="takes a run id"):
        store.delete_run("busy")
    # the rows cannot go (here: a failing transaction): the folder is put back, nothing is lost
    (running.run_dir / "train_state.pt").write_bytes(b"state")
    monkeypatch.setattr(store, "_tx", _failing_tx)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        store.delete_run(running.id)
    assert (running.run_dir / "train_state.pt").read_bytes() == b"state"
    assert store.get_run(running.id).status == "interrupted" and not list(store.workspace.glob(".deleted-*"))


def _failing_tx():
    raise sqlite3.OperationalError("database is locked")


def test_edit_run_renames_and_keeps_notes(store):
    run = new_run(store, "first")
    edited = store.edit_run(run.id, name="  second ", notes="lr 0.1 was too high\nnext: 0.05")
    assert (edited.name, edited.notes) == ("second", "lr 0.1 was too high\nnext: 0.05")
    assert store.get_run("second").id == run.id and store.edit_run(run.id, notes="").notes is None
    assert store.edit_run(run.id).name == "second"                      # nothing given: nothing changes
    for bad, message in (("latest", "invalid run name"), ("  ", "invalid run name"), ("x" * 201, "at most 200")):
        with pytest.raises(RunError, match=message):
            store.edit_run(run.id, name=bad)
    with pytest.raises(RunError, match="at most 10,000 characters"):
        store.edit_run(run.id, notes="x" * 10_001)
    with pytest.raises(RunError, match="unknown run id"):
        store.edit_run("nope", notes="x")
    assert store.get_run(run.id).to_dict()["notes"] is None


def test_params_flatten_the_settings_of_a_run(store):
    config = {"preset": "fast", "resolved": {"lr": 0.2, "augment": {"rotate": 10.0}, "widths": [32, 64],
                                             "amp": True, "keep": None},
              "reviewed_labels": {"relabel": {str(i): 1 for i in range(60)}}}
    run = new_run(store, config=config)
    assert run.params == {"preset": "fast", "resolved.lr": 0.2, "resolved.augment.rotate": 10.0,
                          "resolved.amp": True}
