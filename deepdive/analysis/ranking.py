"""How the model ranks the classes, beyond its top answer: top-k accuracy and, per class, the precision-recall
curve of its probability for that class (one class against the rest) with its average precision.

Accuracy says how often the top answer is right; these say how far off the rest are. Top-2 tells whether the
errors are near misses (the right class second); a class's PR curve tells what a threshold on its probability
buys: "flag every image with p(9) >= t" finds this share of the 9s (recall) and this share of what it flags are
9s (precision). Computed by scikit-learn from the probabilities alone (no model).
"""
import numpy as np

from deepdive.analysis.tables import probs_of

TOP_K = (1, 2, 3, 5)
CURVE_POINTS = 2000       # PR curve vertices kept over all classes (each class at least MIN_CLASS_POINTS)
MIN_CLASS_POINTS = 20


def top_k_accuracy(labels, probs, ks=TOP_K) -> list[dict]:
    """[{k, accuracy}] for each k below the class count: the share of images whose true class is among the k
    most probable (ties broken as scikit-learn's top_k_accuracy_score breaks them)."""
    from sklearn.metrics import top_k_accuracy_score

    c = probs.shape[1]
    labels = np.asarray(labels)
    scores = probs[:, 1] if c == 2 else probs    # scikit-learn takes a binary problem's scores as one column
    return [{"k": k, "accuracy": float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(c)))}
            for k in ks if k < c and len(labels)]


def pr_curve(is_class, scores, max_points) -> tuple[float | None, list[list[float]]]:
    """(average precision, [[recall, precision, threshold], ...]) of one class against the rest, recall rising;
    (None, []) for a class with no image.

    The curve keeps one vertex per positive image: where the threshold sits at that image's score, the best
    precision at its recall (the points in between only add false positives at the same recall). Above
    `max_points` vertices, half of them go to the high-recall end, where a good model's curves part, and the
    rest are spread evenly over the remainder; the first and last vertices are always kept."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    if not is_class.any():
        return None, []
    precision, recall, thresholds = precision_recall_curve(is_class, scores)
    # sklearn orders by rising threshold (falling recall) and appends (recall 0, precision 1) without a threshold
    precision, recall, thresholds = precision[:-1][::-1], recall[:-1][::-1], thresholds[::-1]
    # As the threshold falls, recall steps up at each positive and precision then sinks with each negative until
    # the next: the first point of each recall level is its best precision (sklearn's drop_intermediate keeps the
    # sinking end as well, which draws a saw-tooth).
    # (Thresholds above the first positive find nothing: recall 0 says nothing about precision.)
    keep = np.flatnonzero(np.r_[True, recall[1:] != recall[:-1]] & (recall > 0))
    if len(keep) > max_points:
        tail = max_points // 2
        head = np.linspace(0, len(keep) - tail - 1, max_points - tail).round().astype(int)
        keep = np.r_[keep[np.unique(head)], keep[len(keep) - tail:]]
    points = [[round(float(recall[i]), 6), round(float(precision[i]), 6), round(float(thresholds[i]), 6)]
              for i in keep]
    return float(average_precision_score(is_class, scores)), points


def ranking_stage(frame, class_names) -> dict:
    """summary["ranking"]: top-k accuracy, each class's AP and PR curve, and the mean AP over the classes present."""
    probs = probs_of(frame)
    labels = frame["true"].to_numpy()
    c = len(class_names)
    per_class_points = max(MIN_CLASS_POINTS, CURVE_POINTS // max(c, 1))
    curves = []
    for cls in range(c):
        ap, points = pr_curve(labels == cls, probs[:, cls], per_class_points)
        curves.append({"class": cls, "ap": ap, "points": points})
    aps = [cv["ap"] for cv in curves if cv["ap"] is not None]
    return {"available": True, "top_k": top_k_accuracy(labels, probs),
            "mean_ap": float(np.mean(aps)) if aps else None, "pr_curves": curves}
