"""Training dynamics (deepdive.analysis.dynamics, recorded by deepdive.train.recipe): what the recipe keeps per
training image and epoch, the readings made of it, and that they find labels flipped on purpose."""

import numpy as np
import pytest
import torch

from deepdive.analysis import dynamics
from deepdive.train import recipe


def test_answer_signals_are_the_labels_probability_margin_and_the_answer():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    p_true, margin, pred = recipe.answer_signals(logits, labels)
    probs = torch.softmax(logits, 1)
    assert torch.allclose(p_true, torch.stack([probs[0, 0], probs[1, 2]]))
    assert torch.allclose(margin, torch.tensor([2.0 - 0.5, 1.0 - 3.0]))    # label's logit less the largest other
    assert pred.tolist() == [0.0, 1.0]


def _dynamics(p_true, pred, label, member=None, margin=None):
    p_true = np.asarray(p_true, np.float16)
    pred = np.asarray(pred, np.int16)
    rows, n = p_true.shape
    return {"p_true": p_true, "margin": np.asarray(margin if margin is not None else p_true - 0.5, np.float16),
            "pred": pred, "epoch": np.arange(1, rows + 1, dtype=np.int16),
            "member": np.asarray(member if member is not None else [0] * rows, np.int16),
            "idx": np.arange(100, 100 + n), "label": np.asarray(label), "given": np.asarray(label)}


def test_image_table_counts_forgetting_learning_and_skips_epochs_an_image_was_not_trained_in():
    # rows: epochs, columns: images, all labelled 1
    # image 0: right, taken for 0, right, right -> forgotten once, learned for good at epoch 3, leaning 0
    # image 1: taken for 2 throughout -> never learned, leaning 2
    # image 2: right, not trained (pruned), right, right -> never forgotten, learned at 1, 3 epochs
    label = [1, 1, 1]
    pred = [[1, 2, 1], [0, 2, -1], [1, 2, 1], [1, 2, 1]]
    p = [[0.9, 0.1, 0.8], [0.2, 0.1, 0.0], [0.9, 0.2, 0.9], [0.95, 0.1, 0.9]]
    t = dynamics.image_table(_dynamics(p, pred, label)).set_index("idx")
    assert t["forgets"].tolist() == [1, 0, 0]
    assert t.loc[100, "learned"] == 3 and np.isnan(t.loc[101, "learned"]) and t.loc[102, "learned"] == 1
    assert t["leaning"].tolist() == [0, 2, -1]
    assert t["epochs"].tolist() == [4, 4, 3]
    assert t.loc[102, "confidence"] == pytest.approx(np.mean([0.8, 0.9, 0.9]), abs=1e-3)   # the pruned epoch left out
    assert t.loc[101, "correctness"] == 0 and t.loc[100, "correctness"] == 0.75
    assert t.loc[101, "region"] == "hard" and t.loc[102, "region"] == "easy"
    assert t.loc[100, "variability"] >= dynamics.AMBIGUOUS_VARIABILITY and t.loc[100, "region"] == "ambiguous"
    assert list(dynamics.flagged(t.reset_index())["idx"]) == [101]    # the only negative AUM


def test_an_ensemble_learns_an_image_for_good_only_when_every_member_does():
    # two members of two epochs each (rows: epochs, columns: images, both labelled 0); image 0 learned by member 0
    # at its epoch 2 and by member 1 at its epoch 1; image 1 learned by member 0, then forgotten by member 1
    pred = [[1, 0], [0, 0], [0, 0], [0, 1]]
    t = dynamics.image_table(_dynamics(np.full((4, 2), 0.6), pred, [0, 0], member=[0, 0, 1, 1]))
    assert t["learned"].tolist()[0] == 2 and np.isnan(t["learned"].tolist()[1])
    assert t["forgets"].tolist() == [0, 1]   # within a member only: member 1 does not inherit member 0's answers
    assert [c["member"] for c in dynamics.epoch_curve(_dynamics(np.full((4, 2), 0.6), pred, [0, 0],
                                                                member=[0, 0, 1, 1]))] == [0, 0, 1, 1]


def test_the_recorder_keeps_each_images_first_answer_per_epoch_and_pads_images_first_seen_later():
    rec = dynamics.Recorder()
    assert rec.arrays() is None and not rec.pending
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    rec.add(torch.tensor([3, 0, 3]), logits, torch.tensor([0, 2, 0]))      # image 3 twice: its first answer stays
    rec.end_epoch(1)
    rec.end_epoch(2)                                                      # nothing logged since: no epoch
    rec.add([5], logits[2:], [2])                                         # image 5 first seen in epoch 3
    rec.end_epoch(3)
    d = rec.arrays()
    expected = recipe.answer_signals(logits, torch.tensor([0, 2, 2])).numpy()
    assert d["idx"].tolist() == [0, 3, 5] and d["label"].tolist() == d["given"].tolist() == [2, 0, 2]
    assert d["epoch"].tolist() == [1, 3] and d["member"].tolist() == [0, 0]
    assert d["pred"].tolist() == [[1, 0, -1], [-1, -1, 2]]
    np.testing.assert_allclose(d["p_true"][0, :2].astype(np.float32), expected[0, [1, 0]], rtol=1e-3)
    np.testing.assert_allclose(d["margin"][1, 2].astype(np.float32), expected[1, 2], rtol=1e-3)
    assert np.isnan(d["p_true"][0, 2]) and np.isnan(d["margin"][1, 0])
    table = dynamics.image_table(d)
    assert table["epochs"].tolist() == [1, 1, 1] and table["forgets"].tolist() == [0, 0, 0]


def test_load_says_what_is_wrong_with_a_broken_file(tmp_path):
    from deepdive.errors import RunError
    from deepdive.paths import DYNAMICS

    assert dynamics.load(tmp_path) is None
    (tmp_path / DYNAMICS).write_bytes(b"not a zip")
    with pytest.raises(RunError, match="cannot read the training dynamics"):
        dynamics.load(tmp_path)
    np.savez(tmp_path / DYNAMICS, p_true=np.zeros((2, 3)))
    with pytest.raises(RunError, match="missing margin"):
        dynamics.load(tmp_path)
    good = _dynamics(np.full((2, 3), 0.5), np.zeros((2, 3)), [0, 0, 0])
    np.savez(tmp_path / DYNAMICS, **{**good, "idx": np.arange(4)})
    with pytest.raises(RunError, match="shapes do not match"):
        dynamics.load(tmp_path)
    np.savez(tmp_path / DYNAMICS, **good)
    assert dynamics.load(tmp_path)["p_true"].shape == (2, 3)


def test_a_trained_run_keeps_every_training_images_answer_at_its_step(tiny_run, mnist):
    from deepdive.analysis.label_issues import training_indices

    d = dynamics.load(tiny_run.run_dir)
    run = tiny_run.store.get_run(tiny_run.run_id)
    idx = training_indices(mnist.train_labels, run.config)
    assert np.array_equal(d["idx"], idx) and np.array_equal(d["label"], mnist.train_labels[idx])
    assert d["p_true"].shape == d["pred"].shape == (1, len(idx)) and d["epoch"].tolist() == [1]
    seen = d["pred"][0] >= 0
    # an epoch drops the batch's ragged tail (fixed shapes): at most one batch of images is not trained in it
    assert seen.sum() > len(idx) - 256
    p = d["p_true"][0][seen].astype(np.float32)
    assert np.all((p >= 0) & (p <= 1))
    right = d["pred"][0][seen] == d["label"][seen]
    margin = d["margin"][0][seen]
    untied = margin != 0    # the zero-initialised head's first steps give every class the same logit
    assert np.array_equal(right[untied], margin[untied] > 0)   # a positive margin exactly where it answered right
    assert 0.3 < right.mean() < 1.0                          # one epoch of 3000 images: mostly right, not all


def test_recording_the_dynamics_does_not_change_the_training(mnist, monkeypatch):
    """The signals are read off the step's logits without gradient: a run with them replaced by zeros trains
    to the same weights bit for bit."""
    kw = dict(epochs=1, limit_train=600, device="cpu", progress=False)
    with_dynamics = recipe.train(mnist, "fast", **kw)
    monkeypatch.setattr(recipe, "answer_signals", lambda logits, labels: torch.zeros(3, len(labels)))
    without = recipe.train(mnist, "fast", **kw)
    a, b = with_dynamics.checkpoint["state_dict"], without.checkpoint["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flipped_labels_sink_to_a_negative_area_under_the_margin(mnist):
    """40 of 2,000 training images trained under another label (as reviewed labels: the validation split stays
    the one drawn from the labels as given): the run's AUM ranks them first. Measured (Zen 5 host): in bf16 all 40
    have a negative AUM (of 90 images that do) and 36 are among the 40 lowest; in fp32 39 (of 91) and 37."""
    from deepdive.analysis.label_issues import training_indices

    rng = np.random.default_rng(1)
    idx = training_indices(mnist.train_labels, {"limit_train": 2000})
    flipped = np.sort(rng.choice(idx, 40, replace=False))
    wrong = (mnist.train_labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    result = recipe.train(mnist, "fast", epochs=4, limit_train=2000, device="cpu", progress=False,
                          reviewed_labels={"relabel": {int(i): int(c) for i, c in zip(flipped, wrong)}})
    table = dynamics.image_table(result.dynamics)
    assert np.array_equal(table["idx"], idx) and np.array_equal(table["given"], mnist.train_labels[idx])
    assert np.array_equal(np.flatnonzero(table["label"] != table["given"]), np.searchsorted(idx, flipped))
    low = set(table.loc[table["aum"] < 0, "idx"])
    caught = len(low & set(flipped.tolist()))
    assert caught >= 36, f"only {caught} of the 40 flipped labels have a negative AUM"
    assert len(low) <= 120, f"{len(low)} images with a negative AUM"
    # ranked: the 40 lowest AUMs are mostly the 40 flipped images; after 4 short epochs some hard images with
    # their right label have a negative AUM too, mostly ranked below them
    top = set(dynamics.flagged(table).head(40)["idx"])
    assert len(top & set(flipped.tolist())) >= 32, f"{len(top & set(flipped.tolist()))} of the lowest 40 AUMs"


def test_the_analysis_summarises_and_exports_the_dynamics(analyzed_run, res):
    from deepdive.analysis.cli import text_summary
    from deepdive.analysis.export import table

    dyn = analyzed_run.summary["dynamics"]
    assert dyn["available"] and dyn["epochs"] == 1 and dyn["members"] == 1
    assert sum(dyn["regions"].values()) == dyn["images"] == len(res.dynamics())
    assert dyn["negative_aum"] == int((res.dynamics()["aum"] < 0).sum())
    assert [c["class"] for c in dyn["per_class"]] == list(range(10))
    text = text_summary(analyzed_run.summary, analyzed_run.workspace)
    first = dyn["lowest"][0]
    assert "training dynamics of" in text and f"#{first['idx']} labelled {res.class_names[first['given']]}" in text
    assert [t["idx"] for t in dyn["lowest"]] == dyn["flagged"][:len(dyn["lowest"])]
    out = table(res, "dynamics")
    assert out["aum"].is_monotonic_increasing and len(out) == dyn["images"]
    assert (out.loc[out["leaning"] < 0, "leaning_name"] == "none").all()
    assert out["given_name"].tolist() == [res.class_names[c] for c in out["given"]]
    assert (out["verdict"] == "none").all() and (out["verdict_label"] == -1).all()
    reviewed = table(res, "dynamics", {first["idx"]: {"verdict": "relabel", "label": 4},
                                       int(out["idx"].iat[-1]): {"verdict": "keep", "label": None}})
    assert reviewed["verdict"].iloc[[0, -1]].tolist() == ["relabel", "keep"]
    assert (reviewed["verdict"] != "none").sum() == 2
    assert reviewed.at[0, "verdict_label"] == 4 and reviewed.at[0, "verdict_label_name"] == res.class_names[4]
    assert (reviewed["verdict_label"].iat[-1], reviewed["verdict_label_name"].iat[-1]) == (-1, "none")


def test_a_run_without_dynamics_says_why(tmp_path):
    entry = dynamics.dynamics_stage(tmp_path, ["a", "b"])
    assert entry == {"available": False, "reason": entry["reason"]} and "kept no training dynamics" in entry["reason"]
