"""Bring your own model: record and analyse any PyTorch image classifier in one line.

    run = deepdive.log_evaluation(model, (images, labels), class_names=[...])     # images float (N, C, H, W)

or, with training curves and training dynamics:

    run = deepdive.init(name="my-net", config={"lr": 0.01})
    loader = DataLoader(deepdive.indexed(train_set), batch_size=128, shuffle=True)
    for epoch in ...:
        for x, y, idx in loader:
            logits = model(x)
            run.log_train_batch(idx, logits, y)       # optional: each training image's answer, every epoch
            ...
            run.log_step(loss=loss)                   # optional: curves per step (tensors read in bulk, later)
        run.log(epoch=epoch, train_loss=..., val_acc=...)
    run.log_evaluation(model, test_loader, class_names, train_data=train_set)
    run.finish()

The run lands in the workspace like a trained one (dataset "custom", model arch "pickled"): the whole module
pickled into model_best.pt (weights only, with a note, when it cannot be pickled), the evaluation inputs and
labels in eval/ (deepdive.analysis.stored_inputs: the exact float32 inputs, as uint8 codes into a table of their
values where each channel has at most 256, as images from uint8 do; with train_data=, the training images
likewise, for the nearest training images), the training dynamics logged in dynamics.npz
(deepdive.analysis.dynamics.Recorder), the predictions in the store, then the full analysis.
"""
import time

import numpy as np

from deepdive.atomic import atomic_save_npz
from deepdive.errors import DeepdiveError
from deepdive.paths import DEFAULT_WORKSPACE, DYNAMICS
from deepdive.store import EPOCH_FIELDS, valid_metrics, valid_step
from deepdive.sysmetrics import SystemMeter

__all__ = ["Run", "init", "log_evaluation", "indexed", "collect"]

SPLITS = ("test", "val")
STEP_FLUSH_SECONDS = 5.0    # run.log_step's points reach the store at least this often (the dashboard polls every 5 s)
STEP_FLUSH_POINTS = 10_000  # ... or once this many wait


class Run:
    """A run being recorded. Also a context manager: an exception inside `with` marks the run failed."""

    def __init__(self, store, record, owns_store=True):
        self._store, self._owns_store = store, owns_store
        self.id, self.name, self.run_dir = record.id, record.name, record.run_dir
        self.workspace = store.workspace
        self.summary = None            # the analysis summary, after log_evaluation
        self._last_epoch = 0
        self._last_time = time.perf_counter()
        self._meter = SystemMeter()    # system/... readings since the previous log (or init)
        self._finished = False
        self._dynamics = None          # deepdive.analysis.dynamics.Recorder, from the first log_train_batch
        self._steps = []               # log_step's points not yet written: (step, {name: number or 0-d tensor})
        self._last_step = -1
        self._steps_written = time.perf_counter()
        self._watched = None           # the model whose parameter histograms each log() records (watch)

    def watch(self, model):
        """Record `model`'s parameter histograms with every epoch from now on (W&B's watch, TensorBoard's
        histograms): each parameter's values and the gradient its last backward pass left, in 30 bins, read at
        each run.log() (two transfers on a GPU). The run's Overview draws them per layer over the epochs.
        Returns the model."""
        import torch

        self._check_open()
        if not isinstance(model, torch.nn.Module):
            raise DeepdiveError(f"watch takes a torch.nn.Module, got {type(model).__name__}")
        self._watched = model
        return model

    def __str__(self):
        return self.id

    def __repr__(self):
        return f"<deepdive run {self.id} ({self.name}) in {self.workspace}>"

    def log(self, epoch: int | None = None, metrics: dict | None = None, **named):
        """Record one epoch. train_loss, train_acc, val_loss, val_acc (fractions in [0, 1]), lr and seconds draw the
        training curves; any other number is kept by its name (`grad_norm=...`, or `metrics={"val/f1": ...}` for
        names that are no Python identifier: a "group/" prefix groups the dashboard's charts). The process's CPU
        use and peak memory since the previous log are added as system/... (deepdive.sysmetrics; a name you log
        yourself wins).

        epoch defaults to the previous one + 1; seconds to the wall time since the previous log (or init)."""
        self._check_open()
        given = {**(metrics or {}), **named}
        epoch = self._last_epoch + 1 if epoch is None else int(epoch)
        now = time.perf_counter()
        if given.get("seconds") is None:
            given["seconds"] = now - self._last_time
        # every number through one check, the curve columns' and the others' alike: a bad name or value is refused
        # before the epoch's answers are closed
        own = valid_metrics({**self._meter.read(), **given})
        values = {key: own.pop(key, None) for key in EPOCH_FIELDS}
        if self._dynamics is not None:     # first: answers that cannot be kept leave the epoch unlogged, said why
            self._dynamics.end_epoch(epoch)
        histograms = ()
        if self._watched is not None:
            from deepdive.train.histograms import parameter_histograms

            histograms = parameter_histograms(self._watched)
        self._store.log_epoch(self.id, epoch, **values, metrics=own, steps=self._take_steps(), histograms=histograms)
        self._last_epoch, self._last_time = epoch, now
        self._meter.start()

    def log_step(self, step: int | None = None, metrics: dict | None = None, **named):
        """Record scalars at one training step (TensorBoard's add_scalar at a global step, W&B's log(step=)): the
        run's Overview draws each name per step, with a smoothing slider. step: an integer >= 0, by default the
        previous one + 1 (0 first). Names as run.log takes them, and "epoch" (a fractional epoch: the Overview
        can draw the step's curves against it, beside the epochs' own). A 0-d tensor is kept as it is and read with the
        others when they are written (every few seconds, at run.log() and at the end): no synchronisation per
        step on a GPU."""
        self._check_open()
        given = {**(metrics or {}), **named}
        tensors = {k: v for k, v in given.items() if _is_scalar_tensor(v)}
        # the tensors' names are checked now (with a stand-in value), their values when they are read
        checked = valid_metrics({k: 0.0 if k in tensors else v for k, v in given.items()}, per_step=True)
        values = {k: tensors[k].detach() if k in tensors else v for k, v in checked.items()}
        step = valid_step(self._last_step + 1 if step is None else step)
        self._steps.append((step, values))
        self._last_step = step
        if (len(self._steps) >= STEP_FLUSH_POINTS
                or time.perf_counter() - self._steps_written >= STEP_FLUSH_SECONDS):
            self._write_steps()

    def _take_steps(self) -> list:
        """The points log_step kept, their tensors read (one transfer per device), and the buffer emptied."""
        points, self._steps, self._steps_written = self._steps, [], time.perf_counter()
        tensors = [(j, k, v) for j, (_, vals) in enumerate(points) for k, v in vals.items() if _is_scalar_tensor(v)]
        if tensors:
            import torch

            by_device = {}
            for item in tensors:
                by_device.setdefault(item[2].device, []).append(item)
            for items in by_device.values():
                read = torch.stack([v.reshape(()).float() for _, _, v in items]).tolist()
                for (j, k, _), value in zip(items, read):
                    points[j][1][k] = value
        return points

    def log_train_batch(self, indices, logits, labels):
        """Record what the model answered for one training batch, for the training dynamics (data maps, area under
        the margin, forgetting: deepdive.analysis.dynamics): indices (B,) the images' positions in the training
        set (deepdive.indexed(dataset) yields them), logits (B, C) as the model returned them, labels (B,) the
        labels trained on. Call it in the training loop, before or after the backward pass; run.log() closes the
        epoch's answers. The answers stay on the logits' device until then (no synchronisation per batch); on the
        examples/mnist loop it cost no measurable time (benchmarks/own_loop.py)."""
        self._check_open()
        from deepdive.analysis.dynamics import Recorder

        if self._dynamics is None:
            self._dynamics = Recorder()
        self._dynamics.add(indices, logits, labels)

    def log_evaluation(self, model, data, class_names=None, split="test", progress=True, batch_size=256,
                       train_data=None) -> dict:
        """Save the model, store the evaluation data and predictions, finish the run and analyse it.
        train_data: optional (images, labels) the model trained on, in any form `data` takes: kept in the run folder
        so the analysis finds each evaluated image's nearest training images. Returns the analysis summary (also
        in .summary)."""
        self._check_open()
        self._write_steps()
        inputs, labels, names = prepare(model, data, class_names, split, batch_size,
                                        self._store.get_run(self.id).class_names)
        train = prepare_train(train_data, inputs, len(names), batch_size)
        dynamics = None
        if self._dynamics is not None:
            self._dynamics.end_epoch(self._last_epoch + 1)    # answers logged after the last run.log()
            dynamics = self._dynamics.arrays()
            _check_dynamics(dynamics, train, len(names))
        return self._log_prepared(model, inputs, labels, names, split, progress, batch_size, train, dynamics)

    def _log_prepared(self, model, inputs, labels, names, split, progress, batch_size, train=None,
                      dynamics=None) -> dict:
        """log_evaluation after prepare(): the data collected and checked against the model once; dynamics: the
        logged training answers as dynamics.npz's arrays (checked against train), if any."""
        self._check_open()
        from deepdive.analysis import analyze, predict

        num_classes = len(names)
        try:
            probs, losses = predict(model, inputs, labels, num_classes, batch_size=batch_size)
            note = _save_model(model, self.run_dir / "model_best.pt", names, inputs.shape[1:])
            _save_eval(self.run_dir, split, inputs, labels)
            if train is not None:
                _save_eval(self.run_dir, "train", *train)
            if dynamics is not None:
                atomic_save_npz(self.run_dir / DYNAMICS, **dynamics)
            record = self._store.get_run(self.id)
            if record.class_names != names:
                # The runs row fixes class names at creation; init() may not have known them (the analysis reads
                # config["class_names"] first).
                self._store.set_config(self.id, {**record.config, "class_names": names})
            if note:
                self._store.set_config(self.id, {**self._store.get_run(self.id).config, "model_note": note})
            self._store.save_predictions(self.id, split, labels, probs, losses)
            saved = [split] + (["train"] if train is not None else [])
            evals = [f"eval/{which}_{part}.npy" for which in saved for part in ("inputs", "labels")]
            for rel, kind in [("model_best.pt", "checkpoint"), *((rel, "eval") for rel in evals),
                              *([(DYNAMICS, "dynamics")] if dynamics is not None else [])]:
                self._store.add_artifact(self.id, rel, rel, kind)
            seconds = sum(e["seconds"] or 0.0 for e in self._store.epochs(self.id))
            accuracy = float((probs.argmax(1) == labels).mean())
            self._store.finish_run(self.id, accuracy, seconds, sum(p.numel() for p in model.parameters()),
                                   "pickled")
        except BaseException as e:
            self._store.mark_failed(self.id, f"log_evaluation: {type(e).__name__}: {e}")
            raise
        self._finished = True
        self.summary = analyze(self._store, self.id, split, progress=progress, model=model)
        return self.summary

    def finish(self):
        """Close the run. A run that never logged an evaluation has no model: it is marked interrupted."""
        self._write_steps()
        if not self._finished:
            self._store.mark_interrupted(self.id, "finished without log_evaluation: no model was evaluated")
            self._finished = True
        if self._owns_store:
            self._store.close()
            self._owns_store = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self._write_steps()
        if exc is not None and not self._finished:
            self._store.mark_failed(self.id, f"{exc_type.__name__}: {exc}")
            self._finished = True
        self.finish()

    def _write_steps(self):
        """Write what log_step kept (before the run is closed: log_step is refused after)."""
        if self._steps:
            self._store.log_steps(self.id, self._take_steps())

    def _check_open(self):
        if self._finished:
            raise DeepdiveError(f"run {self.id} is already finished; start a new one with deepdive.init()")


def init(name=None, workspace=DEFAULT_WORKSPACE, config=None, class_names=None, resume=None) -> Run:
    """Start recording a run of your own model (dataset "custom").

    resume: a run of yours (id, id prefix, name or "latest") that stopped interrupted or failed — the loop crashed,
    was killed, or left without log_evaluation — to go on logging into it, as W&B's init(resume=...): it is
    running again, and run.log / run.log_step number on after the epochs and steps it logged. The training answers
    of log_train_batch lived in the stopped process: the training dynamics cover the epochs logged after the
    resume. The run keeps its name, configuration and class names (give none of them)."""
    from deepdive.store import Store

    if resume is not None and (name is not None or config is not None or class_names is not None):
        raise DeepdiveError("init(resume=...) goes on with a run as it was: give no name, config or class_names")
    store = Store.open(workspace)
    try:
        if resume is None:
            record = store.create_run(name or "custom", "custom", dict(config or {}),
                                      {"kind": "custom", "location": "in-memory data passed to log_evaluation"},
                                      list(class_names or []), device="user")
            return Run(store, record)
        record = store.get_run(resume)
        if record.dataset != "custom":
            raise DeepdiveError(f"run {record.id} was trained by deepdive train: continue it with "
                                f"deepdive resume {record.id}")
        store.reopen_run(record.id)
        run = Run(store, store.get_run(record.id))
        run._last_epoch = max((e["epoch"] for e in store.epochs(record.id)), default=0)
        run._last_step = max((s["step"][-1] for s in store.steps(record.id).values()), default=-1)
        return run
    except BaseException:
        store.close()
        raise


def log_evaluation(model, data, class_names=None, workspace=DEFAULT_WORKSPACE, name=None, split="test",
                   history=None, run=None, progress=True, batch_size=256, train_data=None) -> Run:
    """Record `model` evaluated on `data` as a run and analyse it; returns the Run (str(run) is its id).

    data: an (images, labels) pair (tensors or arrays; images float (N, C, H, W) as the model takes them, labels
    int (N,)), or a DataLoader / Dataset / iterable yielding such pairs (or dicts of them: pixel_values / labels,
    image / label, ...). history: optional per-epoch dicts
    (epoch, train_loss, val_acc, ...) logged before the evaluation. run: an open Run from init() to use.
    train_data: optional, the same kind of data the model trained on: stored in the run folder
    (eval/train_*: the exact float32 inputs, kept as uint8 codes into a table of their values when each channel has
    at most 256 of them, as images from uint8 do: 60,000 MNIST images take 47 MB, else 188 MB) so the analysis
    shows each image's nearest training images, as it does for deepdive's own runs.
    """
    own = run is None
    if own:  # bad input is reported before a run is created for it (and checked only this once)
        inputs, labels, class_names = prepare(model, data, class_names, split, batch_size)
        train = prepare_train(train_data, inputs, len(class_names), batch_size)
    run = run or init(name=name, workspace=workspace, class_names=class_names)
    try:
        for row in history or []:
            row = dict(row)
            run.log(row.pop("epoch", None), **row)
        if own:
            run._log_prepared(model, inputs, labels, class_names, split, progress, batch_size, train)
        else:
            run.log_evaluation(model, data, class_names=class_names, split=split, progress=progress,
                               batch_size=batch_size, train_data=train_data)
    except BaseException as e:
        if own:
            run.__exit__(type(e), e, None)
        raise
    if own:
        run.finish()
    return run


class indexed:  # noqa: N801 - used like a function: deepdive.indexed(dataset)
    """A map-style dataset whose items carry their index: item i of `dataset`, (x, y), becomes (x, y, i), so a
    shuffled DataLoader's batches say which training images they hold (run.log_train_batch)."""

    def __init__(self, dataset):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise DeepdiveError(f"deepdive.indexed needs a dataset with __getitem__ and __len__, got "
                                f"{type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return (*item, i) if isinstance(item, (tuple, list)) else (item, i)


def _is_scalar_tensor(value) -> bool:
    """A torch tensor of one number (log_step keeps it unread until its points are written)."""
    return hasattr(value, "detach") and hasattr(value, "numel") and value.numel() == 1


def _check_dynamics(dynamics, train, num_classes):
    """The logged training answers must be of the training data log_evaluation stores (when it gets some): same
    labels at the same positions, and of the model's classes."""
    if dynamics is None:
        return
    if dynamics["label"].max() >= num_classes:
        raise DeepdiveError(f"log_train_batch got labels up to {int(dynamics['label'].max())} but the model outputs "
                            f"{num_classes} classes")
    if train is None:
        return
    idx, labels = dynamics["idx"], train[1]
    if idx.max() >= len(labels):
        raise DeepdiveError(f"log_train_batch logged training image {int(idx.max())} but train_data holds "
                            f"{len(labels)} images: the indices must be positions in train_data")
    wrong = np.flatnonzero(labels[idx] != dynamics["label"])
    if wrong.size:
        i = wrong[0]
        raise DeepdiveError(f"log_train_batch logged training image {int(idx[i])} with label "
                            f"{int(dynamics['label'][i])} but train_data labels it {int(labels[idx[i]])} "
                            f"({wrong.size} such images): the indices must be positions in train_data")


# ---- input handling ------------------------------------------------------------------------------------------
def prepare(model, data, class_names, split, batch_size=256, stored_names=()):
    """Validated (inputs, labels, class names): the data collected, the model's output width checked against
    the class names and labels."""
    if split not in SPLITS:
        raise DeepdiveError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        raise DeepdiveError("the model is a TorchScript module: the deep dive reads its layers through forward hooks, "
                            "which TorchScript does not run; pass the nn.Module it was scripted from")
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, np.ndarray) for d in data):
        inputs, labels = _check_images(data[0]), _check_labels(data[1], len(data[0]))
    else:
        inputs, labels = collect(data, batch_size)
    num_classes = _output_width(model, inputs)
    names = _class_names(class_names, num_classes, stored_names)
    if labels.max() >= num_classes:
        raise DeepdiveError(f"labels go up to {int(labels.max())} but the model outputs {num_classes} classes")
    return inputs, labels, names


def prepare_train(train_data, inputs, num_classes, batch_size=256):
    """(inputs, labels) of the optional training data, checked against the evaluation inputs' shape and the
    model's classes; None without any."""
    if train_data is None:
        return None
    train_inputs, train_labels = collect(train_data, batch_size)
    if train_inputs.shape[1:] != inputs.shape[1:]:
        raise DeepdiveError(f"train_data images have shape {tuple(train_inputs.shape[1:])} but the evaluated images "
                            f"{tuple(inputs.shape[1:])}; the model must take both")
    if train_labels.max() >= num_classes:
        raise DeepdiveError(f"train_data labels go up to {int(train_labels.max())} but the model outputs "
                            f"{num_classes} classes")
    return train_inputs, train_labels


def collect(data, batch_size=256) -> tuple[np.ndarray, np.ndarray]:
    """(inputs float32 (N, C, H, W), labels int64 (N,)) from a pair, a DataLoader, a Dataset or an iterable."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_pair_of_items(data):
        images, labels = data
    else:
        if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
            data = DataLoader(data, batch_size=batch_size, shuffle=False)
        xs, ys = [], []
        try:
            for item in data:
                x, y = _pair(item)
                xs.append(_array(x, "images"))
                ys.append(_array(y, "labels").reshape(-1))
        except TypeError as e:
            raise DeepdiveError(f"data must be an (images, labels) pair or a DataLoader/Dataset yielding them; "
                                f"got {type(data).__name__} ({e})") from None
        if not xs:
            raise DeepdiveError("data yielded no examples")
        images, labels = np.concatenate(xs), np.concatenate(ys)
    images, labels = _array(images, "images"), _array(labels, "labels")
    return _check_images(images), _check_labels(labels, len(images))


IMAGE_KEYS = ("pixel_values", "image", "images", "img", "input", "inputs", "x")   # Hugging Face's name first
LABEL_KEYS = ("labels", "label", "target", "targets", "y")


def _pair(item):
    """(images, labels) of one item or batch: a tuple's or list's first two, or a mapping's image and label entries
    by their usual names (Hugging Face's pixel_values and labels, image and label, ...)."""
    from collections.abc import Mapping

    if isinstance(item, Mapping):
        image_key = next((k for k in IMAGE_KEYS if k in item), None)
        label_key = next((k for k in LABEL_KEYS if k in item), None)
        if image_key is None or label_key is None:
            raise DeepdiveError(f"data yields mappings with keys {sorted(map(str, item))}: expected one of "
                                f"{', '.join(IMAGE_KEYS)} for the images and one of {', '.join(LABEL_KEYS)} for the "
                                "labels")
        return item[image_key], item[label_key]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DeepdiveError(f"data must yield (images, labels) pairs or mappings of them; got {type(item).__name__}")
    return item[0], item[1]


def _is_pair_of_items(data) -> bool:
    # A list of exactly two (image, label) samples looks like a pair; tell them apart by the first element.
    return isinstance(data[0], (tuple, list))


def _array(x, what) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (int, np.integer)) and what == "labels":
        return np.asarray([x])
    try:
        return np.asarray(x)
    except Exception as e:
        raise DeepdiveError(f"{what} must be a tensor or array, got {type(x).__name__}") from e


def _check_images(images: np.ndarray) -> np.ndarray:
    if not np.issubdtype(images.dtype, np.floating):
        hint = " (convert with x.float() / 255 if your model takes [0, 1] inputs)" if images.dtype == np.uint8 else ""
        raise DeepdiveError(f"images must be floating point, the values your model takes; got dtype "
                            f"{images.dtype}{hint}")
    if images.ndim != 4:
        hint = " (add the channel axis: x.unsqueeze(1))" if images.ndim == 3 else ""
        raise DeepdiveError(f"images must have shape (N, C, H, W); got {images.shape}{hint}")
    if len(images) == 0:
        raise DeepdiveError("there are no images to evaluate (N = 0)")
    if not np.isfinite(images).all():
        raise DeepdiveError("images contain NaN or infinite values")
    return np.ascontiguousarray(images, dtype=np.float32)


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != n:
        raise DeepdiveError(f"labels must have shape ({n},), one class index per image; got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DeepdiveError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise DeepdiveError(f"labels must be >= 0, got {int(labels.min())}")
    return labels.astype(np.int64)


def _output_width(model, inputs) -> int:
    """The number of classes the model outputs, from one forward pass on the first image."""
    import torch

    from deepdive.analysis import _device_of

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(inputs[:1]).to(_device_of(model)))
    except Exception as e:
        raise DeepdiveError(f"the model failed on images of shape {tuple(inputs.shape[1:])}: "
                            f"{type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DeepdiveError(f"the model must return logits of shape (batch, num_classes); got {shape}")
    return int(out.shape[1])


def _class_names(given, num_classes, stored) -> list[str]:
    names = list(given) if given is not None else (list(stored) or [str(c) for c in range(num_classes)])
    if len(names) != num_classes:
        raise DeepdiveError(f"the model outputs {num_classes} classes but {len(names)} class names were given "
                            f"({', '.join(map(str, names))})")
    return [str(n) for n in names]


# ---- what goes into the run folder ---------------------------------------------------------------------------
def _save_model(model, path, class_names, input_shape) -> str | None:
    """Pickle the whole module (DESIGN.md checkpoint {"arch": "pickled", "module": ...}). A module that cannot be
    pickled (a lambda, a local class, an open file) is saved as its state_dict with a note; returns the note."""
    from deepdive.atomic import atomic_torch_save

    info = {"arch": "pickled", "num_classes": len(class_names), "class_names": list(class_names),
            "input_shape": [int(s) for s in input_shape], "in_channels": int(input_shape[0]),
            "image_size": int(input_shape[-1])}
    try:
        atomic_torch_save(path, {**info, "module": model})
        return None
    except Exception as e:
        note = (f"the model could not be pickled ({type(e).__name__}: {e}); only its weights were saved, so "
                "re-analysing this run later uses the stored predictions and skips the model stages")
        atomic_torch_save(path, {**info, "module": None, "state_dict": {k: v.detach().cpu() for k, v in
                                                                       model.state_dict().items()},
                                 "note": note})
        return note


def _save_eval(run_dir, split, inputs, labels):
    from deepdive.analysis import stored_inputs
    from deepdive.atomic import atomic_save_npy

    stored_inputs.save(run_dir / "eval", split, inputs)
    atomic_save_npy(run_dir / "eval" / f"{split}_labels.npy", labels)

