"""Near-duplicates: analysed images that (almost) repeat a training image, or another image of their own split.

A test image whose twin was trained on is not a test of generalisation (a *leaky split*, as FiftyOne Brain's
compute_leaky_splits calls it; Barz & Denzler 2020 found 3.3% of CIFAR-10's test images so), and a twin that carries
another label says one of the two labels is wrong or the picture is ambiguous. "Alike" is here the cosine similarity
of the two images' pixels as the model takes them, not of the model's features: features are trained to make every
7 resemble every other 7, while a duplicate is a fact about the data, whatever the model learnt.

What counts as a near-duplicate is cleanlab Datalab's rule (its near_duplicate issue type): a distance to the nearest
image below 0.13 x the median nearest-image distance of the analysed images, so the cut follows how close images of
this dataset usually lie. deepdive applies the rule to its own exact search (neighbours.nearest, chunked fp32)
rather than calling Datalab: Datalab finds duplicates within one dataset, and the question here is across the split
and the training images (the train split, deepdive analyze --label-issues train, is both at once).

    duplicates_stage(inputs, reference, frame, exclude=None) -> summary entry, frame columns below

Summary: train.listed [[row, training index, its label, similarity]], split.listed [[row, row, similarity]], at
most LISTED each, conflicting labels first, then the most similar. Per analysed row (examples.parquet):
train_twin (dataset index of the nearest training image), train_twin_label (as trained), train_twin_similarity,
duplicate_of_train (a near-duplicate of it); split_twin (row of the nearest other image of the split, -1 for the
train split, whose rows are the training images), split_twin_similarity, duplicate_in_split.

Measured (2026-12-06, Zen 5 host; `deepdive analyze RUN`, its `duplicates` stage): the demo (MNIST, default
preset), 7.2 s for 10,000 test images against 55,000 training images and each other: 8 test images are
near-duplicates of a training image (the cut: cosine 0.9874; the closest 0.9920), all plain straight strokes of a
1 that two writers drew alike, none a copy, none under another label; no twins within the test set. Fashion-MNIST
(a `fast` run, 91.19%), 7.8 s: 43 test images (the cut 0.9953; the closest 0.99997), by eye the same product photo
as their twin, none under another label, the model right on 93.0% of them and 91.18% of the rest; 4 pairs within
the test set.
"""
import numpy as np

from deepdive.errors import DeepdiveError

THRESHOLD = 0.13   # cleanlab Datalab's near_duplicate default: flagged below 0.13 x the median nearest distance
EXACT = 1e-6       # a cosine distance this small is the same picture (up to the float rounding of the product)
LISTED = 2000      # flagged rows (and within-split pairs) kept in the summary for the dashboard; the rest: export


def _flat(x) -> np.ndarray:
    a = np.asarray(x, np.float32)
    return a.reshape(len(a), -1)


def duplicates_stage(inputs, reference, frame, exclude=None) -> dict:
    """Find each row's nearest training image and nearest other row in pixels, flag near-duplicates by cleanlab's
    rule, add the frame columns (module docstring) and return the summary entry. inputs: the rows as the model
    takes them (N, ...); reference: deepdive.analysis.neighbours.Reference or None; exclude: the rows' own
    training-set indices when they are training images themselves (the train split)."""
    from deepdive.analysis.neighbours import nearest, without_own

    if reference is None:
        return {"available": False, "reason": "the run has no training images (logged with log_evaluation "
                                              "without train_data), so there is nothing to compare"}
    own = exclude is not None
    if len(reference.idx) < 1 + own:
        return {"available": False, "reason": "too few training images to compare with"}
    x = _flat(inputs)
    # the train split without reviews is the reference itself (as in the neighbours stage): no second copy of it
    ref = x if own and np.array_equal(reference.idx, exclude) else _flat(reference.model_inputs())
    if x.shape[1] != ref.shape[1]:
        raise DeepdiveError(f"the analysed images have {x.shape[1]} values each and the training images "
                            f"{ref.shape[1]}: they cannot be compared")
    n = len(x)
    # a search within the split too, but for the train split, whose rows are the reference: the search of the
    # training images already gives each its nearest other one
    within = not own and n >= 2
    pos, sims = nearest(x, ref, k=1 + own)
    if own:   # leave each row's own image out, as the neighbours stage does
        pos, sims = without_own(pos, sims, reference.idx[pos] == np.asarray(exclude, np.int64)[:, None], 1)
    train_idx = reference.idx[pos[:, 0]]
    train_sim = np.minimum(sims[:, 0], 1.0)
    if not within:
        split_row, split_sim = np.full(n, -1, np.int64), np.full(n, np.nan, np.float32)
    else:
        spos, ssims = nearest(x, x, k=2)
        # a row's own image is its first unless an exact twin ties with it: take the first that is not the row
        first_other = np.where(spos[:, 0] == np.arange(n), 1, 0)
        split_row = spos[np.arange(n), first_other]
        split_sim = np.minimum(ssims[np.arange(n), first_other], 1.0)

    dist = 1.0 - np.fmax(train_sim, np.nan_to_num(split_sim, nan=-1.0)).astype(np.float64)
    scale = float(max(np.median(dist), EXACT)) if n else 0.0
    cut = THRESHOLD * scale
    of_train = (1.0 - train_sim) < cut
    in_split = np.nan_to_num(1.0 - split_sim, nan=np.inf) < cut

    labels = reference.labels
    twin_label = labels[train_idx].astype(np.int64)
    frame["train_twin"] = train_idx.astype(np.int64)
    frame["train_twin_label"] = twin_label
    frame["train_twin_similarity"] = train_sim.astype(np.float32)
    frame["duplicate_of_train"] = of_train
    frame["split_twin"] = split_row.astype(np.int64)
    frame["split_twin_similarity"] = split_sim.astype(np.float32)
    frame["duplicate_in_split"] = in_split

    true, pred = frame["true"].to_numpy(), frame["pred"].to_numpy()
    correct = true == pred
    conflict = of_train & (twin_label != true)
    # listed: conflicting labels first, then the most similar
    flagged = np.flatnonzero(of_train)
    flagged = flagged[np.lexsort((-train_sim[flagged], ~conflict[flagged]))]
    entry = {"available": True, "space": "pixels", "measure": "cosine similarity of the images as the model "
             "takes them", "rule": f"distance to the nearest image below {THRESHOLD:g} x the median nearest-image "
             "distance (cleanlab Datalab's near_duplicate rule)", "threshold": THRESHOLD, "scale": scale,
             "similarity_cut": 1.0 - cut, "reference": reference.name, "reference_size": int(len(reference.idx)),
             "closest": float(train_sim.max()) if n else None,
             "train": {"count": int(of_train.sum()), "exact": int((of_train & (train_sim >= 1 - EXACT)).sum()),
                       "conflicts": int(conflict.sum()), "errors": int((of_train & ~correct).sum()),
                       "accuracy_duplicates": float(correct[of_train].mean()) if of_train.any() else None,
                       "accuracy_rest": float(correct[~of_train].mean()) if (~of_train).any() else None,
                       "listed": [[int(r), int(train_idx[r]), int(twin_label[r]), round(float(train_sim[r]), 6)]
                                  for r in flagged[:LISTED]]}}
    if not within:
        entry["split"] = None
    else:
        a = np.flatnonzero(in_split)
        ends = np.sort(np.stack([a, split_row[a]], 1), axis=1)
        # a pair found from both of its ends is one pair; its similarity is the same from either
        pair, first = np.unique(ends, axis=0, return_index=True) if len(a) else (np.zeros((0, 2), np.int64), a)
        pair_sim = split_sim[a[first]]
        pair_conflict = true[pair[:, 0]] != true[pair[:, 1]]
        order = np.lexsort((-pair_sim, ~pair_conflict))
        entry["split"] = {"count": int(in_split.sum()), "pairs_total": int(len(pair)),
                          "conflicts": int(pair_conflict.sum()),
                          "exact": int((pair_sim >= 1 - EXACT).sum()),
                          "listed": [[int(p), int(q), round(float(v), 6)]
                                     for (p, q), v in zip(pair[order][:LISTED], pair_sim[order][:LISTED])]}
    return entry
