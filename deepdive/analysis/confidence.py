"""How far to trust the model's confidence: calibration, and which images a person should check first.

    entry = confidence_stage(frame)        # summary["confidence"]; frame = an analysed predictions frame

Calibration (Guo et al. 2017): the top-label reliability diagram, images binned by their confidence (the top
probability) in 15 equal-width bins, each bin's accuracy against its mean confidence; ECE = the bins' |accuracy -
confidence| weighted by their share of the images, MCE = the largest gap of a bin; NLL and the Brier score beside
them. Our recipes train with label smoothing 0.1, which keeps every probability near 0.9 whatever the model knows,
so their raw confidences are under-confident by design (the demo: mean confidence ~0.9 at 99.7% accuracy). One
temperature T (probabilities ∝ p^(1/T), argmax unchanged) fitted by NLL says how much: it is fitted on half of the
images and applied to the other half, both ways round, so the scaled numbers are out of sample.

Which images to check (selective prediction, the misclassification-detection baseline of Hendrycks & Gimpel
2017): order the images by a trust score, least trusted first, and count the errors among the first 0.5 / 1 / 2 /
5% of them. Scores: the confidence, the margin to the runner-up, the entropy (low = trusted), and where the
analysis found each image's nearest training images, the share of them carrying the predicted class (the deep
k-NN's credibility, Papernot & McDaniel 2018; ties broken by the confidence). AUROC (scikit-learn) of each score
separating right from wrong answers: 1 = every error below every right answer, 0.5 = no better than chance.
"""
import math

import numpy as np
import pandas as pd

BINS = 15
BUDGETS = (0.005, 0.01, 0.02, 0.05)      # shares of the images a person checks, least trusted first
CURVE_POINTS = 400                       # at most this many points of each signal's errors-caught curve
SIGNALS = {
    "confidence": "the top probability",
    "margin": "the top probability minus the runner-up's",
    "entropy": "the entropy of the probabilities (low = trusted)",
    "neighbours": "the share of the nearest training images that carry the predicted class",
    "typicality": "how close the nearest training images are (their mean cosine distance, low = trusted)",
}
T_BOUNDS = (0.05, 20.0)


# ---- calibration ---------------------------------------------------------------------------------------------
def bin_of(confidence, bins: int = BINS) -> np.ndarray:
    """Each confidence's reliability bin: b for (b / bins, (b + 1) / bins], the first bin from 0."""
    return np.clip(np.ceil(np.asarray(confidence, dtype=np.float64) * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(confidence, correct, bins: int = BINS) -> list[dict]:
    """One entry per equal-width confidence bin (bin_of): lo, hi, count, and for non-empty bins the accuracy and
    the mean confidence of its images (None when empty)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    which = bin_of(confidence, bins)
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=correct, minlength=bins)
    conf = np.bincount(which, weights=confidence, minlength=bins)
    out = []
    for b in range(bins):
        n = int(counts[b])
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "count": n,
                    "accuracy": float(hits[b] / n) if n else None, "confidence": float(conf[b] / n) if n else None})
    return out


def calibration_errors(bins: list[dict]) -> tuple[float | None, float | None]:
    """(ECE, MCE) of reliability() bins: the count-weighted mean and the largest |accuracy - confidence|."""
    full = [b for b in bins if b["count"]]
    total = sum(b["count"] for b in full)
    if not total:
        return None, None
    gaps = [abs(b["accuracy"] - b["confidence"]) for b in full]
    return float(sum(g * b["count"] for g, b in zip(gaps, full)) / total), float(max(gaps))


def scores(labels, probs) -> dict:
    """Calibration of probabilities (N, C) against labels: ECE, MCE, the reliability() bins, NLL, Brier, accuracy
    and mean confidence."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    # binned as float32, as the examples table keeps it, so a row's stored confidence falls in the bin it counts in
    confidence = probs.max(axis=1).astype(np.float32).astype(np.float64)
    correct = probs.argmax(axis=1) == labels
    bins = reliability(confidence, correct)
    ece, mce = calibration_errors(bins)
    onehot = np.zeros_like(probs)
    onehot[rows, labels] = 1.0
    return {"ece": ece, "mce": mce, "reliability": bins,
            "nll": float(-np.log(np.clip(probs[rows, labels], 1e-12, 1.0)).mean()),
            "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
            "accuracy": float(correct.mean()), "mean_confidence": float(confidence.mean())}


def scale(probs, t: float) -> np.ndarray:
    """Probabilities re-scaled by temperature t: softmax(log p / t), float64 (argmax unchanged)."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / t
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(labels, probs, bounds=T_BOUNDS) -> float:
    """The temperature within `bounds` that minimises the NLL of `labels`; 1.0 when none beats leaving them be."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))

    def nll(t):
        return -np.log(np.clip(scale(probs, t)[rows, labels], 1e-12, 1.0)).mean()

    best = minimize_scalar(nll, bounds=bounds, method="bounded")
    return float(best.x) if nll(best.x) < nll(1.0) else 1.0


def cross_fitted(labels, probs, seed: int = 0) -> tuple[np.ndarray | None, list[float]]:
    """(probabilities, [T of half A, T of half B]): the images split at random into two halves, each scaled by
    the temperature fitted on the other. (None, []) when a half would be empty."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n < 2:
        return None, []
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    out = np.empty(np.shape(probs), dtype=np.float64)
    temps = []
    for fit, apply in (halves, halves[::-1]):
        t = fit_temperature(labels[fit], np.asarray(probs)[fit])
        out[apply] = scale(np.asarray(probs)[apply], t)
        temps.append(t)
    return out, temps


# ---- which images to check -----------------------------------------------------------------------------------
def review_order(score, tiebreak=None) -> np.ndarray:
    """Row indices, least trusted (lowest score) first; ties by `tiebreak` (lowest first), then by row."""
    score = np.asarray(score, dtype=np.float64)
    if tiebreak is None:
        return np.argsort(score, kind="stable")
    return np.lexsort((np.arange(len(score)), np.asarray(tiebreak, dtype=np.float64), score))


def error_detection(correct, order, budgets=BUDGETS, points: int = CURVE_POINTS) -> dict:
    """How well a review order (review_order) finds the errors: AUROC of its rank separating right from wrong
    answers (None when either is absent), the errors among the first share b of the images for each budget,
    and the errors-caught curve as [images checked, errors caught] at (at most `points` of) the errors."""
    from sklearn.metrics import roc_auc_score

    correct = np.asarray(correct, dtype=bool)
    n = len(correct)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)             # 0 = checked first
    wrong_at = np.sort(rank[~correct]) + 1  # images checked by the time each error is found
    errors = len(wrong_at)
    auroc = float(roc_auc_score(correct, rank)) if 0 < errors < n else None
    caught = {f"{b:g}": int((wrong_at <= math.ceil(b * n)).sum()) for b in budgets}
    keep = np.unique(np.linspace(0, errors - 1, min(errors, points)).round().astype(np.int64)) if errors else []
    return {"auroc": auroc, "caught": caught, "curve": [[int(wrong_at[i]), int(i + 1)] for i in keep]}


def signals(frame: pd.DataFrame) -> dict:
    """Each available trust score's review order (higher score = more trusted)."""
    conf = frame["confidence"].to_numpy()
    out = {"confidence": review_order(conf), "margin": review_order(frame["margin"].to_numpy()),
           "entropy": review_order(-frame["entropy"].to_numpy())}
    if "neighbour_agreement" in frame:
        out["neighbours"] = review_order(frame["neighbour_agreement"].to_numpy(), tiebreak=conf)
    if "knn_distance" in frame:
        out["typicality"] = review_order(-frame["knn_distance"].to_numpy(), tiebreak=conf)
    return out


def confidence_stage(frame: pd.DataFrame) -> dict:
    """The summary entry: calibration as the model's probabilities stand and after a cross-fitted temperature,
    and how well each trust score finds the errors. Also frame["calibrated_confidence"]: each row's top
    probability after the temperature of the half it was not fitted on (NaN when there is none)."""
    from deepdive.analysis.tables import probs_of

    n = len(frame)
    if n == 0:
        return {"available": False, "reason": "the split is empty"}
    labels, probs, correct = frame["true"].to_numpy(), probs_of(frame), frame["correct"].to_numpy()
    raw = scores(labels, probs)
    scaled, temps = cross_fitted(labels, probs)
    temperature = None
    frame["calibrated_confidence"] = (scaled.max(axis=1) if scaled is not None else np.full(n, np.nan)).astype(
        np.float32)
    if scaled is not None:
        temperature = {"value": fit_temperature(labels, probs), "halves": temps,
                       "method": "NLL on a random half, applied to the other, both ways", **scores(labels, scaled)}
    orders = signals(frame)
    detection = {name: {"description": SIGNALS[name], **error_detection(correct, order)}
                 for name, order in orders.items()}
    conf_sorted = frame["confidence"].to_numpy()[orders["confidence"]]
    thresholds = {f"{b:g}": float(conf_sorted[min(n, math.ceil(b * n)) - 1]) for b in BUDGETS}
    return {"available": True, "n": n, "errors": int((~correct).sum()), "bins": BINS, "budgets": list(BUDGETS),
            **raw, "temperature": temperature, "signals": detection, "confidence_thresholds": thresholds}
