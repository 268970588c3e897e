"""Likely mislabeled examples, by confident learning (cleanlab) on out-of-sample probabilities.

Test / val split: the model never trained on these, so its own probabilities are out of sample. Train split:
`cross_validated_probs` retrains the run's recipe K times, each on K-1 folds, and predicts the held-out fold.

Flagging uses cleanlab.filter.find_label_issues with its default `prune_by_noise_rate` filter: it estimates, per
(given, true) class pair, how many labels are wrong (the confident joint) and flags that many examples with the
largest margin for the other class. Ranking and the `label_quality` column use cleanlab.rank's self-confidence
score, p[given label] (lower = more suspicious). The suggested label of a flagged example is the most likely
class other than the given one; unflagged examples keep their given label there.

Calibration first: confident learning counts an example as "really class j" only when p[j] reaches class j's
average self-confidence. Label smoothing (our recipes use 0.1) caps every probability near 0.9, so that bar is
out of reach for any mislabeled example and nothing is flagged: on the demo run (99.60%), 0 issues. One
temperature, fitted by NLL on the split's given labels, undoes that (T = 0.39 there) without changing any
prediction, and the same run then flags 3 (test rows 6576, 2130, 9729: a 7 written like a 1, a 4 like a 9,
a 5 like a 6).
"""
import warnings

import numpy as np
import pandas as pd

from deepdive.errors import DeepdiveError

METHOD = {"filter_by": "prune_by_noise_rate", "ranked_by": "self_confidence",
          "library": "cleanlab.filter.find_label_issues + cleanlab.rank.get_label_quality_scores"}


def find_issues(labels, probs, calibrated=None) -> pd.DataFrame:
    """Per example (same order as the inputs): label_issue (bool), label_quality, suggested_label, issue_rank.

    issue_rank is 1 for the most suspicious flagged example, 2 for the next, ...; 0 for unflagged ones.
    calibrated: calibrate(labels, probs) when the caller already has it (the analysis shares it with the taxonomy).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float32)
    n, c = probs.shape
    if n == 0:
        return pd.DataFrame({"label_issue": np.zeros(0, bool), "label_quality": np.zeros(0, np.float32),
                             "suggested_label": np.zeros(0, np.int64), "issue_rank": np.zeros(0, np.int64)})
    probs = calibrate(labels, probs) if calibrated is None else np.asarray(calibrated, dtype=np.float32)
    if len(np.unique(labels)) < 2:
        # One class given (a split of one class's images): confident learning has no other class's labels to
        # estimate how often this one is given wrongly, so nothing is flagged; the quality is still cleanlab's
        # self-confidence, the probability of the given label.
        return pd.DataFrame({"label_issue": np.zeros(n, bool), "label_quality": probs[np.arange(n), labels],
                             "suggested_label": labels, "issue_rank": np.zeros(n, np.int64)})
    with warnings.catch_warnings():
        # cleanlab warns about classes with few or no examples (normal for a small custom eval set); the
        # flagged set is still well defined, so the warning would only be noise on the terminal.
        warnings.simplefilter("ignore")
        # n_jobs=1: cleanlab's multiprocessing buys nothing at this size and forks a process holding torch.
        ranked = find_label_issues(labels, probs, filter_by=METHOD["filter_by"],
                                   return_indices_ranked_by=METHOD["ranked_by"], n_jobs=1)
        quality = get_label_quality_scores(labels, probs, method=METHOD["ranked_by"])
    others = probs.copy()
    others[np.arange(n), labels] = -1.0
    rank = np.zeros(n, dtype=np.int64)
    rank[np.asarray(ranked, dtype=np.int64)] = np.arange(1, len(ranked) + 1)
    flagged = rank > 0
    return pd.DataFrame({
        "label_issue": flagged,
        "label_quality": quality.astype(np.float32),
        "suggested_label": np.where(flagged, others.argmax(axis=1), labels).astype(np.int64),
        "issue_rank": rank,
    })


def calibrate(labels, probs) -> np.ndarray:
    """probs re-scaled by the single temperature that minimises the NLL of `labels` (argmax unchanged).

    Only sharpening (T <= 1) is applied: under-confidence is what hides label issues; softening over-confident
    probabilities would only let the flipped labels themselves (which NLL pays most for) blunt the search."""
    from deepdive.analysis.confidence import fit_temperature, scale

    t = fit_temperature(labels, probs, bounds=(0.05, 1.0))
    return scale(probs, t).astype(np.float32) if t != 1.0 else np.asarray(probs).astype(np.float32)


def issues_table(frame: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """The flagged examples of an analysed predictions frame, most suspicious first (label_issues.parquet)."""
    from deepdive.analysis.tables import prob_columns

    flagged = frame[frame["label_issue"]].sort_values("issue_rank", kind="stable")
    rows = flagged.index.to_numpy()
    probs = flagged[prob_columns(len(class_names))].to_numpy()
    given = flagged["true"].to_numpy()
    suggested = flagged["suggested_label"].to_numpy()
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({
        "rank": flagged["issue_rank"].to_numpy(),
        "row": rows.astype(np.int64),
        "idx": flagged["idx"].to_numpy(),
        "given_label": given,
        "given_name": names[given] if len(given) else np.zeros(0, object),
        "suggested_label": suggested,
        "suggested_name": names[suggested] if len(suggested) else np.zeros(0, object),
        "label_quality": flagged["label_quality"].to_numpy(),
        "p_given": probs[np.arange(len(rows)), given].astype(np.float32),
        "p_suggested": probs[np.arange(len(rows)), suggested].astype(np.float32),
        "pred": flagged["pred"].to_numpy(),
    })


# ---- train split: K-fold cross-validated probabilities ------------------------------------------------------
def training_indices(train_labels: np.ndarray, config: dict) -> np.ndarray:
    """The train-split indices a run trained on: the official train split minus the fixed validation split,
    then the run's `limit_train` subset. Mirrors deepdive.train.recipe.train's selection (same seeds)."""
    from deepdive.data import split_train_val

    resolved = config.get("resolved") or {}
    val_size = resolved.get("val_size", 5000)
    train_idx, _ = split_train_val(train_labels, val_size=val_size, seed=0)
    limit = config.get("limit_train")
    if limit is not None:
        train_idx = np.sort(np.random.default_rng(0).permutation(train_idx)[: int(limit)])
    return np.asarray(train_idx, dtype=np.int64)


def cross_validated_probs(dataset, indices: np.ndarray, config: dict, folds: int = 5, device="auto",
                          progress=True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold probabilities for dataset.train_*[indices]: K models, each trained with the run's recipe
    (preset, seed, epochs, overrides) on K-1 folds, predict the held-out fold.

    Returns (probs (n, C) float32, losses (n,) float32, fold (n,) int: which fold held each example out).
    """
    from dataclasses import replace

    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    from deepdive.train import recipe

    folds = int(folds)
    if folds < 2:
        raise DeepdiveError(f"--folds must be at least 2, got {folds}")
    labels = np.asarray(dataset.train_labels)[indices]
    present = np.bincount(labels)[np.bincount(labels) > 0]
    smallest = int(present.min()) if present.size else 0
    if len(indices) < 2 * folds or smallest < folds:
        raise DeepdiveError(f"{folds}-fold cross-validation needs at least {folds} training examples of every "
                            f"class present; the run's train split has {len(indices)} examples and its rarest "
                            f"class {smallest}. Use fewer folds.")
    c = len(dataset.class_names)
    probs = np.zeros((len(indices), c), dtype=np.float32)
    losses = np.zeros(len(indices), dtype=np.float32)
    fold_of = np.full(len(indices), -1, dtype=np.int64)
    seed = int(config.get("seed") or 0)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    bar = tqdm(list(splitter.split(indices, labels)), desc=f"{folds}-fold label issues", unit="fold",
               disable=not progress)
    for k, (fit, held_out) in enumerate(bar):
        subset = replace(dataset, train_images=dataset.train_images[indices[fit]],
                         train_labels=np.asarray(dataset.train_labels)[indices[fit]])
        result = recipe.train(subset, config.get("preset", "default"), epochs=config.get("epochs"), seed=seed,
                              device=device, overrides=config.get("overrides") or None, progress=False)
        p, loss = recipe.evaluate(result.model, dataset.train_images[indices[held_out]], labels[held_out])
        probs[held_out], losses[held_out], fold_of[held_out] = p, loss, k
        bar.set_postfix(fold_acc=f"{(p.argmax(1) == labels[held_out]).mean():.4f}")
    return probs, losses, fold_of
