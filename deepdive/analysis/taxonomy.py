"""Error taxonomy: why is each mistake a mistake?

Every error (pred != true) gets exactly one category, checked in this order:

1. 'ambiguous' — a person could read it either way: the normalised entropy H(p) / ln C is at least
   `entropy` (0.30 ≈ a 50/50 split between two of ten classes), or the true class is the runner-up and the
   margin p[pred] - p[true] is below `margin`, or, when several models' probabilities exist (ensemble members
   or folds), they do not all predict the same class. Checked first: an uncertain model is no evidence that
   the label is wrong, even where cleanlab's per-class thresholds are low enough to flag it.
2. 'likely label error' — cleanlab's confident learning flagged the example (label_issue is True): the model,
   out of sample, is confident the given label is wrong.
3. 'model-fixable' — neither: the model is confidently wrong on an example with a clear label; more capacity,
   data or augmentation can fix these.

Entropy and margin are read on the temperature-calibrated probabilities (label_issues.calibrate, the same
ones confident learning sees): label smoothing leaves every prediction of our recipes near 0.9, so on raw
probabilities nearly every error clears the entropy bar (demo run: 39 of 40 'ambiguous', 0 'model-fixable').

Correct examples are 'correct'. The thresholds travel in summary.json so every count can be re-derived.
"""
import math

import numpy as np
import pandas as pd

from deepdive.analysis.label_issues import calibrate
from deepdive.analysis.tables import probs_of

CATEGORIES = ("likely label error", "ambiguous", "model-fixable")
THRESHOLDS = {"entropy": 0.30, "margin": 0.40}
RULE = ("p = the temperature-calibrated probabilities; "
        "error → 'ambiguous' if H(p)/ln C >= {entropy}, or the true class is the runner-up with "
        "p[pred] - p[true] < {margin}, or model members disagree; else 'likely label error' if cleanlab flags it; "
        "else 'model-fixable'")


def categorize(frame: pd.DataFrame, member_preds: np.ndarray | None = None,
               thresholds: dict | None = None, calibrated: np.ndarray | None = None) -> pd.Series:
    """Category per row of a predictions frame that already has a boolean `label_issue` column.

    member_preds: optional int (M, N) predicted classes of M member models for every row (rows that were not
    evaluated may hold -1 and are ignored).
    calibrated: label_issues.calibrate(true, probs) of the frame when the caller already has it.
    """
    t = {**THRESHOLDS, **(thresholds or {})}
    true = frame["true"].to_numpy()
    probs = calibrate(true, probs_of(frame)) if calibrated is None else np.asarray(calibrated, dtype=np.float32)
    n, c = probs.shape
    rows = np.arange(n)
    pred = frame["pred"].to_numpy()
    errors = ~frame["correct"].to_numpy()

    norm_entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1) / math.log(c)
    masked = probs.copy()
    masked[rows, pred] = -1.0
    runner_up = masked.argmax(axis=1)
    close_call = (runner_up == true) & (probs[rows, pred] - probs[rows, true] < t["margin"])
    ambiguous = (norm_entropy >= t["entropy"]) | close_call
    if member_preds is not None:
        ambiguous |= members_disagree(member_preds)

    category = np.full(n, "correct", dtype=object)
    category[errors] = "model-fixable"
    category[errors & frame["label_issue"].to_numpy(dtype=bool)] = "likely label error"
    category[errors & ambiguous] = "ambiguous"
    return pd.Series(category, index=frame.index, name="category")


def members_disagree(member_preds: np.ndarray) -> np.ndarray:
    """True where the evaluated members (entries >= 0) predict more than one class."""
    member_preds = np.asarray(member_preds)
    valid = member_preds >= 0
    high = np.where(valid, member_preds, -1).max(axis=0)
    low = np.where(valid, member_preds, np.iinfo(np.int64).max).min(axis=0)
    return valid.any(axis=0) & (high != low)


def counts(frame: pd.DataFrame, class_names: list[str]) -> dict:
    """{'total': {category: n}, 'per_class': [{class, name, category: n, ...}]} over the errors, by true class."""
    errors = frame[frame["category"] != "correct"]
    total = {cat: int((errors["category"] == cat).sum()) for cat in CATEGORIES}
    per_class = []
    for cls, name in enumerate(class_names):
        cats = errors.loc[errors["true"] == cls, "category"]
        per_class.append({"class": cls, "name": name, **{cat: int((cats == cat).sum()) for cat in CATEGORIES}})
    return {"total": total, "per_class": per_class}


def describe(thresholds: dict | None = None) -> dict:
    """The rule and thresholds as stored in summary.json."""
    t = {**THRESHOLDS, **(thresholds or {})}
    return {"categories": list(CATEGORIES), "thresholds": t, "rule": RULE.format(**t)}
