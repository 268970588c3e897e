"""Robustness probes, ranked augmentation advice, and verification by retraining."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from deepdive.analysis import advice
from deepdive.analysis.cli import verification_text
from deepdive.errors import DeepdiveError
from deepdive.train import augment


def side_model():
    """2 classes on 28×28: class 1 when the ink's mass lies right of the centre column, else class 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2, bias=False))
    offset = (torch.arange(28, dtype=torch.float32) - 13.5).repeat(28, 1).flatten()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([-offset, offset]))
    return model.eval()


def blob_images():
    """Class 0: 4×4 blobs one pixel left of the centre; class 1: one pixel right. Five class-0 blobs sit high
    in the image, where a ±10°/±20° turn or a 15° slant carries them across the centre column; the rest sit on
    the centre row, where turning hardly moves them sideways and slanting not at all. A 2 px shift to the right flips every class-0 blob."""
    x = torch.zeros(40, 1, 28, 28)
    for i in range(20):
        top = 5 if i < 5 else 12
        x[i, 0, top:top + 4, 11:15] = 1.0  # columns 11..14: centre of mass 12.5
        x[20 + i, 0, 12:16, 13:17] = 1.0  # columns 13..16: 14.5
    return x, np.repeat([0, 1], 20)


def test_probes_report_per_class_accuracy_per_perturbation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    x, y = torch.rand(50, 1, 28, 28), np.arange(50) % 3
    probes = advice.robustness_probes(model, x, y, num_classes=4)
    ids = [p["id"] for p in probes["perturbations"]]
    assert ids == [p.id for p in advice.PERTURBATIONS] and ids[0] == "none"
    assert probes["n"] == probes["n_total"] == 50 and not probes["sampled"] and probes["note"] is None
    assert probes["class_counts"] == [17, 17, 16, 0]
    for p in probes["perturbations"]:
        assert 0 <= p["accuracy"] <= 1
        assert all(0 <= a <= 1 for a in p["per_class_accuracy"][:3]) and p["per_class_accuracy"][3] is None
    with torch.no_grad():
        base = (model(x).argmax(1).numpy() == y)
    assert probes["perturbations"][0]["accuracy"] == pytest.approx(base.mean())
    assert probes["perturbations"][0]["per_class_accuracy"][1] == pytest.approx(base[y == 1].mean())


def test_probes_on_crafted_model_and_sampling():
    x, y = blob_images()
    probes = advice.robustness_probes(side_model(), x, y, num_classes=2)
    by_id = {p["id"]: p for p in probes["perturbations"]}
    assert by_id["none"]["accuracy"] == 1.0
    assert by_id["shift+x"]["per_class_accuracy"] == [0.0, 1.0] and by_id["shift+x"]["confusions"] == [[0, 1, 20]]
    assert by_id["shift-x"]["confusions"] == [[1, 0, 20]]
    assert by_id["rotate+10"]["confusions"] == [[0, 1, 5]] or by_id["rotate-10"]["confusions"] == [[0, 1, 5]]
    sampled = advice.robustness_probes(side_model(), x, y, num_classes=2, max_examples=10)
    assert sampled["sampled"] and sampled["n"] == 10 and sampled["n_total"] == 40 and sampled["class_counts"] == [5, 5]
    note = advice.robustness_probes(side_model(), x * 3 - 1, y, num_classes=2)["note"]
    assert "not [0, 1]" in note


def test_recommend_ranks_the_perturbation_that_hurts_the_pair_first():
    x, y = blob_images()
    probes = advice.robustness_probes(side_model(), x, y, num_classes=2)
    ranked = advice.recommend(probes, [{"true": 0, "pred": 1, "count": 4, "indices": []}])
    assert [s["id"] for s in ranked][:1] == ["shift-2"]
    assert {s["id"] for s in ranked[1:]} == {"rotate-10", "rotate-20", "shear-15"}  # 5 of 20; nothing else hurts
    top = ranked[0]
    assert top["rank"] == 1 and top["overrides"] == {"augment": {"shift": 2}}
    assert top["score"] == pytest.approx(1.0) and ranked[1]["score"] == pytest.approx(0.25)
    assert top["text"].startswith("shift ±2 px: 0→1 confusions rise 0→20 of 20 probed 0s")
    assert "class 0 accuracy drops 100.0%→0.0%" in top["text"]
    assert top["evidence"]["pairs"][0]["weight"] == 1.0 and top["evidence"]["pairs"][0]["after"] == 20


def test_probes_list_the_images_they_break_by_their_row():
    x, y = blob_images()
    by_id = {p["id"]: p for p in advice.robustness_probes(side_model(), x, y, num_classes=2)["perturbations"]}
    assert by_id["none"]["broken"] == [] and by_id["none"]["broken_count"] == 0
    assert by_id["shift+x"]["broken"] == [[r, 1] for r in range(20)] and by_id["shift+x"]["broken_count"] == 20
    assert by_id["shift-x"]["broken"] == [[r, 0] for r in range(20, 40)]
    # on a sample, rows are still the inputs' rows: the sampled class-0 blobs
    sampled = advice.robustness_probes(side_model(), x, y, num_classes=2, max_examples=10)
    rows = advice.stratified_sample(y, 10)
    shifted = next(p for p in sampled["perturbations"] if p["id"] == "shift+x")
    assert shifted["broken"] == [[int(r), 1] for r in rows if y[r] == 0]


def test_broken_examples_take_each_rising_confusion_in_turn_and_show_the_image_as_probed():
    x, y = blob_images()
    probes = advice.robustness_probes(side_model(), x, y, num_classes=2)
    ranked = advice.recommend(probes, [{"true": 0, "pred": 1, "count": 4}, {"true": 1, "pred": 0, "count": 2}])
    pictures = advice.broken_examples(x, y, probes, ranked, per_suggestion=4)
    shift = next(s for s in ranked if s["id"] == "shift-2")
    assert shift["broken"] == 40     # shift right breaks every 0, shift left every 1
    # one of each rising confusion (0→1 first, the larger), then a second of each
    assert [(e["row"], e["probe"], e["pred"]) for e in shift["examples"]] == [
        (0, "shift+x", 1), (20, "shift-x", 0), (1, "shift+x", 1), (21, "shift-x", 0)]
    rotate = next(s for s in ranked if s["id"] == "rotate-20")
    assert {e["row"] for e in rotate["examples"]} <= set(range(5))     # only the high blobs turn across
    assert pictures.dtype == np.uint8 and len(pictures) == sum(len(s["examples"]) for s in ranked)
    first = shift["examples"][0]
    as_probed = np.rint(augment.shift(x[0:1], 2, 0)[0, 0].numpy() * 255).astype(np.uint8)
    assert np.array_equal(pictures[first["image"]], as_probed) and not np.array_equal(as_probed, x[0, 0] * 255)
    assert advice.broken_examples(x, y, probes, [], per_suggestion=4) is None


def test_recommend_on_a_probe_dict_and_recipe_coverage():
    def run(pid, confusions, acc):
        return {"id": pid, "label": pid, "accuracy": acc, "per_class_accuracy": [acc] * 10, "confusions": confusions}

    probes = {"n": 1000, "class_counts": [100] * 10, "sampled": False, "perturbations": [
        run(p.id, [[7, 1, 3], [4, 9, 2]], 0.99) for p in advice.PERTURBATIONS]}
    by_id = {p["id"]: p for p in probes["perturbations"]}
    by_id["rotate+20"]["confusions"] = [[7, 1, 41], [4, 9, 2]]
    by_id["rotate+10"]["confusions"] = [[7, 1, 9], [4, 9, 2]]
    by_id["thin"]["confusions"] = [[7, 1, 3], [4, 9, 30]]
    top = [{"true": 7, "pred": 1, "count": 3}, {"true": 4, "pred": 9, "count": 2}]
    ranked = advice.recommend(probes, top)
    assert [s["id"] for s in ranked] == ["rotate-20", "thin", "rotate-10"]
    assert "7→1 confusions rise 3→41 of 100 probed 7s" in ranked[0]["text"]
    # a recipe that already rotates by 20° moves both rotation suggestions behind the new one
    ranked = advice.recommend(probes, top, current_augment={"rotate": 20, "shift": 2})
    assert [(s["id"], s["in_recipe"]) for s in ranked] == [("thin", False), ("rotate-20", True), ("rotate-10", True)]
    # no confused pairs: ranked by the drop in overall accuracy; nothing hurts -> no suggestions
    by_id["scale0.85"]["accuracy"] = 0.9
    assert [s["id"] for s in advice.recommend(probes, [])] == ["scale-0.15"]
    by_id["scale0.85"]["accuracy"] = 0.99
    assert advice.recommend(probes, []) == []


def test_stratified_sample_keeps_class_shares():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)
    rows = advice.stratified_sample(labels, 100, seed=0)
    assert np.bincount(labels[rows]).tolist() == [60, 30, 10]
    assert np.array_equal(rows, np.sort(rows)) and np.array_equal(rows, advice.stratified_sample(labels, 100))


def _preds(true, pred):
    return {"true": np.array(true), "pred": np.array(pred)}


def test_paired_changes_and_verdict_tell_an_effect_from_retraining_churn():
    # 12 nines, 18 ones. Before: ten 9→4 confusions. After: nine of them fixed, one new 9→4, one new 1→7.
    true = [9] * 12 + [1] * 18
    before = _preds(true, [4] * 10 + [9] * 2 + [1] * 18)
    after = _preds(true, [4] + [9] * 9 + [4, 9] + [7] + [1] * 17)
    changes = advice.paired_changes(before, after, [(9, 4)])
    assert changes["targeted"] == {"fixed": 9, "new": 1, "p_value": 0.0215}      # 2 * 11 / 2**10
    assert changes["errors"] == {"fixed": 9, "new": 2, "p_value": 0.0654}        # 2 * 67 / 2**11
    assert advice.verdict(changes).startswith("helped: 9 targeted confusions fixed, 1 new (p = 0.021)")
    # the same run the other way round: significantly more confusions
    assert advice.verdict(advice.paired_changes(after, before, [(9, 4)])).startswith("hurt:")
    # three fixed, one new: a lean retraining alone produces often (p = 0.625)
    few = _preds(true, [9] * 3 + [4] * 7 + [4] + [9] + [1] * 18)
    changes = advice.paired_changes(before, few, [(9, 4)])
    assert changes["targeted"] == {"fixed": 3, "new": 1, "p_value": 0.625}
    assert advice.verdict(changes).startswith("no clear change:")
    # fewer targeted confusions, but significantly more errors elsewhere (25 ones now read as 7s)
    more_ones = [1] * 30
    before = _preds([9] * 12 + more_ones, [4] * 10 + [9] * 2 + more_ones)
    elsewhere = _preds([9] * 12 + more_ones, [4] + [9] * 9 + [4, 9] + [7] * 25 + [1] * 5)
    changes = advice.paired_changes(before, elsewhere, [(9, 4)])
    assert changes["errors"] == {"fixed": 9, "new": 26, "p_value": 0.006}
    assert advice.verdict(changes).startswith("mixed: 9 targeted confusions fixed")
    # nothing changed at all
    assert advice.paired_changes(before, before, [(9, 4)])["targeted"] == {"fixed": 0, "new": 0, "p_value": 1.0}


def test_verify_advice_retrains_and_compares(analyzed_run, copy_workspace, tmp_path):
    from deepdive.analysis.results import AnalysisResult
    from deepdive.store import Store

    # A copy of the session's workspace, so the extra run does not show up in other tests.
    workspace = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    suggestions = AnalysisResult.load(workspace / analyzed_run.run_id, "test").advice["suggestions"]
    assert suggestions, "the tiny run's probes should find something to suggest"
    with Store.open(workspace, create=False) as store:
        original = store.get_run(analyzed_run.run_id)
        report = advice.verify_advice(store, original.id, suggestion=suggestions[0]["id"], progress=False)
        runs = store.list_runs()
        new = store.get_run(report["retrained_run_id"])
        # the retrained run is only evaluated, not analysed: compare reads its stored predictions
        from deepdive.analysis.compare import compare_runs

        compared = compare_runs(original, new, store=store)
    errors = report["paired"]["errors"]
    assert not compared["b"]["analysed"] and compared["paired"] == errors
    assert len(runs) == 2 and new.id != original.id and new.status == "finished"
    assert new.name == f"{original.name}+{suggestions[0]['id']}" == report["retrained_run_name"]
    assert new.config["verifies"] == {"run_id": original.id, "suggestion": suggestions[0]["id"], "split": "test",
                                      "seed": original.config["seed"]}
    assert report["seeds"][0]["retrained"] and report["retrain_seconds"] > 0
    for key in ("epochs", "seed", "limit_train", "limit_test", "preset"):
        assert new.config[key] == original.config[key]
    aug = new.config["resolved"]["augment"]
    assert all(aug[k] >= v for k, v in suggestions[0]["overrides"]["augment"].items())
    acc = report["accuracy"]
    assert acc["before"] == pytest.approx(original.test_accuracy) and acc["after"] == pytest.approx(new.test_accuracy)
    assert acc["delta"] == pytest.approx(acc["after"] - acc["before"])
    assert report["errors"]["delta"] == report["errors"]["after"] - report["errors"]["before"]
    pairs = [(e["true"], e["pred"]) for e in suggestions[0]["evidence"]["pairs"]]
    assert [(t["true"], t["pred"]) for t in report["targeted_confusions"]] == pairs
    assert report["targeted_total"]["delta"] == sum(t["delta"] for t in report["targeted_confusions"])
    paired = report["paired"]
    assert paired["targeted"]["new"] - paired["targeted"]["fixed"] == report["targeted_total"]["delta"]
    assert paired["errors"]["new"] - paired["errors"]["fixed"] == report["errors"]["delta"]
    assert report["verdict"].split(":")[0] in ("helped", "hurt", "mixed", "no clear change")
    text = verification_text(report, workspace)           # what `deepdive verify-advice RUN` prints
    assert f"retrained as {new.name} ({new.id})" in text and f"verdict: {report['verdict']}" in text
    assert f"errors {report['errors']['before']} → {report['errors']['after']}" in text
    assert f"deepdive compare {report['run_id']} {new.id} --workspace {workspace}" in text
    total = report["targeted_total"]
    assert f"targeted confusions {total['before']} → {total['after']}" in text
    for t in report["targeted_confusions"]:
        assert f"{t['true']} as {t['pred']}: {t['before']}→{t['after']}" in text
    # the change the augmentation trains against (none for stroke widths), before and after, same pictures
    from deepdive.analysis.robustness import trained_against

    families = trained_against(suggestions[0]["overrides"]["augment"])
    assert [f["id"] for f in report["robustness"]] == [f.id for f in families]
    for f in report["robustness"]:
        assert f["pictures"] > 0
        assert f["flipped_before"] - f["flipped_after"] == f["paired"]["fixed"] - f["paired"]["new"]
        assert f"a {f['label']} up to {f['headline']:g}" in text and f"flips {f['flipped_before']} of" in text
    saved = json.loads((workspace / original.id / "analysis" / "test" / "verify_advice.json").read_text())
    assert saved["retrained_run_id"] == new.id and saved["verdict"] == report["verdict"]
    with Store.open(workspace, create=False) as store, pytest.raises(DeepdiveError, match="no suggestion 'nope'"):
        advice.verify_advice(store, original.id, suggestion="nope", progress=False)

    # Two seeds: the run's own seed reuses the retraining above; the next seed trains a baseline and a retraining.
    sid, seed = suggestions[0]["id"], original.config["seed"]
    with Store.open(workspace, create=False) as store:
        two = advice.verify_advice(store, original.id, suggestion=sid, progress=False, seeds=2)
        runs = {r.id: r for r in store.list_runs()}
    assert len(runs) == 4 and [x["seed"] for x in two["seeds"]] == [seed, seed + 1]
    first, second = two["seeds"]
    assert first["baseline_run_id"] == original.id and first["retrained_run_id"] == new.id
    assert not first["baseline_trained"] and not first["retrained"]
    assert first["accuracy"] == report["accuracy"] and first["paired"] == report["paired"]
    assert second["baseline_trained"] and second["retrained"]
    baseline, retrained = runs[second["baseline_run_id"]], runs[second["retrained_run_id"]]
    assert baseline.name == f"{original.name}@seed{seed + 1}" and baseline.config["seed"] == seed + 1
    assert baseline.config["overrides"] == original.config["overrides"]
    assert baseline.config["verifies"] == {"run_id": original.id, "suggestion": None, "split": "test",
                                           "seed": seed + 1}
    assert retrained.name == f"{original.name}+{sid}@seed{seed + 1}" and retrained.config["seed"] == seed + 1
    assert retrained.config["overrides"] == new.config["overrides"]
    assert second["accuracy"]["before"] == pytest.approx(baseline.test_accuracy)
    assert second["accuracy"]["after"] == pytest.approx(retrained.test_accuracy)
    # mean accuracy, summed counts, the paired test pooled over the seed pairs
    assert two["accuracy"]["after"] == pytest.approx((first["accuracy"]["after"] + second["accuracy"]["after"]) / 2)
    assert two["errors"]["after"] == first["errors"]["after"] + second["errors"]["after"]
    for key in ("targeted", "errors"):
        pooled = two["paired"][key]
        assert pooled["fixed"] == first["paired"][key]["fixed"] + second["paired"][key]["fixed"]
        assert pooled["new"] == first["paired"][key]["new"] + second["paired"][key]["new"]
    for k, t in enumerate(two["targeted_confusions"]):
        assert t["after"] == first["targeted_confusions"][k]["after"] + second["targeted_confusions"][k]["after"]
    for f, g in zip(two["robustness"], report["robustness"]):          # the second seed's pictures added
        assert f["pictures"] > g["pictures"] and f["flipped_before"] >= g["flipped_before"]
    higher = sum(x["accuracy"]["after"] > x["accuracy"]["before"] for x in two["seeds"])
    assert two["verdict"].startswith(advice.verdict(two["paired"])) and f"higher at {higher} of 2 seeds" in two["verdict"]
    text = verification_text(two, workspace)
    assert f"at seeds {seed}-{seed + 1}: 2 runs trained" in text and "1 reused" in text
    assert f"  seed {seed + 1}: {100 * second['accuracy']['before']:.2f}%" in text
    # asked again, everything is reused: no training, the same comparison
    with Store.open(workspace, create=False) as store:
        again = advice.verify_advice(store, original.id, suggestion=sid, progress=False, seeds=2)
        assert len(store.list_runs()) == 4
        with pytest.raises(DeepdiveError, match="seeds must be a positive integer"):
            advice.verify_advice(store, original.id, suggestion=sid, progress=False, seeds=0)
    assert again["retrain_seconds"] == 0 and again["paired"] == two["paired"] and again["accuracy"] == two["accuracy"]
    assert "3 reused" in verification_text(again, workspace)
