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

    load(run_dir) -> dict | None                               # dynamics.npz as arrays
    image_table(d) -> DataFrame, one row per training image    # the per-image readings above
    dynamics_stage(run_dir, class_names, train_issues) -> summary entry (+ "table": analyze writes dynamics.parquet)
"""
from pathlib import Path

import numpy as np
import pandas as pd

from deepdive.errors import RunError
from deepdive.paths import DYNAMICS

HARD_CONFIDENCE = 0.5      # below: hard to learn (the label got less than half the probability, on average)
AMBIGUOUS_VARIABILITY = 0.2  # at or above (and not hard): ambiguous, its label's probability swung that much
FLAGGED = 200              # training images listed with a label in doubt (lowest AUM first), at most
LOWEST = 10                # of them named in the summary (and by `deepdive analyze`), with their labels
REGIONS = ("easy", "ambiguous", "hard")
FILE = "dynamics.parquet"


def load(run_dir) -> dict | None:
    """The run's training dynamics (deepdive.train.recipe._dynamics_arrays), or None when it has none (logged with
    log_evaluation, or trained before they were kept). Raises RunError for an unreadable or inconsistent file."""
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
        return {"available": False, "reason": "the run kept no training dynamics (logged with log_evaluation, or "
                                              "trained by a deepdive older than them)"}
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
