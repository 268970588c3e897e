"""`deepdive export RUN TABLE`: one analysis table as CSV or Parquet, written atomically.

Tables (all read through AnalysisResult):
  predictions   every example: row, idx, true/pred (+ names), confidence, margin, loss, correct, entropy,
                p0..p{C-1}, label-issue columns, category, embedding coordinates, neighbours (what the nearest
                training images back: prediction, label or mixed), neighbour_agreement (the share of them
                labelled as predicted), calibrated_confidence (the top probability after the temperature),
                knn_distance, atypicality, atypical (how far from the training images: deepdive.analysis.atypical),
                train_twin, train_twin_label (+ name), train_twin_similarity, duplicate_of_train, split_twin,
                split_twin_similarity, duplicate_in_split (the nearest images in pixels: .duplicates),
                img_brightness, img_contrast, img_ink, img_thickness, img_height, img_width, img_slant, img_offset,
                img_pieces (each picture's measures: .slices)
  per-class     support, predicted, correct, errors, recall, precision, f1, ap and taxonomy counts per class
  confusion     counts matrix: one row per true class, one `pred_<name>` column per predicted class
  label-issues  flagged examples, most suspicious first, with the suggested label
  errors        the misclassified examples, most confident first, with their taxonomy category
  reviews       the images of the split a person reviewed in the dashboard (Label issues): their verdict
                (relabel / keep / ambiguous), the right label for relabel, the model's answer beside it
  tags          the words people put on the split's images in the dashboard (an image's detail), one line per
                (image, tag), with the model's answer, when and in which run
  neighbours    each example's nearest training images, one line per (row, rank): the training image's index,
                its label (as trained on) and the cosine similarity of the two images' penultimate features
  duplicates    the near-duplicates (deepdive.analysis.duplicates): one line per image that (almost) repeats a
                training image (kind "train"; twin: its dataset index) or another image of the split (kind
                "split"; twin: its row), with the twin's label, the cosine similarity of the two images' pixels and
                whether the labels conflict; conflicts first, then the most similar
  slices        every slice tried (deepdive.analysis.slices), lowest p first: group (a class, -1 for the tail of
                every class at once) and its name, property, side (low / high), tail (the share asked), share (the
                share it holds: ties make it smaller), threshold (where the class's tail starts; empty for every
                class), images, errors, rate, rest_images, rest_errors, rest_rate (the rest of its class(es)), lift,
                p (one-sided Fisher exact), q (Benjamini-Hochberg over all of them), description
  influence     per error (the analysis' most confident 300 at most) the training images most against its label,
                then most for it (TracIn at the last layer, deepdive.analysis.influence): one line per (row, side
                "against" / "for", rank), with the training image's index, label (as trained) and score
  robustness    what fools the model (deepdive.analysis.robustness): per picture tried (the right answers among a
                class-stratified sample of the pictures, then the errors, mending true) and family (turn, shift,
                zoom, slant, thickness, adversarial), the smallest size that flips a right answer, or makes an
                error right (NaN: nothing up to the family's largest size did), the variant that did it ("none"
                with NaN) and the class it then gives (into; -1 with NaN)
  calibration   the reliability diagram: per confidence bin its images, accuracy and mean confidence, as the model
                gives them ("model") and after the temperature the analysis fitted ("temperature")
  pr-curves     each class's precision-recall curve (one class against the rest) as the analysis keeps it: per
                vertex its recall, precision and the probability threshold, with the class's AP
  channels      the errors' channels (deepdive.analysis.channels), one line per (error row, channel): how much
                the channel lifts the prediction over the label, its rank in the error, the class it fires for
                most and that class's share of its activation
  dynamics      the run's training images (deepdive.analysis.dynamics), lowest area under the margin first: idx,
                label (as trained), given (the dataset's), confidence, variability, correctness, aum, forgets,
                learned (epoch), leaning (the class it was most often taken for; -1, name "none": never), epochs,
                region, and a person's verdict on its label in the dashboard (verdict: relabel / keep / ambiguous,
                verdict_label: the right label for relabel; "none" and -1 without) and the tags people put on it
                (tags: "; "-joined, empty without)
`row` is the example's position in the analysed split (images.npy row); `idx` its index in the dataset split.

And one table of the run itself, read from the store (the run need not be analysed):
  epochs        the training curves, one row per logged epoch: epoch, train_loss, train_acc, val_loss, val_acc,
                lr, seconds, member (an ensemble's), then one column per other metric the epochs logged, by name
                (system/cpu_percent, system/peak_rss_mb, train_images, a run.log(grad_norm=...) of your own);
                empty where an epoch did not log it
  steps         what the run logged per training step, one row per step: step, then one column per name (the
                recipe's train_loss, train_acc, lr, epoch, train_seconds every 10 steps; run.log_step's), empty
                where a step did not log it; every point, as logged
  histograms    each parameter's values and last gradient per epoch (the recipe's, run.watch(model)'s): epoch, name,
                kind (weight or grad), lo, hi, mean, std and the counts in b0..b29, equal bins from lo to hi
"""
import io
from pathlib import Path

import numpy as np
import pandas as pd

from deepdive.analysis.results import AnalysisResult
from deepdive.analysis.tables import by_confidence
from deepdive.analysis.taxonomy import CATEGORIES
from deepdive.errors import DeepdiveError
from deepdive.store import EPOCH_COLUMNS as STORE_EPOCH_COLUMNS
from deepdive.store import EPOCH_FIELDS

TABLES = ("predictions", "per-class", "confusion", "label-issues", "errors", "reviews", "tags", "neighbours",
          "duplicates", "slices", "influence", "robustness", "calibration", "pr-curves", "channels", "dynamics")
INFLUENCE_COLUMNS = ["row", "idx", "true", "true_name", "pred", "pred_name", "side", "rank", "train_idx",
                     "train_label", "train_label_name", "score"]
DUPLICATE_COLUMNS = ["row", "idx", "true", "true_name", "pred", "pred_name", "confidence", "kind", "twin", "twin_idx",
                     "twin_label", "twin_label_name", "similarity", "conflict"]
RUN_TABLES = ("epochs", "steps", "histograms")
EPOCH_COLUMNS = list(STORE_EPOCH_COLUMNS)     # the epochs table's first columns: the store's
REVIEW_COLUMNS = ["row", "idx", "true", "true_name", "verdict", "label", "label_name", "pred", "pred_name",
                  "confidence", "reviewed_at", "run_id"]
TAG_COLUMNS = ["row", "idx", "true", "true_name", "pred", "pred_name", "confidence", "tag", "tagged_at", "run_id"]
FORMATS = ("csv", "parquet")


def store_part(store, record, result: AnalysisResult, name: str) -> dict | None:
    """The store's part of table `name` (see `table`): people's verdicts for 'reviews' and 'dynamics', their tags
    for 'tags'."""
    from deepdive.analysis.reviews import reviews_by_row, training_reviews
    from deepdive.analysis.tags import tags_by_row, training_tags

    if name == "reviews":
        return reviews_by_row(store, record, result.split, result.examples)
    if name == "dynamics":     # each training image's verdict and tags
        tags = training_tags(store, record)
        part = {i: dict(r) for i, r in training_reviews(store, record).items()}
        for i, t in tags.items():
            part.setdefault(i, {})["tags"] = t
        return part
    if name == "tags":
        return tags_by_row(store, record, result.split, result.examples, full=True)
    return None


def table(result: AnalysisResult, name: str, reviews: dict | None = None) -> pd.DataFrame:
    """The named table of a stored analysis as a DataFrame; `reviews` is the store's part (store_part) of the
    'reviews' table ({row: review}, analysis.reviews.reviews_by_row), of 'dynamics' ({training idx: review and/or
    "tags": [tag]}, .training_reviews, analysis.tags.training_tags) or of 'tags' ({row: [tag records]},
    analysis.tags.tags_by_row)."""
    if name not in TABLES:
        raise DeepdiveError(f"unknown table {name!r}; valid tables: {', '.join(TABLES)}")
    names = np.asarray(result.class_names, dtype=object)
    if name == "predictions":
        return _named(result.examples.copy(), names)
    if name == "errors":
        errors = _named(result.examples.copy(), names)
        return by_confidence(errors[~errors["correct"]]).reset_index(drop=True)
    if name == "label-issues":
        return result.label_issues.reset_index(drop=True)
    if name == "reviews":
        rows = sorted(reviews or {})
        frame = _named(result.examples.copy(), names).iloc[rows]
        for key in ("verdict", "label", "reviewed_at", "run_id"):
            frame[key] = pd.Series([reviews[r][key] for r in rows], index=frame.index, dtype=object)
        frame["label"] = frame["label"].astype("Int64")
        frame["label_name"] = [None if pd.isna(v) else names[int(v)] for v in frame["label"]]
        return frame[REVIEW_COLUMNS].reset_index(drop=True)
    if name == "tags":
        lines = [(r, t) for r in sorted(reviews or {}) for t in reviews[r]]
        frame = _named(result.examples.copy(), names).iloc[[r for r, _ in lines]]
        for key in ("tag", "tagged_at", "run_id"):
            frame[key] = pd.Series([t[key] for _, t in lines], index=frame.index, dtype=object)
        return frame[TAG_COLUMNS].reset_index(drop=True)
    if name == "neighbours":
        nb = result.neighbours()
        ex = result.examples
        n, k = nb["index"].shape
        rows = np.repeat(np.arange(n), k)
        return pd.DataFrame({
            "row": rows, "idx": ex["idx"].to_numpy()[rows], "true": ex["true"].to_numpy()[rows],
            "pred": ex["pred"].to_numpy()[rows], "rank": np.tile(np.arange(1, k + 1), n),
            "train_idx": np.asarray(nb["index"]).reshape(-1).astype(np.int64),
            "train_label": np.asarray(nb["label"]).reshape(-1).astype(np.int64),
            "train_label_name": names[np.asarray(nb["label"]).reshape(-1)],
            "similarity": np.asarray(nb["similarity"]).reshape(-1)})
    if name == "duplicates":
        return _duplicates(result, names)
    if name == "calibration":
        return _calibration(result)
    if name == "pr-curves":
        return _pr_curves(result, names)
    if name == "slices":
        return result.slices()
    if name == "influence":
        return _influence(result, names)
    if name == "robustness":
        frame = result.robustness()
        ex = result.examples
        rows = frame["row"].to_numpy(np.int64)
        frame.insert(1, "idx", ex["idx"].to_numpy()[rows])
        frame.insert(2, "true", ex["true"].to_numpy()[rows])
        frame.insert(3, "true_name", names[frame["true"].to_numpy()])
        into = frame["into"].to_numpy(np.int64)
        frame["into_name"] = np.where(into >= 0, names[np.clip(into, 0, None)], "none")
        frame["variant"] = frame["variant"].mask(frame["variant"] == "", "none")    # survives a CSV round trip
        return frame
    if name == "channels":
        return _channels(result, names)
    if name == "dynamics":
        frame = result.dynamics().sort_values(["aum", "idx"], kind="stable").reset_index(drop=True)
        for col in ("label", "given", "leaning"):
            frame.insert(frame.columns.get_loc(col) + 1, f"{col}_name",
                         np.where(frame[col] >= 0, names[frame[col].clip(lower=0)], "none"))
        got = [(reviews or {}).get(int(i)) or {} for i in frame["idx"]]    # no verdict: "none" / -1, as leaning
        frame["verdict"] = [r.get("verdict") or "none" for r in got]
        frame["verdict_label"] = np.array([-1 if r.get("label") is None else r["label"] for r in got], np.int64)
        frame["verdict_label_name"] = np.where(frame["verdict_label"] >= 0,
                                               names[frame["verdict_label"].clip(lower=0)], "none")
        frame["tags"] = ["; ".join(r.get("tags") or ()) for r in got]
        return frame
    if name == "confusion":
        counts = np.asarray(result.summary["confusion"]["counts"], dtype=np.int64)
        frame = pd.DataFrame(counts, columns=[f"pred_{n}" for n in names])
        frame.insert(0, "true_name", names)
        frame.insert(0, "true", np.arange(len(names)))
        return frame
    # per-class: the summary's table plus the taxonomy counts of each class
    rows = [{k: v for k, v in r.items() if k != "error_rows"} for r in result.summary["per_class"]]
    frame = pd.DataFrame(rows)
    for col in ("recall", "precision", "f1", "ap"):
        frame[col] = frame[col].astype("float64")  # None (undefined) -> NaN
    taxonomy = pd.DataFrame(result.summary["taxonomy"]["per_class"])
    for cat in CATEGORIES:
        frame[cat] = taxonomy[cat].to_numpy()
    return frame


def _pr_curves(result: AnalysisResult, names) -> pd.DataFrame:
    """One line per kept vertex of each class's precision-recall curve (deepdive.analysis.ranking)."""
    r = result.summary.get("ranking")
    if not r:
        raise DeepdiveError(f"the analysis of split {result.split!r} has no precision-recall curves (it predates "
                            "them: run deepdive analyze again)")
    return pd.DataFrame([{"class": cv["class"], "class_name": names[cv["class"]], "ap": cv["ap"], "recall": p[0],
                          "precision": p[1], "threshold": p[2]} for cv in r["pr_curves"] for p in cv["points"]],
                        columns=["class", "class_name", "ap", "recall", "precision", "threshold"])


def _channels(result: AnalysisResult, names) -> pd.DataFrame:
    """One line per (stored error, channel), the error's strongest channels first."""
    if not result.has("channels"):
        reason = (result.summary.get("channels") or {}).get("reason") or "it predates them: run deepdive analyze again"
        raise DeepdiveError(f"the analysis of split {result.split!r} has no channels ({reason})")
    ch, ex = result.channels(), result.examples
    rows, values = np.asarray(ch["errors_index"], np.int64), np.asarray(ch["errors"], np.float64)
    n, k = values.shape
    order = np.argsort(-values, axis=1, kind="stable")
    channel = order.reshape(-1)
    share = np.asarray(ch["class_share"])
    r = np.repeat(rows, k)
    return pd.DataFrame({
        "row": r, "idx": ex["idx"].to_numpy()[r], "true": ex["true"].to_numpy()[r],
        "pred": ex["pred"].to_numpy()[r], "rank": np.tile(np.arange(1, k + 1), n), "channel": channel,
        "contribution": np.take_along_axis(values, order, 1).reshape(-1),
        "fires_most_for": share.argmax(1)[channel], "fires_most_for_name": names[share.argmax(1)[channel]],
        "share": share.max(1)[channel]})


def _calibration(result: AnalysisResult) -> pd.DataFrame:
    """The reliability diagram's bins, as the model's probabilities stand and after the fitted temperature."""
    c = result.summary.get("confidence") or {}
    if not c.get("available"):
        raise DeepdiveError(f"the analysis of split {result.split!r} has no calibration "
                            f"({c.get('reason') or 'it predates it: run deepdive analyze again'})")
    t = c.get("temperature")
    parts = [("model", 1.0, c["reliability"])] + ([("temperature", t["value"], t["reliability"])] if t else [])
    return pd.DataFrame([{"probabilities": which, "temperature": temp, "bin": b, **row}
                         for which, temp, bins in parts for b, row in enumerate(bins)])


def epochs_table(epochs: list[dict]) -> pd.DataFrame:
    """Table 'epochs' from Store.epochs' rows: the fixed columns, then each other metric's, sorted by name."""
    names = sorted({k for e in epochs for k in e.get("metrics", {})})
    rows = [[e.get(k) for k in EPOCH_COLUMNS] + [e.get("metrics", {}).get(k) for k in names] for e in epochs]
    frame = pd.DataFrame(rows, columns=EPOCH_COLUMNS + names)
    numbers = list(EPOCH_FIELDS) + names                  # a metric logged only as NULL is still a number column
    frame[numbers] = frame[numbers].astype("float64")
    frame["member"] = frame["member"].astype("Int64")
    return frame


def steps_table(steps: dict) -> pd.DataFrame:
    """Table 'steps' from Store.steps: step, then one float column per name, sorted by name."""
    columns = {name: pd.Series(s["value"], index=pd.Index(s["step"], dtype="int64"), dtype="float64")
               for name, s in sorted(steps.items())}
    if not columns:
        return pd.DataFrame({"step": pd.Series([], dtype="int64")})
    frame = pd.concat(columns, axis=1).sort_index()
    return frame.rename_axis("step").reset_index()


def run_table(store, run_id: str, name: str) -> pd.DataFrame:
    """One of RUN_TABLES, read from the store."""
    if name == "steps":
        return steps_table(store.steps(run_id))
    if name == "histograms":
        return histograms_table(store.histograms(run_id))
    return epochs_table(store.epochs(run_id))


def histograms_table(rows) -> pd.DataFrame:
    """Table 'histograms' from Store.histograms' rows: epoch, name, kind, lo, hi, mean, std, then one column per
    bin (b0 ...), the bins splitting [lo, hi] evenly."""
    bins = max((len(r["counts"]) for r in rows), default=0)
    head = ["epoch", "name", "kind", "lo", "hi", "mean", "std"]
    frame = pd.DataFrame([[r[k] for k in head] + list(r["counts"]) + [0] * (bins - len(r["counts"])) for r in rows],
                         columns=head + [f"b{i}" for i in range(bins)])
    return frame.sort_values(["epoch", "kind", "name"], kind="stable", ascending=[True, False, True]) \
        .reset_index(drop=True)


def export_table(result: AnalysisResult, name: str, out, fmt: str | None = None, reviews=None) -> Path:
    """Write table `name` to `out` as csv or parquet (default: from the file suffix). Returns the path."""
    _format(Path(out), fmt)     # a bad format is refused before the table is built
    return write_frame(table(result, name, reviews), out, fmt)


def _format(out: Path, fmt: str | None) -> str:
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DeepdiveError(f"unknown export format {fmt!r}; use --format csv or --format parquet")
    return fmt


def write_frame(frame: pd.DataFrame, out, fmt: str | None = None) -> Path:
    """Write `frame` to `out` atomically as csv or parquet (default: from the file suffix). Returns the path."""
    from deepdive.atomic import atomic_write_bytes

    out = Path(out)
    fmt = _format(out, fmt)
    if fmt == "csv":
        buf = io.StringIO()
        frame.to_csv(buf, index=False)
        data = buf.getvalue().encode("utf-8")
    else:
        data = frame.to_parquet(index=False)
    try:
        atomic_write_bytes(out, data)
    except OSError as e:
        raise DeepdiveError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def _named(frame: pd.DataFrame, names: np.ndarray) -> pd.DataFrame:
    """Examples with the row position first and class names beside the class numbers."""
    frame.insert(0, "row", np.arange(len(frame), dtype=np.int64))
    for col in ("true", "pred", "train_twin_label"):
        if col in frame:
            frame.insert(frame.columns.get_loc(col) + 1, f"{col}_name", names[frame[col].to_numpy()])
    return frame


def _influence(result: AnalysisResult, names: np.ndarray) -> pd.DataFrame:
    """Table 'influence': per error the training images most against its label, then most for it (TracIn,
    deepdive.analysis.influence), one line per (row, side, rank), errors most confident first."""
    inf = result.influence()
    ex = result.examples
    rows = np.asarray(inf["rows"], np.int64)
    k = np.asarray(inf["against_index"]).shape[1] if len(rows) else 0
    parts = []
    for side in ("against", "for"):
        index = np.asarray(inf[f"{side}_index"], np.int64).reshape(-1)
        r = np.repeat(rows, k)
        parts.append(pd.DataFrame({"row": r, "idx": ex["idx"].to_numpy()[r], "true": ex["true"].to_numpy()[r],
                                   "pred": ex["pred"].to_numpy()[r], "side": side,
                                   "rank": np.tile(np.arange(1, k + 1), len(rows)), "train_idx": index,
                                   "train_label": np.asarray(inf[f"{side}_label"], np.int64).reshape(-1),
                                   "score": np.asarray(inf[f"{side}_score"]).reshape(-1)}))
    frame = pd.concat(parts, ignore_index=True)
    for col in ("true", "pred", "train_label"):
        frame[f"{col}_name"] = names[frame[col].to_numpy(np.int64)]
    order = {r: i for i, r in enumerate(rows.tolist())}       # the stage's order: most confident error first
    frame["at"] = frame["row"].map(order)
    frame = frame.sort_values(["at", "side", "rank"], ascending=[True, True, True], kind="stable")
    return frame[INFLUENCE_COLUMNS].reset_index(drop=True)


def _duplicates(result: AnalysisResult, names: np.ndarray) -> pd.DataFrame:
    """Table 'duplicates': one line per near-duplicate (deepdive.analysis.duplicates), those of a training image
    (kind "train", twin: its dataset index) before those of another image of the split (kind "split", twin: its
    row), conflicting labels first, then the most similar."""
    ex = _named(result.examples.copy(), names)
    if "duplicate_of_train" not in ex:
        raise DeepdiveError(f"this analysis has no near-duplicates (analysed by an older deepdive); re-run: "
                            f"deepdive analyze {result.run_dir.name} --split {result.split}")
    parts = []
    of_train = ex[ex["duplicate_of_train"]]
    parts.append(of_train.assign(kind="train", twin=of_train["train_twin"], twin_idx=of_train["train_twin"],
                                 twin_label=of_train["train_twin_label"],
                                 similarity=of_train["train_twin_similarity"]))
    in_split = ex[ex["duplicate_in_split"]]
    twin = in_split["split_twin"].to_numpy()
    parts.append(in_split.assign(kind="split", twin=twin, twin_idx=ex["idx"].to_numpy()[twin],
                                 twin_label=ex["true"].to_numpy()[twin], similarity=in_split["split_twin_similarity"]))
    frame = pd.concat(parts, ignore_index=True)
    frame["twin_label_name"] = names[frame["twin_label"].to_numpy(np.int64)]
    frame["conflict"] = frame["twin_label"].to_numpy() != frame["true"].to_numpy()
    frame = frame.sort_values(["kind", "conflict", "similarity", "row"], ascending=[False, False, False, True],
                              kind="stable")
    return frame[DUPLICATE_COLUMNS].astype({"twin": np.int64, "twin_idx": np.int64, "twin_label": np.int64}) \
        .reset_index(drop=True)
