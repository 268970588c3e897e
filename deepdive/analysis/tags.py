"""Tags: words a person puts on images in the dashboard ("blurry", "check later", "for the slides"), as FiftyOne's
sample tags, to gather images across views, filter the predictions by them and export them.

Like a review of a label (deepdive.analysis.reviews), a tag belongs to the image, not to the run it was given in:
the store keys it by (dataset, source, idx), so an image tagged while looking at one run shows its tags on every
run of that dataset; a run logged with `log_evaluation` brings its own images, so their tags are its own.
"""
from deepdive.analysis.reviews import review_source, rows_of, training_source
from deepdive.errors import DeepdiveError


def tags_by_row(store, rec, split, examples, full=False) -> dict[int, list]:
    """{row of the analysis' examples table: its tags, sorted} for the images of this split that have any; with
    full=True each tag as the store keeps it ({tag, tagged_at, run_id, ...})."""
    tags = store.image_tags(rec.dataset, review_source(rec, split))
    out = {}
    for row, t in zip(rows_of(examples, [t["idx"] for t in tags]), tags):
        if row is not None:
            out.setdefault(row, []).append(t if full else t["tag"])
    return out


def training_tags(store, rec) -> dict[int, list]:
    """{training-set index: its tags, sorted} of the run's training images (the training dynamics' images) that
    have any: the same images as the val split's, keyed alike."""
    out = {}
    for t in store.image_tags(rec.dataset, training_source(rec)):
        out.setdefault(int(t["idx"]), []).append(t["tag"])
    return out


def tag_training_image(store, rec, idx, tag, remove=False) -> dict:
    """Put `tag` on training image `idx` of run record `rec`'s dataset (remove=True: take it off); returns
    {idx, tags: the image's tags now}."""
    tag_training_images(store, rec, [idx], tag, remove)
    return {"idx": idx, "tags": sorted(t["tag"] for t in store.image_tags(rec.dataset, training_source(rec),
                                                                           idx=idx))}


def tag_training_images(store, rec, idxs, tag, remove=False) -> int:
    """Put `tag` on the training images `idxs` (a selection in the data map), or take it off, in one transaction;
    returns how many images changed."""
    if remove:
        return store.remove_tag(rec.dataset, training_source(rec), idxs, tag)
    return store.add_tag(rec.dataset, training_source(rec), idxs, tag, run_id=rec.id)


def tag_row(store, rec, split, examples, row, tag, remove=False) -> dict:
    """Put `tag` on the image in `row` of the analysis' examples table (remove=True: take it off); returns
    {row, tags: the image's tags now}."""
    tag_rows(store, rec, split, examples, [row], tag, remove)
    idx = int(examples["idx"].iat[row])
    return {"row": row, "tags": sorted(t["tag"] for t in store.image_tags(rec.dataset, review_source(rec, split),
                                                                           idx=idx))}


def tag_rows(store, rec, split, examples, rows, tag, remove=False) -> int:
    """Put `tag` on the images in `rows` (a list, e.g. every image a filter lists), or take it off, in one
    transaction; returns how many images changed."""
    rows = [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < len(examples)]
    if bad:
        raise DeepdiveError(f"row {bad[0]} is outside 0..{len(examples) - 1}")
    source, idx = review_source(rec, split), examples["idx"].to_numpy()[rows]
    if remove:
        return store.remove_tag(rec.dataset, source, idx, tag)
    return store.add_tag(rec.dataset, source, idx, tag, run_id=rec.id)
