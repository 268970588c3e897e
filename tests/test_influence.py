"""The training images behind each mistake (deepdive.analysis.influence): Captum's TracIn scores are the product of
the two loss gradients at the last layer, computed here by hand; what the tiny run's analysis stores, exports and
serves."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from deepdive.analysis import export
from deepdive.analysis.influence import LISTED, behind, influence_scores, influence_stage
from deepdive.analysis.neighbours import Reference


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def by_hand(model, x, y, tx, ty, smoothing):
    """TracIn at one checkpoint, last layer: <dl/dz, dl'/dz'> <h, h'> (z: the logits, h: the last layer's input)."""
    def parts(inputs, labels, loss):
        h = model[:-1](inputs).detach()
        z = model[-1](h).detach().requires_grad_(True)
        grad, = torch.autograd.grad(loss(z, labels), z)
        return grad, h
    g, h = parts(x, y, nn.CrossEntropyLoss(reduction="sum"))
    tg, th = parts(tx, ty, nn.CrossEntropyLoss(reduction="sum", label_smoothing=smoothing))
    return (g @ tg.T) * (h @ th.T)


def test_the_scores_are_the_last_layers_gradient_products():
    model = small_net().eval()
    rng = np.random.default_rng(0)
    x, tx = (torch.from_numpy(rng.random((n, 1, 8, 8), np.float32)) for n in (3, 2500))   # two TracIn batches
    y, ty = torch.tensor([0, 1, 4]), torch.from_numpy(rng.integers(0, 5, 2500))
    got = influence_scores(model, x, y, tx, ty, label_smoothing=0.1)
    assert got.shape == (3, 2500)
    torch.testing.assert_close(got, by_hand(model, x, y, tx, ty, 0.1), rtol=1e-4, atol=1e-5)
    assert model.training is False and all(p.grad is None for p in model[:-1].parameters())


@pytest.mark.parametrize("last", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)], ids=["softmax", "log_softmax"])
def test_a_model_ending_in_softmax_scores_as_its_logits_do(last):
    """Captum takes the loss gradient at the model's output for the last Linear layer's: a softmax after that
    layer must not bend it (its probabilities are read back as logits, as predict() reads them)."""
    model = small_net().eval()
    rng = np.random.default_rng(1)
    x, tx = (torch.from_numpy(rng.random((n, 1, 8, 8), np.float32)) for n in (3, 50))
    y, ty = torch.tensor([0, 1, 4]), torch.from_numpy(rng.integers(0, 5, 50))
    got = influence_scores(nn.Sequential(model, last).eval(), x, y, tx, ty, label_smoothing=0.1)
    torch.testing.assert_close(got, by_hand(model, x, y, tx, ty, 0.1), rtol=1e-4, atol=1e-5)


def test_the_stage_keeps_the_most_against_and_for_each_error(tmp_path):
    model = small_net().eval()
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    labels = np.concatenate([np.full(40, 9), rng.integers(0, 5, 60)])   # dataset indices 40..99 are the training set
    reference = Reference(images=np.concatenate([np.zeros((40, 8, 8), np.uint8), train]), labels=labels,
                          idx=np.arange(40, 100), name="planted training images")
    inputs = rng.random((6, 1, 8, 8), np.float32)
    truth = np.array([0, 1, 2, 3, 4, 0])
    entry = influence_stage(model, inputs, truth, [4, 1], reference, 0.1, tmp_path, doubted=[41])
    assert entry["available"] and entry["errors"] == 2 and entry["k"] == 8
    stored = {name: np.load(tmp_path / "influence" / f"{name}.npy") for name in
              ("rows", "against_index", "against_label", "against_score", "for_index", "for_label", "for_score")}
    assert stored["rows"].tolist() == [4, 1]
    scores = by_hand(model, torch.from_numpy(inputs[[4, 1]]), torch.from_numpy(truth[[4, 1]]),
                     reference.model_inputs(), torch.from_numpy(labels[40:]), 0.1).numpy()
    for k in range(2):
        order = np.argsort(scores[k])
        assert stored["against_index"][k].tolist() == (40 + order[:8]).tolist()
        assert stored["for_index"][k].tolist() == (40 + order[::-1][:8]).tolist()
        np.testing.assert_allclose(stored["against_score"][k], scores[k][order[:8]], rtol=1e-4, atol=1e-5)
        assert stored["against_label"][k].tolist() == labels[stored["against_index"][k]].tolist()
    # behind: the training images among the 8 against the most errors, most errors first
    listed = entry["behind"]
    counts = {}
    for row in stored["against_index"].tolist():
        for i in row:
            counts[i] = counts.get(i, 0) + 1
    assert [b[2] for b in listed] == sorted([b[2] for b in listed], reverse=True)
    assert all(counts[b[0]] == b[2] and b[1] == labels[b[0]] and b[4] == (b[0] == 41) for b in listed)
    assert len(listed) == min(LISTED, len(counts))
    # without training images or for an ensemble: unavailable, with the reason
    assert not influence_stage(model, inputs, truth, [4], None, 0.0, tmp_path)["available"]


def test_behind_of_no_errors_is_empty():
    assert behind(np.zeros((0, 8), np.int64), np.zeros((0, 8)), None) == []


def test_the_analysis_stores_exports_and_serves_them(res, analyzed_run, client):
    entry = res.summary["influence"]
    errors = res.summary["focus"]["errors"]
    assert entry["available"] and entry["errors"] == len(errors) > 0 and "influence" in res.summary["stage_seconds"]
    inf = res.influence()
    assert inf["rows"].tolist() == errors
    assert (np.diff(inf["against_score"], axis=1) >= 0).all() and (np.diff(inf["for_score"], axis=1) <= 0).all()
    table = export.table(res, "influence")
    k = entry["k"]
    assert len(table) == 2 * k * len(errors) and list(table.columns) == export.INFLUENCE_COLUMNS
    first = table[table["row"] == errors[0]]
    assert first["side"].tolist() == ["against"] * k + ["for"] * k
    assert first["train_idx"].tolist() == [*inf["against_index"][0].tolist(), *inf["for_index"][0].tolist()]
    base = f"/api/runs/{analyzed_run.run_id}/splits/test"
    got = client.get(f"{base}/influence/{errors[0]}")
    assert got.status_code == 200
    body = got.json()
    assert [item["idx"] for item in body["against"]] == inf["against_index"][0].tolist()
    assert all(item["image"].startswith("data:image/png;base64,") for item in body["against"] + body["for"])
    right = int(np.flatnonzero(res.examples["correct"].to_numpy())[0])
    missing = client.get(f"{base}/influence/{right}")
    assert missing.status_code == 404 and "not one of the" in missing.json()["detail"]
    bundle = client.get(f"{base}/bundle").json()["influence"]
    assert bundle["rows"] == errors and len(bundle["against"]) == len(errors)
    assert set(bundle["pictures"]) == {str(b[0]) for b in entry["behind"]}


@pytest.mark.parametrize("kind", ["ensemble"])
def test_an_ensemble_has_none(kind, tmp_path):
    from deepdive.models import Ensemble

    model = Ensemble([small_net(), small_net()])
    reference = Reference(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, np.int64), idx=np.arange(4),
                          name="x")
    entry = influence_stage(model, np.zeros((1, 1, 8, 8), np.float32), [0], [0], reference, 0.0, tmp_path)
    assert not entry["available"] and "ensemble" in entry["reason"]


def test_errors_in_groups_score_as_in_one_pass(tmp_path, monkeypatch):
    """Many errors against many training images go in groups (SCORES bounds the score matrix): the same result."""
    from deepdive.analysis import influence

    model = small_net().eval()
    rng = np.random.default_rng(3)
    reference = Reference(images=rng.integers(0, 256, (50, 8, 8), dtype=np.uint8), labels=rng.integers(0, 5, 50),
                          idx=np.arange(50), name="x")
    inputs, truth = rng.random((7, 1, 8, 8), np.float32), rng.integers(0, 5, 7)
    one = influence_stage(model, inputs, truth, range(7), reference, 0.0, tmp_path / "one")
    monkeypatch.setattr(influence, "SCORES", 50 * 3)                 # three errors per pass: three passes
    grouped = influence_stage(model, inputs, truth, range(7), reference, 0.0, tmp_path / "grouped")
    assert [b[:3] for b in one["behind"]] == [b[:3] for b in grouped["behind"]]
    np.testing.assert_allclose([b[3] for b in grouped["behind"]], [b[3] for b in one["behind"]], rtol=1e-5)
    for name in ("rows", "against_index", "for_index", "against_score"):
        np.testing.assert_allclose(np.load(tmp_path / "grouped" / "influence" / f"{name}.npy"),
                                   np.load(tmp_path / "one" / "influence" / f"{name}.npy"), rtol=1e-6, err_msg=name)
