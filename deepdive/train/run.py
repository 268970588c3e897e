"""train → evaluate → store: one call that produces a finished run folder and its rows in the workspace store.

A run that stops early keeps every finished epoch: Ctrl-C / SIGTERM mark it `interrupted`, an exception marks it
`failed` with the message, and a hard kill is caught later by the store's heartbeat check. resume_run() continues
such a run after its last finished epoch (the recipe's train_state.pt) and finishes it as if it had never stopped.
"""
import contextlib
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import numpy as np

from deepdive.atomic import atomic_save_npy, atomic_save_npz, atomic_write_text
from deepdive.errors import DeepdiveError, RunError
from deepdive.paths import DEFAULT_WORKSPACE, DYNAMICS, TRAIN_STATE
from deepdive.store import EPOCH_COLUMNS, Store, to_json


def train_and_evaluate(dataset="mnist", preset="default", *, workspace=DEFAULT_WORKSPACE, name=None, epochs=None,
                       seed=0, device="auto", data_dir=None, limit_train=None, limit_test=None, ensemble=1,
                       overrides=None, reviewed_labels=False, progress=True) -> dict:
    """Train a model, evaluate it on the test split and record everything as a run in `workspace`.

    reviewed_labels: True trains with the workspace's reviews of this dataset's training images (made in the
    dashboard on a run's val or train split): relabelled images with their new label, ambiguous ones left out. The
    reviews as they are now are copied into the run's config, so it says what it trained on and resumes the same.
    A dict ({"relabel": {idx: label}, "leave_out": [idx]}, another run's config entry) is used as it is.

    Returns {"run_id", "run_dir", "test_accuracy", "train_seconds", "epochs"}.
    """
    from deepdive.data import load_dataset
    from deepdive.train import recipe

    if preset not in recipe.PRESETS:
        raise DeepdiveError(f"unknown preset {preset!r}; choose one of: {', '.join(recipe.PRESETS)}")
    for flag, value in (("epochs", epochs), ("limit_train", limit_train), ("limit_test", limit_test),
                        ("ensemble", ensemble)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise DeepdiveError(f"{flag} must be a positive integer, got {value!r}")

    ds = load_dataset(dataset, data_dir=data_dir, progress=progress)
    request = {"dataset": dataset, "preset": preset, "epochs": epochs, "seed": seed, "device": device,
               "limit_train": limit_train, "limit_test": limit_test, "ensemble": ensemble,
               "overrides": overrides or {}}
    with Store.open(workspace) as store:
        if reviewed_labels is True:
            request["reviewed_labels"] = _reviewed_training_labels(store, dataset, ds, progress)
        elif reviewed_labels:
            request["reviewed_labels"] = reviewed_labels
        run = store.create_run(name or f"{dataset}-{preset}", dataset, request, ds.source, ds.class_names,
                               device=str(recipe.resolve_device(device)))
        # Written first so an interrupted run still says what it was asked to do and where its data came from.
        atomic_write_text(run.run_dir / "config.json", to_json(request))
        atomic_write_text(run.run_dir / "data_source.json", to_json(ds.source))
        return _train_in_run(store, run, ds, request, device=device, resume=None, progress=progress)


def _reviewed_training_labels(store, dataset, ds, progress) -> dict:
    """The workspace's reviews of `dataset`'s training images as train() takes them, checked against the data."""
    reviews = store.label_reviews(dataset, "train")
    if not reviews:
        raise DeepdiveError(f"no reviewed labels of {dataset}'s training images in {store.workspace}: review the "
                            "label issues of a run's val split (deepdive analyze RUN --split val) or train split "
                            "(deepdive analyze RUN --label-issues train) in deepdive serve first")
    for r in reviews:
        if not 0 <= r["idx"] < len(ds.train_labels) or int(ds.train_labels[r["idx"]]) != r["given_label"]:
            raise DeepdiveError(f"the review of training image {r['idx']} was made on other data (label "
                                f"{r['given_label']} there); this {dataset} does not have that image")
    out = {"relabel": {str(r["idx"]): r["label"] for r in reviews if r["verdict"] == "relabel"},
           "leave_out": [r["idx"] for r in reviews if r["verdict"] == "ambiguous"]}
    if progress:
        print(f"reviewed labels: {len(out['relabel'])} training images relabelled, {len(out['leave_out'])} left out "
              f"(ambiguous), {len(reviews) - len(out['relabel']) - len(out['leave_out'])} confirmed as labelled",
              file=sys.stderr)
    return out


def resume_run(run_ref, *, workspace=DEFAULT_WORKSPACE, data_dir=None, progress=True) -> dict:
    """Continue an interrupted or failed `deepdive train` run after its last finished epoch (its folder's
    train_state.pt) and finish it: evaluated, stored, `finished`. On the CPU the result is the one the run would
    have had without the interruption, bit for bit. Returns what train_and_evaluate returns, "epochs" counting
    every epoch of the run and "train_seconds" the training time of both sessions.

    Raises RunError for a run that is finished, still running, logged through the Python API, or that stopped
    before its first epoch ended (nothing to resume: train it anew); DeepdiveError when its settings resolve
    differently now (a changed preset) or its device is not there.
    """
    from deepdive.data import load_dataset
    from deepdive.store import DB_NAME
    from deepdive.train import recipe

    if not (Path(workspace) / DB_NAME).is_file():
        raise RunError(f"no run store in {workspace}: nothing to resume there")
    with Store.open(workspace, create=False) as store:
        store.mark_stale()           # a run whose process was killed is `running` until its heartbeat goes stale
        run = store.get_run(run_ref)
        request = {k: v for k, v in run.config.items() if k not in ("resolved", "warmup_seconds")}
        if run.status == "finished":
            raise RunError(f"run {run.id} ({run.name}) is finished; there is nothing to resume")
        if run.status == "running":
            raise RunError(f"run {run.id} ({run.name}) is still running (last heartbeat {run.heartbeat_at}); stop it "
                           "first, or wait: a run whose process died counts as interrupted 10 minutes after its "
                           "last heartbeat")
        if not request.get("preset"):
            raise RunError(f"run {run.id} was logged through the Python API, not trained by deepdive train: "
                           "deepdive cannot resume it")
        state_path = run.run_dir / TRAIN_STATE
        if not state_path.is_file():
            raise RunError(f"run {run.id} ({run.status}) left no training state ({state_path}): it stopped before "
                           "its first epoch ended, or an older deepdive trained it; train it anew")
        state = recipe.load_train_state(state_path)
        # "auto" resolved to a device when the run started; the resumed run must train there again.
        device = run.device if request.get("device", "auto") == "auto" and run.device else request.get("device")
        recipe.resolve_device(device)       # a clear error when that device is not here, before the data loads
        ds = load_dataset(run.dataset, data_dir=data_dir, progress=progress)
        store.reopen_run(run.id)
        return _train_in_run(store, run, ds, request, device=device, resume=state, progress=progress)


def _train_in_run(store, run, ds, request, *, device, resume, progress) -> dict:
    """Train (or, with `resume`, continue) the run's model, evaluate it on the test split and finish the run."""
    from deepdive.models import count_parameters, save_checkpoint
    from deepdive.train import recipe

    run_dir = run.run_dir
    # Exits run inner-first: the heartbeat stops before the outcome is recorded, so it cannot revive the run.
    with _record_outcome(store, run.id), _heartbeat(store, run.id):
        def log_epoch(row):
            store.log_epoch(run.id, row["epoch"], row.get("train_loss"), row.get("train_acc"),
                            row.get("val_loss"), row.get("val_acc"), row.get("lr"), row.get("seconds"),
                            member=row.get("member"),
                            # the rest by name: system/..., train_images
                            metrics={k: v for k, v in row.items()
                                     if k not in (*EPOCH_COLUMNS, "step_log", "histograms")},
                            steps=step_points(row.get("step_log")), histograms=row.get("histograms") or ())

        if resume is not None:
            # The state is written before an epoch is logged: an interruption in between lost at most that row.
            for row in resume["finished"]["history"] + resume["current"]["history"]:
                log_epoch(row)
        result = recipe.train(ds, request["preset"], epochs=request.get("epochs"), seed=request.get("seed", 0),
                              device=device, limit_train=request.get("limit_train"),
                              ensemble=request.get("ensemble", 1), overrides=request.get("overrides") or None,
                              on_epoch=log_epoch, checkpoint_dir=run_dir, progress=progress, resume=resume,
                              reviewed_labels=request.get("reviewed_labels"))

        config = {**request, "resolved": result.config, "warmup_seconds": result.warmup_seconds}
        atomic_write_text(run_dir / "config.json", to_json(config))
        store.set_config(run.id, config)
        atomic_save_npy(run_dir / "val_indices.npy", np.asarray(result.val_indices, dtype=np.int64))
        if result.dynamics is not None:
            atomic_save_npz(run_dir / DYNAMICS, **result.dynamics)
        if not (run_dir / "model_best.pt").is_file():  # the recipe writes it per epoch; make sure it is there
            save_checkpoint(run_dir / "model_best.pt", result.checkpoint)

        limit_test = request.get("limit_test")
        n_test = len(ds.test_labels) if limit_test is None else min(limit_test, len(ds.test_labels))
        images, labels = ds.test_images[:n_test], ds.test_labels[:n_test]
        probs, losses = recipe.evaluate(result.model, images, labels, device=result.device)
        store.save_predictions(run.id, "test", labels, probs, losses)
        test_accuracy = float((probs.argmax(1) == labels).mean())

        for fname, kind in (("model_best.pt", "checkpoint"), ("model_last.pt", "checkpoint"),
                            ("config.json", "config"), ("data_source.json", "data_source"),
                            ("val_indices.npy", "indices"), (DYNAMICS, "dynamics")):
            if (run_dir / fname).is_file():
                store.add_artifact(run.id, fname, fname, kind)
        store.finish_run(run.id, test_accuracy, result.train_seconds, count_parameters(result.model),
                         result.checkpoint.get("arch"))
    # Only an unfinished run needs it; for an ensemble it holds every member twice (kept and last).
    (run_dir / TRAIN_STATE).unlink(missing_ok=True)
    return {"run_id": run.id, "run_dir": str(run_dir), "test_accuracy": test_accuracy,
            "train_seconds": float(result.train_seconds), "epochs": len(result.history)}


def step_points(log) -> list:
    """The recipe's per-step columns (recipe._step_log) as Store.log_steps' (step, {name: value}) points."""
    if not log:
        return []
    names = [k for k in log if k != "step"]
    return [(step, {k: log[k][j] for k in names}) for j, step in enumerate(log["step"])]


@contextlib.contextmanager
def _record_outcome(store, run_id):
    """Mark the run interrupted on Ctrl-C/SIGTERM and failed on any other exception, then re-raise."""
    with _sigterm_as_keyboard_interrupt():
        try:
            yield
        except KeyboardInterrupt as e:
            store.mark_interrupted(run_id)
            if store.get_run(run_id).resumable:
                hint = f"continue it with: deepdive resume {run_id} --workspace {store.workspace}"
                raise KeyboardInterrupt(f"run {run_id} stopped ({str(e) or 'Ctrl-C'}); {hint}") from e
            raise
        except BaseException as e:
            store.mark_failed(run_id, f"{type(e).__name__}: {e}")
            raise


@contextlib.contextmanager
def _heartbeat(store, run_id, every=60.0):
    """Refresh the run's heartbeat from a thread, so an epoch longer than the stale limit does not look like a
    killed process (the Store serialises threads itself)."""
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            with contextlib.suppress(sqlite3.OperationalError):  # busy beyond the timeout: next time
                store.heartbeat(run_id)

    thread = threading.Thread(target=beat, name="deepdive-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt():
    # `kill` / a container stop sends SIGTERM; handling it like Ctrl-C lets the run be marked before exiting.
    # Signal handlers can only be installed from the main thread; elsewhere the heartbeat check covers it.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

