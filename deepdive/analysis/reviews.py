"""People's verdicts on suspected label errors: confident learning ranks the labels to doubt, a person decides.

A review belongs to the image, not to the run it was given in: the store keys it by (dataset, source, idx), where
source is the dataset file the image lives in ('test'; 'train' for the val and train splits, whose rows index the
training file), so a verdict given while looking at one run shows on every run of that dataset. A run logged with
`log_evaluation` brings its own images, so its reviews are its own ('run:<id>/<split>').
"""
import numpy as np

from deepdive.errors import DeepdiveError


def review_source(rec, split) -> str:
    """Where the images of run record `rec`'s `split` live, as the store keys reviews."""
    from deepdive.analysis import stored_inputs

    if stored_inputs.exists(rec.run_dir / "eval", split):
        return f"run:{rec.id}/{split}"
    return "test" if split == "test" else "train"


def rows_of(examples, wanted) -> list[int | None]:
    """The row of the analysis' examples table holding each dataset index in `wanted` (None: not in this split)."""
    if not len(wanted) or not len(examples):
        return [None] * len(wanted)
    idx = examples["idx"].to_numpy()
    order = np.argsort(idx, kind="stable")
    pos = np.searchsorted(idx, np.asarray(wanted), sorter=order).clip(0, len(idx) - 1)
    return [int(row) if idx[row] == w else None for row, w in zip(order[pos], wanted)]


def reviews_by_row(store, rec, split, examples) -> dict[int, dict]:
    """{row of the analysis' examples table: review} for the images of this split that have one."""
    reviews = store.label_reviews(rec.dataset, review_source(rec, split))
    return {row: r for row, r in zip(rows_of(examples, [r["idx"] for r in reviews]), reviews) if row is not None}


def review_row(store, rec, split, examples, num_classes, row, verdict, label=None) -> dict:
    """Record a person's verdict on the image in `row` of the analysis' examples table (None: forget it)."""
    if not 0 <= row < len(examples):
        raise DeepdiveError(f"row {row} is outside 0..{len(examples) - 1}")
    if label is not None and not 0 <= label < num_classes:
        raise DeepdiveError(f"label {label} is outside 0..{num_classes - 1}")
    source, idx = review_source(rec, split), int(examples["idx"].iat[row])
    if verdict is None:
        store.delete_label_review(rec.dataset, source, idx)
        return {"row": row, "review": None}
    given = int(examples["true"].iat[row])
    review = store.set_label_review(rec.dataset, source, idx, given, verdict, label, run_id=rec.id)
    return {"row": row, "review": review}


def training_source(rec) -> str:
    """Where the training images of run record `rec` live, as the store keys reviews: the dataset's training file,
    or for a run logged with log_evaluation its own (its training set is the user's, indexed as they logged it)."""
    return f"run:{rec.id}/train" if rec.dataset == "custom" else "train"


def training_reviews(store, rec) -> dict[int, dict]:
    """{training-set index: review} of the run's training images (the training dynamics' images)."""
    return {int(r["idx"]): r for r in store.label_reviews(rec.dataset, training_source(rec))}


def review_training_image(store, rec, given_label, num_classes, idx, verdict, label=None) -> dict:
    """Record a person's verdict on training image `idx` of run record `rec`'s dataset, whose label as the dataset
    gives it is `given_label` (None: forget it). The training dynamics list these images by index, not by row."""
    if label is not None and not 0 <= label < num_classes:
        raise DeepdiveError(f"label {label} is outside 0..{num_classes - 1}")
    source = training_source(rec)
    if verdict is None:
        store.delete_label_review(rec.dataset, source, idx)
        return {"idx": idx, "review": None}
    return {"idx": idx, "review": store.set_label_review(rec.dataset, source, idx, given_label, verdict, label,
                                                         run_id=rec.id)}
