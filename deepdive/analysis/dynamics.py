"""Training dynamics: how the model's answer for each training image moved while it trained. The recipe keeps, for
every training image and epoch, the probability the model gave the image's label, the margin (that label's logit
less the largest other one) and the class it predicted, at the image's own training step (deepdive.train.recipe,
`dynamics.npz` in the run folder; 0.3 MB per epoch on MNIST, no extra forward pass). Three readings of them:

- Data maps (Swayamdipta et al. 2020): an image's confidence (its label's mean probability over the epochs) and
  variability (that probability's standard deviation). Easy images sit high and still; ambiguous ones swing;
  hard-to-learn ones stay low, which is where mislabelled images end up.
- Area under the margin (Pleiss et al. 2020): the margin averaged over training. A negative AUM says the model
  ranked another class above the label for most of training: the training image most likely to be labelled wrong,
  found from the one run, without the K retrainings of cross-validated confident learning.
- Forgetting events (Toneva et al. 2019): how often an image went from right to wrong from one epoch to the next,
  and the epoch from which it stayed right (learned for good).

The answers are read on the augmented batch the image was trained in (its first copy where a batch holds it twice),
before that step's update: what the model thought of it then, not a clean evaluation. Epochs that pruned
an image away (the CPU's `fast`) leave it out of that epoch; an ensemble's members each count their own epochs.

    Recorder: the same record from a training loop of your own (deepdive.init's run.log_train_batch)
    load(run_dir) -> dict | None                               # dynamics.npz as arrays
    image_table(d) -> DataFrame, one row per training image    # the per-image readings above
    dynamics_stage(run_dir, class_names, train_issues) -> summary entry (+ "table": analyze writes dynamics.parquet)
"""
from pathlib import Path

import numpy as np
import pandas as pd

from deepdive.errors import DeepdiveError, RunError
from deepdive.paths import DYNAMICS

HARD_CONFIDENCE = 0.5      # below: hard to learn (the label got less than half the probability, on average)
AMBIGUOUS_VARIABILITY = 0.2  # at or above (and not hard): ambiguous, its label's probability swung that much
FLAGGED = 200              # training images listed with a label in doubt (lowest AUM first), at most
LOWEST = 10                # of them named in the summary (and by `deepdive analyze`), with their labels
REGIONS = ("easy", "ambiguous", "hard")
FILE = "dynamics.parquet"


class Recorder:
    """Training dynamics of a training loop that is not deepdive's: `add` each training batch's indices, logits and
    labels as the loop computes them, `end_epoch` after each epoch, `arrays` for dynamics.npz (the recipe's
    layout: one member, `given` = `label`). An image's first answer in an epoch is kept, as the recipe keeps a
    doubled image's first copy. Indices are positions in the training set, so they must not change between epochs,
    and one image's label neither: a change is reported, as it is the mark of indices that are not the images'.

    The answers stay on the logits' device until the epoch ends (one copy to the host per epoch, no per-batch
    synchronisation on a GPU); labels on a GPU are therefore checked at the epoch's end, those on the CPU at once."""

    def __init__(self):
        self._epochs = []        # (epoch, p_true, margin, pred) of each closed epoch, over indices 0..n-1
        self._batches = []       # the open epoch's (indices (B,) int64, signals (3, B) and labels (B,) on the
                                 # logits' device, classes)
        self._labels = np.full(0, -1, np.int64)    # each index's label, -1 until seen

    @property
    def pending(self) -> bool:
        """Whether answers were added since the last closed epoch."""
        return bool(self._batches)

    def add(self, indices, logits, labels):
        """Record one training batch: indices (B,) ints (on the CPU, as a DataLoader yields them), logits (B, C) as
        the model returned them (before any loss), labels (B,) ints in [0, C). Reads the logits without gradient."""
        import torch

        from deepdive.train.recipe import answer_signals

        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2 \
                or not logits.is_floating_point():
            raise DeepdiveError("log_train_batch: logits must be a float tensor (batch, classes) with 2 or more "
                                f"classes, got {_describe(logits)}")
        b, classes = logits.shape
        idx = _int_vector(indices, "indices", b)
        lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
        if lab.shape != (b,) or lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise DeepdiveError(f"log_train_batch: labels must be {b} integers, one per row of the logits, got "
                                f"{_describe(labels)}")
        if b == 0:
            return
        if idx.min() < 0:
            raise DeepdiveError(f"log_train_batch: indices must be >= 0, got {int(idx.min())}")
        if lab.device.type == "cpu":      # checked now; a GPU's at the epoch's end (no synchronisation per batch)
            _check_label_range(lab.numpy(), classes)
            self._note_labels(idx, lab.numpy().astype(np.int64))
        lab = lab.to(logits.device, torch.long)
        signals = answer_signals(logits.detach().float(), lab.clamp(0, classes - 1))   # range checked (or later)
        self._batches.append((idx, signals, lab, classes))

    def end_epoch(self, epoch: int):
        """Close the epoch's answers under this epoch number (nothing to close: nothing happens). Raises
        DeepdiveError for labels out of range, or an image whose label changed, naming it; the epoch is dropped."""
        if not self._batches:
            return
        import torch

        batches, self._batches = self._batches, []
        idx = np.concatenate([b[0] for b in batches])
        signals = torch.cat([b[1] for b in batches], 1).cpu().numpy()
        lab = torch.cat([b[2] for b in batches]).cpu().numpy()
        _check_label_range(lab, np.repeat([b[3] for b in batches], [len(b[0]) for b in batches]))
        uniq, first = self._note_labels(idx, lab)
        row = np.full((3, self._labels.size), np.nan, np.float32)
        row[:, uniq] = signals[:, first]
        pred = np.where(np.isnan(row[2]), -1, np.nan_to_num(row[2])).astype(np.int16)
        self._epochs.append((int(epoch), row[0].astype(np.float16), row[1].astype(np.float16), pred))

    def _note_labels(self, idx, lab):
        """Keep each index's label; DeepdiveError naming an image whose label differs from one given before (or in
        the same call). Returns np.unique(idx)'s (unique indices, first positions)."""
        uniq, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
        if uniq[-1] >= self._labels.size:
            self._labels = np.concatenate([self._labels, np.full(int(uniq[-1]) + 1 - self._labels.size, -1)])
        earlier = lab[first][inverse]                       # the label each image came with first here
        known = self._labels[idx]
        earlier = np.where(known >= 0, known, earlier)      # or before
        changed = np.flatnonzero(lab != earlier)
        if changed.size:
            i = int(changed[0])
            raise DeepdiveError(f"log_train_batch: training image {int(idx[i])} came with label {int(lab[i])}, "
                                f"earlier with {int(earlier[i])}: the indices must be the images' positions in the "
                                "training set (deepdive.indexed(dataset) adds them to each item)")
        self._labels[uniq] = lab[first]
        return uniq, first

    def arrays(self) -> dict | None:
        """The closed epochs as dynamics.npz's arrays (see load), over the images answered in any of them; None
        before the first."""
        if not self._epochs:
            return None
        seen = np.zeros(self._labels.size, bool)
        for row in self._epochs:
            seen[:row[3].size] |= row[3] >= 0
        idx = np.flatnonzero(seen)
        out = {}
        for k, (key, fill) in enumerate((("p_true", np.nan), ("margin", np.nan), ("pred", -1))):
            rows = [row[k + 1] for row in self._epochs]
            full = np.full((len(rows), self._labels.size), fill, rows[0].dtype)
            for r, row in enumerate(rows):      # an epoch closed before later indices were first seen is shorter
                full[r, :row.size] = row
            out[key] = full[:, idx]
        return {**out, "epoch": np.array([row[0] for row in self._epochs], np.int16),
                "member": np.zeros(len(self._epochs), np.int16),
                "idx": idx.astype(np.int64), "label": self._labels[idx], "given": self._labels[idx].copy()}


def _check_label_range(labels: np.ndarray, classes):
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        raise DeepdiveError(f"log_train_batch: labels must be in 0..{int(np.max(classes)) - 1} (the logits' "
                            f"classes), got {int(bad[0])}")


def _int_vector(x, what, n) -> np.ndarray:
    import torch

    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.shape != (n,) or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise DeepdiveError(f"log_train_batch: {what} must be {n} integers, one per row of the logits, got "
                            f"{_describe(x)}")
    return a.astype(np.int64)


def _describe(x) -> str:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    return f"{type(x).__name__} of shape {tuple(shape)}, {dtype}" if shape is not None else type(x).__name__


def load(run_dir) -> dict | None:
    """The run's training dynamics (deepdive.train.recipe._dynamics_arrays, or Recorder.arrays), or None when it
    has none (logged with log_evaluation without them, or trained before they were kept). Raises RunError for an
    unreadable or inconsistent file."""
    path = Path(run_dir) / DYNAMICS
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except Exception as e:   # noqa: BLE001 - a truncated or foreign file: say which
        raise RunError(f"cannot read the training dynamics {path}: {type(e).__name__}: {e}") from e
    missing = [k for k in ("p_true", "margin", "pred", "epoch", "member", "idx", "label", "given") if k not in d]
    if missing:
        raise RunError(f"{path} is not a training-dynamics file deepdive can read (missing {', '.join(missing)})")
    shape = d["p_true"].shape
    n = shape[-1] if len(shape) == 2 else -1
    if n < 0 or any(d[k].shape != shape for k in ("margin", "pred")) or \
            any(d[k].shape != (shape[0],) for k in ("epoch", "member")) or \
            any(d[k].shape != (n,) for k in ("idx", "label", "given")):
        raise RunError(f"{path} is not a training-dynamics file deepdive can read (its arrays' shapes do not match)")
    return d


def load_for(run_dir, table: pd.DataFrame) -> dict:
    """The run's per-epoch arrays behind a stored per-image table (analysis' dynamics.parquet); RunError when the
    run folder no longer holds the ones it was made from (retrained or removed since the analysis)."""
    d = load(run_dir)
    if d is None or not np.array_equal(d["idx"], table["idx"].to_numpy()):
        raise RunError(f"the training dynamics in {run_dir} no longer match its analysis (re-run: deepdive analyze)")
    return d


def image_table(d: dict) -> pd.DataFrame:
    """One row per training image: idx (into the dataset's training split), label (trained on), given (the
    dataset's), confidence, variability, correctness (share of its epochs predicted right), aum, forgets (right to
    wrong between consecutive epochs of a member), learned (the epoch, counted within a member, from which every
    member had it right to the end; NaN: some member never did), leaning (the class it was most often mistaken
    for, -1 if never), epochs (how many it was trained in), region (easy / ambiguous / hard)."""
    p = d["p_true"].astype(np.float32)
    margin = d["margin"].astype(np.float32)
    pred = d["pred"].astype(np.int64)
    label = d["label"].astype(np.int64)
    seen = pred >= 0
    epochs = seen.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.nanmean(np.where(seen, p, np.nan), axis=0)
        variability = np.nanstd(np.where(seen, p, np.nan), axis=0)
        aum = np.nanmean(np.where(seen, margin, np.nan), axis=0)
    right = seen & (pred == label[None])
    correctness = right.sum(0) / np.maximum(epochs, 1)

    forgets, firsts = np.zeros(len(label), np.int64), []
    for m in np.unique(d["member"]):
        rows = np.flatnonzero(d["member"] == m)
        f, first = _forgetting(right[rows], seen[rows])
        forgets += f
        firsts.append(first)
    learned = np.max(np.stack(firsts), axis=0)      # NaN where any member never learned it
    wrong_counts = np.zeros((len(label), int(max(pred.max(initial=0), label.max(initial=0))) + 1), np.int64)
    for r in range(pred.shape[0]):
        miss = seen[r] & ~right[r]
        np.add.at(wrong_counts, (np.flatnonzero(miss), pred[r][miss]), 1)
    leaning = np.where(wrong_counts.any(1), wrong_counts.argmax(1), -1)

    region = np.where(confidence < HARD_CONFIDENCE, "hard",
                      np.where(variability >= AMBIGUOUS_VARIABILITY, "ambiguous", "easy"))
    return pd.DataFrame({"idx": d["idx"].astype(np.int64), "label": label, "given": d["given"].astype(np.int64),
                         "confidence": confidence.astype(np.float32), "variability": variability.astype(np.float32),
                         "correctness": correctness.astype(np.float32), "aum": aum.astype(np.float32),
                         "forgets": forgets, "learned": learned.astype(np.float32), "leaning": leaning,
                         "epochs": epochs.astype(np.int64), "region": region})


def _forgetting(right, seen):
    """(forgets, learned) of one member's epochs (E, n): right-to-wrong steps between the epochs an image was
    trained in, and the first epoch (1-based) from which it was right in every later epoch it was trained in
    (NaN if wrong at its last one)."""
    forgets = np.zeros(right.shape[1], np.int64)
    before = np.zeros(right.shape[1], bool)      # right at the last epoch it was seen in
    learned = np.full(right.shape[1], np.nan)
    for e in range(right.shape[0]):
        now, s = right[e], seen[e]
        forgets += s & before & ~now
        learned = np.where(s & ~now, np.nan, np.where(s & now & np.isnan(learned), e + 1, learned))
        before = np.where(s, now, before)
    return forgets, learned


def epoch_curve(d: dict) -> list[dict]:
    """Per kept epoch: member, epoch (within the run), share of the images trained that epoch that it got right,
    their label's mean probability, how many were trained."""
    out = []
    for r in range(d["pred"].shape[0]):
        seen = d["pred"][r] >= 0
        right = seen & (d["pred"][r] == d["label"])
        out.append({"epoch": int(d["epoch"][r]), "member": int(d["member"][r]), "trained": int(seen.sum()),
                    "right": float(right.sum() / max(1, seen.sum())),
                    "p_true": float(np.nanmean(d["p_true"][r][seen].astype(np.float32))) if seen.any() else None})
    return out


def flagged(table: pd.DataFrame, limit=FLAGGED) -> pd.DataFrame:
    """Training images with a negative AUM, lowest first, at most `limit`: labels in doubt, the likeliest errors
    first (further down, images hard rather than mislabelled: more of them after few epochs or on harder data)."""
    low = table[table["aum"] < 0].sort_values(["aum", "idx"], kind="stable")
    return low.head(limit)


def dynamics_stage(run_dir, class_names, train_issues=None) -> dict:
    """The summary entry of a run's training dynamics, with the per-image table written to run_dir's analysis
    folder by the caller (returned under "table"). train_issues: dataset indices cleanlab flagged on the train
    split (`--label-issues train`), if that analysis exists, to say how far the two readings agree."""
    d = load(run_dir)
    if d is None:
        return {"available": False, "reason": "the run kept no training dynamics (logged with log_evaluation "
                                              "without run.log_train_batch, or trained by a deepdive older than "
                                              "them)"}
    table = image_table(d)
    names = list(class_names)
    regions = {r: int((table["region"] == r).sum()) for r in REGIONS}
    low = table[table["aum"] < 0]
    per_class = []
    for c, name in enumerate(names):
        t = table[table["label"] == c]
        per_class.append({"class": c, "name": name, "images": int(len(t)),
                          "confidence": float(t["confidence"].mean()) if len(t) else None,
                          **{r: int((t["region"] == r).sum()) for r in ("hard", "ambiguous")},
                          "negative_aum": int((t["aum"] < 0).sum()), "forgotten": int((t["forgets"] > 0).sum()),
                          "never_learned": int(t["learned"].isna().sum())})
    top = flagged(table)
    entry = {"available": True, "images": int(len(table)), "epochs": int(d["pred"].shape[0]),
             "members": int(len(np.unique(d["member"]))), "regions": regions,
             "thresholds": {"hard_confidence": HARD_CONFIDENCE, "ambiguous_variability": AMBIGUOUS_VARIABILITY},
             "negative_aum": int(len(low)), "forgotten": int((table["forgets"] > 0).sum()),
             "never_learned": int(table["learned"].isna().sum()),
             "learned_median": float(np.nanmedian(table["learned"])) if table["learned"].notna().any() else None,
             "per_class": per_class, "curve": epoch_curve(d),
             "flagged": [int(i) for i in top["idx"]],
             "lowest": [{"idx": int(r.idx), "given": int(r.given), "label": int(r.label), "leaning": int(r.leaning),
                         "aum": round(float(r.aum), 3)} for r in top.head(LOWEST).itertuples()],
             "table": table}
    if train_issues is not None:
        issues = set(int(i) for i in train_issues)
        entry["cleanlab"] = {"flagged": len(issues), "both": len(issues & set(int(i) for i in low["idx"]))}
    return entry
