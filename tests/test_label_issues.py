"""Label issues: cleanlab finds labels flipped on purpose; K-fold probabilities for the train split."""
import numpy as np
import pytest

from deepdive.analysis import label_issues, tables
from deepdive.analysis.results import AnalysisResult
from deepdive.errors import DeepdiveError, RunError


def synthetic(n=1000, c=5, flips=20, seed=0):
    """Well-separated out-of-sample probabilities (a ~99% accurate model) and labels with `flips` flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    logits = rng.normal(0, 1.0, (n, c))
    logits[np.arange(n), true] += 4.0
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    flipped = rng.choice(n, flips, replace=False)
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, c, flips)) % c
    return true, given, probs.astype(np.float32), flipped


def test_flipped_labels_are_found_with_their_true_label():
    true, given, probs, flipped = synthetic()
    issues = label_issues.find_issues(given, probs)
    found = set(np.flatnonzero(issues["label_issue"]))
    # most flipped labels found (16-19 of 20 over seeds 0-4 with the calibration step), few false positives (0-2)
    assert len(found & set(flipped)) >= 16
    assert len(found - set(flipped)) <= 3
    hits = [i for i in flipped if i in found]
    # the suggested label of a found flip is the label it had before flipping
    assert (issues["suggested_label"].to_numpy()[hits] == true[hits]).mean() >= 0.9
    # flagged examples are ranked 1..k, most suspicious (lowest p[given]) first
    ranked = issues[issues["label_issue"]].sort_values("issue_rank")
    assert ranked["issue_rank"].tolist() == list(range(1, len(found) + 1))
    assert ranked["label_quality"].is_monotonic_increasing
    # label quality is cleanlab's self-confidence, p[given label], on the temperature-calibrated probabilities
    calibrated = label_issues.calibrate(given, probs)
    np.testing.assert_allclose(issues["label_quality"], calibrated[np.arange(len(given)), given], rtol=1e-5)
    # unflagged examples keep their label as the "suggestion"
    clean = ~issues["label_issue"].to_numpy()
    np.testing.assert_array_equal(issues["suggested_label"].to_numpy()[clean], given[clean])


def test_flips_are_found_when_label_smoothing_caps_confidence():
    # A model trained with label smoothing 0.1 never says more than ~0.9: without calibration confident learning
    # flags nothing (the demo run: 0 issues). Mix each distribution with 10% uniform to mimic that.
    true, given, probs, flipped = synthetic()
    smoothed = 0.85 * probs + 0.15 / probs.shape[1]
    assert smoothed.max() < 0.9
    found = set(np.flatnonzero(label_issues.find_issues(given, smoothed)["label_issue"]))
    assert len(found & set(flipped)) >= 16 and len(found - set(flipped)) <= 3


def test_calibration_keeps_predictions_and_sharpens_underconfident_probs():
    true, given, probs, _ = synthetic()
    smoothed = 0.85 * probs + 0.15 / probs.shape[1]
    calibrated = label_issues.calibrate(given, smoothed)
    np.testing.assert_array_equal(calibrated.argmax(1), smoothed.argmax(1))
    np.testing.assert_allclose(calibrated.sum(1), 1.0, rtol=1e-5)
    assert np.median(calibrated.max(1)) > np.median(smoothed.max(1))


def test_issues_table_is_ranked_and_named():
    true, given, probs, flipped = synthetic(n=300, c=3, flips=6, seed=1)
    frame = tables.predictions_frame(given, probs)
    issues = label_issues.find_issues(given, probs)
    for col in issues.columns:
        frame[col] = issues[col].to_numpy()
    table = label_issues.issues_table(frame, ["cat", "dog", "fox"])
    assert len(table) == int(issues["label_issue"].sum()) > 0
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    first = table.iloc[0]
    assert first["given_name"] == ["cat", "dog", "fox"][first["given_label"]]
    assert first["p_given"] == pytest.approx(probs[first["row"], first["given_label"]])
    assert first["p_suggested"] == pytest.approx(probs[first["row"], first["suggested_label"]])
    assert first["suggested_label"] != first["given_label"]


def test_degenerate_inputs_do_not_crash():
    # a small custom evaluation set where most classes are absent: well defined, no exception
    probs = np.full((4, 10), 0.1, np.float32)
    out = label_issues.find_issues(np.array([0, 0, 1, 1]), probs)
    assert len(out) == 4 and out["label_quality"].tolist() == pytest.approx([0.1] * 4)
    assert len(label_issues.find_issues(np.zeros(0, int), np.zeros((0, 3), np.float32))) == 0


@pytest.mark.parametrize("n", [1, 40])
def test_a_split_of_one_class_flags_nothing_and_keeps_each_labels_probability(n):
    """All images of one class (one image, or a class's own test images; cleanlab refuses one class unless it
    is class 0): nothing to learn the label noise from, so nothing is flagged; the quality is the label's
    probability (after the same sharpening as any split)."""
    _, _, probs, _ = synthetic(n=n, c=5, flips=0)
    given = np.full(n, 3)
    out = label_issues.find_issues(given, probs)
    calibrated = label_issues.calibrate(given, probs)
    assert not out["label_issue"].any() and (out["issue_rank"] == 0).all() and (out["suggested_label"] == 3).all()
    np.testing.assert_allclose(out["label_quality"], calibrated[:, 3], rtol=1e-6)


def test_training_indices_follow_the_recipe(mnist):
    from deepdive.data import split_train_val

    config = {"limit_train": 500, "resolved": {"val_size": 5000}}
    idx = label_issues.training_indices(mnist.train_labels, config)
    _, val = split_train_val(mnist.train_labels, val_size=5000, seed=0)
    assert len(idx) == 500 and np.all(np.diff(idx) > 0)
    assert not set(idx) & set(val)


def test_kfold_train_label_issues(tiny_run, copy_workspace, tmp_path, monkeypatch):
    """`deepdive analyze RUN --label-issues train --folds 2` on a small run: out-of-fold probabilities for every
    training example, stored as the run's train-split analysis."""
    from deepdive.analysis import analyze
    from deepdive.store import Store

    store = Store.open(copy_workspace(tiny_run.workspace, tmp_path / "ws"), create=False)
    # On a copy, with the run's training subset cut to 600 examples: two quick retrainings instead of two full ones.
    config = store.get_run(tiny_run.run_id).config
    store.set_config(tiny_run.run_id, {**config, "limit_train": 600})
    summary = analyze(store, tiny_run.run_id, "train", progress=False, folds=2)
    run_dir = store.get_run(tiny_run.run_id).run_dir
    res = AnalysisResult.load(run_dir, "train")
    n = store.get_run(tiny_run.run_id).config["limit_train"]
    ex = res.examples
    assert summary["n"] == len(ex) == n == len(res.images)
    assert sorted(ex["fold"].unique()) == [0, 1]
    assert abs((ex["fold"] == 0).sum() - n / 2) <= 10  # stratified halves
    assert summary["label_issues"]["source"] == "2-fold cross-validated probabilities"
    assert len(res.label_issues) == summary["label_issues"]["count"] == int(ex["label_issue"].sum())
    assert set(ex["category"]) <= {"correct", "likely label error", "ambiguous", "model-fixable"}
    assert summary["accuracy"] == pytest.approx(float(ex["correct"].mean()))
    assert "saliency" not in summary["stage_seconds"]  # no model stages on training data
    # each training image's nearest other training images, in the run's own model's features
    nb = res.neighbours()
    assert summary["neighbours"]["available"] and summary["neighbours"]["reference_size"] == n
    assert nb["index"].shape == (n, 8) and not (nb["index"] == ex["idx"].to_numpy()[:, None]).any()
    assert np.isin(nb["index"], ex["idx"]).all() and (np.diff(nb["similarity"], axis=1) <= 1e-6).all()
    # the out-of-fold probabilities' calibration and trust scores, the neighbours' agreement among them
    conf = summary["confidence"]
    assert conf["n"] == n and conf["errors"] == int((~ex["correct"]).sum()) and "neighbours" in conf["signals"]
    # how typical each training image is among the others (each without itself, as in its neighbours)
    typical = summary["neighbours"]["atypical"]
    assert typical["available"] and typical["count"] == int(ex["atypical"].sum()) < n / 10
    # each training image's nearest other training image in pixels (never itself); no split of its own to search
    dup = summary["duplicates"]
    assert dup["available"] and dup["split"] is None and dup["reference_size"] == n
    assert not (ex["train_twin"] == ex["idx"]).any() and ex["train_twin"].isin(ex["idx"]).all()
    assert dup["train"]["count"] == int(ex["duplicate_of_train"].sum())
    # a checkpoint that cannot be read costs the neighbours, not the minutes of K-fold retraining before them
    import deepdive.analysis as analysis_pkg

    def broken(run):
        raise RunError("model_best.pt is not a checkpoint")

    monkeypatch.setattr(analysis_pkg, "_load_model", broken)
    again = analyze(store, tiny_run.run_id, "train", progress=False, folds=2)
    assert again["duplicates"]["train"]["listed"] == dup["train"]["listed"]     # needs no model
    assert again["n"] == n and not again["neighbours"]["available"]
    assert set(again["confidence"]["signals"]) == {"confidence", "margin", "entropy"}   # no neighbours to agree
    assert any("not a checkpoint" in note for note in again["notes"])
    assert store.analysis(tiny_run.run_id, "train")["summary"]["n"] == n
    store.close()
    with pytest.raises(DeepdiveError, match="at least 2"):
        label_issues.cross_validated_probs(None, np.arange(10), {}, folds=1)
