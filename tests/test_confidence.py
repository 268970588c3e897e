"""deepdive.analysis.confidence: reliability bins and ECE (checked against scikit-learn's calibration_curve and by
hand), the temperature fit and its cross-fitting, and the errors each trust score finds; the stage's entry in the
analysed fixture run."""
import numpy as np
import pytest

from deepdive.analysis import confidence as conf
from deepdive.analysis.label_issues import calibrate
from deepdive.analysis.results import AnalysisResult
from deepdive.analysis.tables import predictions_frame


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_reliability_bins_match_scikit_learn():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, 5000)
    correct = rng.random(5000) < confidence ** 2
    bins = conf.reliability(confidence, correct, bins=15)
    full = [b for b in bins if b["count"]]
    acc, mean_conf = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    np.testing.assert_allclose([b["accuracy"] for b in full], acc)
    np.testing.assert_allclose([b["confidence"] for b in full], mean_conf)
    assert sum(b["count"] for b in bins) == 5000 and len(bins) == 15
    assert all(b["lo"] < b["confidence"] <= b["hi"] for b in full)


def test_ece_and_mce_by_hand():
    # 0.95 falls in the last bin (0.933, 1], right once in two; 0.55 in (0.533, 0.6], right three times in three
    confidence = [0.95, 0.95, 0.55, 0.55, 0.55]
    correct = [True, False, True, True, True]
    ece, mce = conf.calibration_errors(conf.reliability(confidence, correct))
    assert ece == pytest.approx(2 / 5 * 0.45 + 3 / 5 * 0.45)
    assert mce == pytest.approx(0.45)
    assert conf.calibration_errors(conf.reliability([], [])) == (None, None)


def test_ece_reads_calibrated_and_overconfident_answers():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 50_000)
    honest = rng.random(50_000) < confidence
    overconfident = rng.random(50_000) < confidence - 0.2
    assert conf.calibration_errors(conf.reliability(confidence, honest))[0] < 0.01
    assert conf.calibration_errors(conf.reliability(confidence, overconfident))[0] == pytest.approx(0.2, abs=0.01)


def test_fit_temperature_recovers_a_sharpening():
    rng = np.random.default_rng(2)
    truth = softmax(rng.normal(0, 2, (20_000, 10)))
    labels = np.array([rng.choice(10, p=p) for p in truth])
    sharpened = conf.scale(truth, 0.5)          # ∝ truth², what an over-confident model says
    assert conf.fit_temperature(labels, sharpened) == pytest.approx(2.0, rel=0.08)
    np.testing.assert_allclose(conf.scale(sharpened, 2.0), truth, atol=1e-9)
    # label_issues.calibrate only sharpens: these over-confident probabilities come back unchanged
    np.testing.assert_array_equal(calibrate(labels, sharpened), sharpened.astype(np.float32))
    assert conf.fit_temperature(labels, truth) == pytest.approx(1.0, abs=0.06)


def test_cross_fitting_scales_each_half_by_the_other_halfs_temperature():
    rng = np.random.default_rng(3)
    truth = softmax(rng.normal(0, 2, (4000, 5)))
    labels = np.array([rng.choice(5, p=p) for p in truth])
    probs = conf.scale(truth, 2.0)              # under-confident
    scaled, temps = conf.cross_fitted(labels, probs, seed=7)
    order = np.random.default_rng(7).permutation(4000)
    a, b = order[:2000], order[2000:]
    assert temps == [conf.fit_temperature(labels[a], probs[a]), conf.fit_temperature(labels[b], probs[b])]
    np.testing.assert_allclose(scaled[b], conf.scale(probs[b], temps[0]))
    np.testing.assert_allclose(scaled[a], conf.scale(probs[a], temps[1]))
    np.testing.assert_array_equal(scaled.argmax(1), probs.argmax(1))
    assert all(t == pytest.approx(0.5, rel=0.15) for t in temps)
    assert conf.cross_fitted(labels[:1], probs[:1]) == (None, [])


def test_error_detection_by_hand():
    correct = np.array([True, False, True, False, True])
    order = conf.review_order([0.9, 0.1, 0.8, 0.5, 0.3])     # rows 1, 4, 3, 2, 0
    np.testing.assert_array_equal(order, [1, 4, 3, 2, 0])
    found = conf.error_detection(correct, order, budgets=(0.2, 0.6))
    assert found["curve"] == [[1, 1], [3, 2]]
    assert found["caught"] == {"0.2": 1, "0.6": 2}
    # ranks of the right answers 1, 3, 4 against the errors' 0, 2: 5 of the 6 pairs in order
    assert found["auroc"] == pytest.approx(5 / 6)
    none_wrong = conf.error_detection(np.ones(5, bool), order)
    assert none_wrong["auroc"] is None and none_wrong["curve"] == [] and set(none_wrong["caught"].values()) == {0}


def test_ties_break_by_the_second_score_and_long_curves_are_thinned():
    order = conf.review_order([0.5, 0.5, 0.25, 0.5], tiebreak=[0.9, 0.2, 0.99, 0.2])
    np.testing.assert_array_equal(order, [2, 1, 3, 0])
    correct = np.ones(10_000, bool)
    correct[::10] = False                                       # 1,000 errors
    found = conf.error_detection(correct, np.arange(10_000), points=50)
    assert len(found["curve"]) == 50 and found["curve"][0] == [1, 1] and found["curve"][-1] == [9991, 1000]


def test_stage_entry_on_a_predictions_frame():
    rng = np.random.default_rng(4)
    probs = softmax(rng.normal(0, 3, (600, 4)))
    labels = probs.argmax(1)
    labels[:60] = (labels[:60] + 1) % 4                         # 60 errors
    frame = predictions_frame(labels, probs)
    entry = conf.confidence_stage(frame)
    assert entry["available"] and entry["n"] == 600 and entry["errors"] == 60
    assert set(entry["signals"]) == {"confidence", "margin", "entropy"}
    assert entry["accuracy"] == pytest.approx(0.9)
    assert entry["mean_confidence"] == pytest.approx(frame["confidence"].mean(), rel=1e-6)
    budget = np.sort(frame["confidence"].to_numpy())
    assert entry["confidence_thresholds"]["0.01"] == pytest.approx(budget[5])          # the 6th least confident
    assert entry["signals"]["confidence"]["caught"]["0.05"] == int((~frame["correct"]).to_numpy()[
        np.argsort(frame["confidence"].to_numpy(), kind="stable")[:30]].sum())
    frame["neighbour_agreement"] = np.where(frame["correct"], 1.0, 0.0)               # a perfect trust score
    entry = conf.confidence_stage(frame)
    assert entry["signals"]["neighbours"]["auroc"] == 1.0
    assert entry["signals"]["neighbours"]["curve"][-1] == [60, 60]
    assert conf.confidence_stage(frame.iloc[:0])["available"] is False


def test_the_analysis_stores_it(analyzed_run):
    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    c, ex = res.summary["confidence"], res.examples
    assert c["available"] and c["n"] == len(ex) and c["errors"] == res.summary["error_count"]
    assert c["accuracy"] == pytest.approx(res.summary["accuracy"])
    assert sum(b["count"] for b in c["reliability"]) == len(ex)
    # the nearest training images' trust score is the share of them carrying the predicted class
    labels = res.neighbours()["label"]
    np.testing.assert_allclose(ex["neighbour_agreement"], (labels == ex["pred"].to_numpy()[:, None]).mean(1))
    assert set(c["signals"]) == {"confidence", "margin", "entropy", "neighbours", "typicality"}
    # typicality: the farthest from the training images least trusted, as the predictions table sorts them
    far_first = conf.review_order(-ex["knn_distance"].to_numpy(), tiebreak=ex["confidence"].to_numpy())
    assert ex["knn_distance"].to_numpy()[far_first[0]] == ex["knn_distance"].max()
    # label smoothing keeps the recipe's probabilities low: the temperature sharpens them
    assert c["temperature"]["value"] < 1 and c["temperature"]["nll"] < c["nll"]
    # each row's stored confidences fall in the bins that count them, raw and after the temperature
    raw = np.bincount(conf.bin_of(ex["confidence"]), minlength=c["bins"])
    scaled = np.bincount(conf.bin_of(ex["calibrated_confidence"]), minlength=c["bins"])
    assert raw.tolist() == [b["count"] for b in c["reliability"]]
    assert scaled.tolist() == [b["count"] for b in c["temperature"]["reliability"]]
    assert (ex["calibrated_confidence"] > ex["confidence"]).mean() > 0.9     # sharpened


def test_analyze_prints_it(analyzed_run):
    from deepdive.analysis.cli import json_summary, text_summary

    s = AnalysisResult.load(analyzed_run.run_dir, "test").summary
    c = s["confidence"]
    lines = text_summary(s, analyzed_run.workspace).splitlines()
    calib = next(line for line in lines if line.startswith("confidence: "))
    assert calib == (f"confidence: mean {c['mean_confidence']:.3f} at {c['accuracy']:.2%} accuracy, calibration error "
                     f"(ECE) {c['ece']:.1%}; a temperature of {c['temperature']['value']:.2f} brings it to "
                     f"{c['temperature']['ece']:.1%} out of sample")
    found = next(line for line in lines if line.startswith("checking the 1% least trusted"))
    assert found.endswith(", ".join(f"by {k} {v['caught']['0.01']}" for k, v in c["signals"].items()))
    assert json_summary(s)["calibration_error"] == c["ece"]


def test_an_analysis_from_before_it_has_no_calibration_table():
    from types import SimpleNamespace

    from deepdive.analysis import export
    from deepdive.errors import DeepdiveError

    old = SimpleNamespace(summary={"n": 3}, split="test", class_names=["a", "b"])
    with pytest.raises(DeepdiveError, match="no calibration.*run deepdive analyze again"):
        export.table(old, "calibration")
