"""train_and_evaluate: what a finished run leaves behind, and how interrupted/failed runs are recorded."""
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from deepdive.errors import DeepdiveError
from deepdive.models import load_checkpoint
from deepdive.store import Store
from deepdive.train import recipe
from deepdive.train.run import train_and_evaluate


def test_tiny_run_is_complete_and_consistent(tiny_run, mnist):
    store, run = tiny_run.store, tiny_run.store.get_run(tiny_run.run_id)
    assert run.status == "finished" and run.error is None
    assert run.run_dir == tiny_run.run_dir and tiny_run.run_dir.parent == tiny_run.workspace.resolve()
    assert tiny_run.result["epochs"] == 1 and [e["epoch"] for e in store.epochs(run.id)] == [1]
    assert run.data_source == mnist.source and run.class_names == mnist.class_names
    assert run.config["resolved"]["limit_train"] == 3000 and run.config["limit_test"] == 1000
    assert run.num_params > 0 and run.model_arch and run.train_seconds > 0
    # the epoch's other readings, kept by name beside the curves (deepdive.sysmetrics; images trained when pruned)
    metrics = store.epochs(run.id)[0]["metrics"]
    assert {"system/cpu_percent", "system/peak_rss_mb"} <= set(metrics) <= {"system/cpu_percent",
                                                                            "system/peak_rss_mb", "train_images"}
    assert 0 < metrics["system/cpu_percent"] <= 110 * (os.cpu_count() or 1) and metrics["system/peak_rss_mb"] > 100
    # per step: the train loss and accuracy over each STEP_LOG_EVERY steps, the lr at the last of them; the
    # points together are the epoch's train loss and accuracy
    steps, epoch = store.steps(run.id), store.epochs(run.id)[0]
    assert list(steps) == ["epoch", "lr", "train_acc", "train_loss", "train_seconds"]
    assert steps["epoch"]["value"][-1] == 1 and 0 < steps["epoch"]["value"][0] < 1    # where in training: epoch 1
    seconds = steps["train_seconds"]["value"]                       # and when, on the bench's clock
    assert 0 < seconds[0] and np.all(np.diff(seconds) > 0) and seconds[-1] == pytest.approx(run.train_seconds)
    at = steps["train_loss"]["step"]
    assert at[0] == recipe.STEP_LOG_EVERY and np.all(np.diff(at) > 0) and np.all(np.diff(at[:-1]) == at[0])
    sizes = np.diff([0] + at)                                      # steps in each point; the last one may be short
    for name in ("train_loss", "train_acc"):
        assert np.average(steps[name]["value"], weights=sizes) == pytest.approx(epoch[name], rel=1e-4)
    assert steps["lr"]["value"][-1] == pytest.approx(epoch["lr"]) and max(steps["lr"]["value"]) > epoch["lr"]

    files = {p.name for p in run.run_dir.iterdir()}
    assert {"model_best.pt", "model_last.pt", "config.json", "data_source.json", "val_indices.npy"} <= files
    assert not [f for f in files if f.endswith(".tmp")]  # atomic writes leave no temp files
    assert json.loads((run.run_dir / "config.json").read_text()) == run.config
    assert {a["name"] for a in store.artifacts(run.id)} >= {"model_best.pt", "config.json", "val_indices.npy"}
    val = np.load(run.run_dir / "val_indices.npy")
    assert val.dtype == np.int64 and len(np.unique(val)) == len(val) > 0 and val.max() < len(mnist.train_labels)

    # predictions: the first 1000 test images, and the kept checkpoint reproduces them
    preds = store.predictions(run.id, "test")
    assert len(preds["idx"]) == 1000
    np.testing.assert_array_equal(preds["true"], mnist.test_labels[:1000])
    np.testing.assert_allclose(preds["probs"].sum(1), 1, atol=1e-4)
    assert run.test_accuracy == pytest.approx(float((preds["pred"] == preds["true"]).mean()))
    assert tiny_run.result["test_accuracy"] == pytest.approx(run.test_accuracy)
    model = load_checkpoint(run.run_dir / "model_best.pt")
    with torch.no_grad():
        x = torch.from_numpy(mnist.test_images[:8]).float().div(255)[:, None]
        probs = torch.softmax(model(x), 1).numpy()
    np.testing.assert_allclose(probs, preds["probs"][:8], atol=1e-4)


SMALL = dict(preset="fast", epochs=2, limit_train=500, limit_test=100, overrides={"val_size": 500}, progress=False)


def only_run(workspace):
    with Store.open(workspace, create=False) as store:
        (run,) = store.list_runs()
        return run, store.epochs(run.id)


def test_a_mixed_ensemble_run_stores_its_members_and_analyses_end_to_end(tmp_path, mnist):
    """What `best --ensemble K` does, in miniature: members of two families (a stack net's output BatchNorm
    follows its classifier), each member's epochs stored with its index, and the analysis runs every stage."""
    from deepdive.analysis import analyze

    members = [{"arch": "cnn-small"}, {"arch": "stack5", "arch_kwargs": {"widths": [8, 8, 8, 8, 8]}}]
    result = train_and_evaluate("mnist", "fast", workspace=tmp_path, epochs=2, limit_train=600, limit_test=200,
                                ensemble=2, overrides={"ensemble_members": members}, progress=False)
    with Store.open(tmp_path, create=False) as store:
        assert [(e["epoch"], e["member"]) for e in store.epochs(result["run_id"])] == [(1, 0), (2, 0), (3, 1), (4, 1)]
        member_steps = store.steps(result["run_id"])["train_loss"]["step"]   # numbered on across members
        assert np.all(np.diff(member_steps) > 0) and len(member_steps) > 4
        summary = analyze(store, result["run_id"], "test", progress=False)
    assert [m["member"] for m in summary["insight"]["members"]] == [0, 1]
    assert all(m["member_epochs"] == 2 for m in summary["insight"]["members"])
    assert summary["embedding"]["available"] and not summary["saliency"]["skipped"]
    assert load_checkpoint(result["run_dir"] + "/model_best.pt").members[1].__class__.__name__ == "StackNet"
    assert summary["dynamics"]["members"] == 2 and summary["dynamics"]["epochs"] == 4   # each member's epochs


def test_ctrl_c_marks_run_interrupted_and_keeps_finished_epochs(tmp_path, monkeypatch, mnist,
                                                                 ctrl_c_after_first_epoch):
    ctrl_c_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate("mnist", workspace=tmp_path, **SMALL)
    run, epochs = only_run(tmp_path)
    assert run.status == "interrupted" and run.finished_at
    assert [e["epoch"] for e in epochs] == [1]
    assert (run.run_dir / "model_best.pt").is_file() and (run.run_dir / "config.json").is_file()


def test_resume_finishes_an_interrupted_run_as_if_it_never_stopped(tmp_path, monkeypatch, mnist,
                                                                   ctrl_c_after_first_epoch):
    """Ctrl-C after epoch 1 of 2, then resume_run: the run ends `finished` with both epochs, test predictions and
    the test accuracy of the same run trained without a stop; its train_state.pt is gone once it is finished."""
    from deepdive.train.run import resume_run

    whole = train_and_evaluate("mnist", workspace=tmp_path / "whole", **SMALL)

    with monkeypatch.context() as patch:
        ctrl_c_after_first_epoch(patch)
        with pytest.raises(KeyboardInterrupt, match="continue it with: deepdive resume"):
            train_and_evaluate("mnist", workspace=tmp_path / "cut", **SMALL)
    run, _ = only_run(tmp_path / "cut")
    assert (run.run_dir / recipe.TRAIN_STATE).is_file()
    result = resume_run(run.id, workspace=tmp_path / "cut", progress=False)
    run, epochs = only_run(tmp_path / "cut")
    assert run.status == "finished" and run.error is None and result["run_id"] == run.id
    assert [e["epoch"] for e in epochs] == [1, 2] and result["epochs"] == 2
    assert result["test_accuracy"] == whole["test_accuracy"] == run.test_accuracy
    assert not (run.run_dir / recipe.TRAIN_STATE).exists()
    # the training dynamics of epoch 1 travel in the training state: the resumed run keeps both epochs', as the
    # uninterrupted one
    from deepdive.analysis.dynamics import load

    cut, kept = load(run.run_dir), load(whole["run_dir"])
    assert cut["epoch"].tolist() == [1, 2] and all(np.array_equal(cut[k], kept[k], equal_nan=k in ("p_true", "margin"))
                                                   for k in kept)
    with Store.open(tmp_path / "whole", create=False) as store:
        whole_steps = store.steps(whole["run_id"])
    with Store.open(tmp_path / "cut", create=False) as store:
        cut_steps = store.steps(run.id)
        clock = cut_steps.pop("train_seconds")["value"]                 # the clock's, not the seed's
        assert cut_steps == {k: v for k, v in whole_steps.items() if k != "train_seconds"}   # per step too
        assert len(whole_steps["train_loss"]["step"]) > 4 and np.all(np.diff(clock) > 0)
        assert len(store.predictions(run.id, "test")["true"]) == SMALL["limit_test"]
        assert store.get_run(run.id).config["resolved"]["epochs"] == 2
    from deepdive.errors import RunError

    with pytest.raises(RunError, match="is finished; there is nothing to resume"):
        resume_run(run.id, workspace=tmp_path / "cut", progress=False)
    with pytest.raises(RunError, match="no run store"):
        resume_run("latest", workspace=tmp_path / "nowhere", progress=False)


def test_resume_refuses_a_run_with_nothing_to_resume(tmp_path, monkeypatch, mnist):
    """Stopped before its first epoch ended, a run has no training state: resuming says to train it anew."""
    from deepdive.errors import RunError
    from deepdive.train.run import resume_run

    fake_training(monkeypatch, lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate("mnist", workspace=tmp_path, **SMALL)
    run, _ = only_run(tmp_path)
    with pytest.raises(RunError, match="left no training state.*train it anew"):
        resume_run(run.id, workspace=tmp_path, progress=False)
    with Store.open(tmp_path, create=False) as store:
        assert store.get_run(run.id).status == "interrupted"     # a refused resume changes nothing
        store.reopen_run(run.id)
        with pytest.raises(RunError, match="is running: only an interrupted or failed run can be resumed"):
            store.reopen_run(run.id)
    with pytest.raises(RunError, match="still running"):
        resume_run(run.id, workspace=tmp_path, progress=False)


def fake_training(monkeypatch, stop):
    """Replace recipe.train by one that logs a single epoch and then calls `stop()` (no real training)."""
    def train(*args, on_epoch, **kw):
        on_epoch({"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "val_loss": 1.9, "val_acc": 0.35, "lr": 0.1,
                  "seconds": 0.1})
        stop()
        raise AssertionError("stop() should have raised")

    monkeypatch.setattr(recipe, "train", train)


def test_sigterm_marks_run_interrupted_and_restores_the_handler(tmp_path, monkeypatch, mnist):
    before = signal.getsignal(signal.SIGTERM)
    fake_training(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate("mnist", workspace=tmp_path, **SMALL)
    run, epochs = only_run(tmp_path)
    assert run.status == "interrupted" and [e["epoch"] for e in epochs] == [1]
    assert signal.getsignal(signal.SIGTERM) is before


def test_exception_marks_run_failed_with_message(tmp_path, monkeypatch, mnist):
    def crash():
        raise RuntimeError("disk on fire")

    fake_training(monkeypatch, crash)
    with pytest.raises(RuntimeError):
        train_and_evaluate("mnist", workspace=tmp_path, **SMALL)
    run, epochs = only_run(tmp_path)
    assert run.status == "failed" and run.error == "RuntimeError: disk on fire"
    assert [e["epoch"] for e in epochs] == [1]


@pytest.mark.parametrize("kw, message", [
    ({"preset": "huge"}, "unknown preset 'huge'"),
    ({"limit_test": 0}, "limit_test must be a positive integer"),
    ({"epochs": -1}, "epochs must be a positive integer"),
])
def test_bad_arguments_fail_before_any_run_is_created(tmp_path, kw, message):
    with pytest.raises(DeepdiveError, match=message):
        train_and_evaluate("mnist", workspace=tmp_path / "ws", **{"progress": False, **kw})
    assert not (tmp_path / "ws").exists()


def test_heartbeat_thread_keeps_a_long_epoch_alive(tmp_path):
    from deepdive.train.run import _heartbeat

    with Store.open(tmp_path) as store:
        run = store.create_run("long", "mnist", {}, {}, [str(i) for i in range(10)], "cpu")
        store._conn.execute("UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000+00:00' WHERE id = ?", (run.id,))
        with _heartbeat(store, run.id, every=0.05):
            time.sleep(0.5)
        got = store.get_run(run.id)
    assert got.status == "running" and got.heartbeat_at > "2000-01-01T00:00:00.000+00:00"
    assert "deepdive-heartbeat" not in {t.name for t in threading.enumerate()}
