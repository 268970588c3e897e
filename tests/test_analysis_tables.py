"""Analysis tables, taxonomy, early-stop insight and focus set on small cases computed by hand."""
import math

import numpy as np
import pandas as pd
import pytest

from deepdive import analysis
from deepdive.analysis import insight, tables, taxonomy
from deepdive.errors import DeepdiveError

# Six examples, three classes (true label, probabilities). Predictions: 0, 1, 1, 2, 2, 1.
TRUE = np.array([0, 0, 1, 1, 2, 0])
PROBS = np.array([
    [0.70, 0.20, 0.10],   # row 0: correct
    [0.10, 0.60, 0.30],   # row 1: 0 -> 1, confidence 0.6
    [0.20, 0.50, 0.30],   # row 2: correct
    [0.05, 0.15, 0.80],   # row 3: 1 -> 2
    [0.10, 0.10, 0.80],   # row 4: correct
    [0.05, 0.90, 0.05],   # row 5: 0 -> 1, confidence 0.9
], dtype=np.float32)
NAMES = ["zero", "one", "two"]


@pytest.fixture
def frame():
    return tables.predictions_frame(TRUE, PROBS)


def test_predictions_frame_columns_and_values(frame):
    assert list(frame.columns) == tables.BASE_COLUMNS + ["p0", "p1", "p2"]
    assert frame["pred"].tolist() == [0, 1, 1, 2, 2, 1]
    assert frame["correct"].tolist() == [True, False, True, False, True, False]
    assert frame["confidence"].tolist() == pytest.approx([0.7, 0.6, 0.5, 0.8, 0.8, 0.9])
    assert frame["margin"].tolist() == pytest.approx([0.5, 0.3, 0.2, 0.65, 0.7, 0.85])
    # entropy of row 0 by hand: 0.7 ln(1/0.7) + 0.2 ln 5 + 0.1 ln 10
    assert frame["entropy"][0] == pytest.approx(0.7 * 0.356675 + 0.2 * 1.609438 + 0.1 * 2.302585, rel=1e-5)
    # without stored losses the loss is the cross-entropy -ln p[true]
    assert frame["loss"][1] == pytest.approx(-math.log(0.1), rel=1e-5)
    assert frame["idx"].tolist() == list(range(6))
    np.testing.assert_allclose(tables.probs_of(frame), PROBS)


def test_predictions_frame_keeps_given_losses_and_indices():
    frame = tables.predictions_frame(TRUE, PROBS, losses=np.arange(6, dtype=np.float32), idx=np.arange(10, 16))
    assert frame["loss"].tolist() == [0, 1, 2, 3, 4, 5]
    assert frame["idx"].tolist() == list(range(10, 16))
    assert frame.index.tolist() == list(range(6))  # rows stay positions


def test_bad_probabilities_are_clear_errors():
    nan = PROBS.copy()
    nan[2, 1] = np.nan
    with pytest.raises(DeepdiveError, match="NaN or infinite values for 1 of 6"):
        tables.predictions_frame(TRUE, nan)
    with pytest.raises(DeepdiveError, match=r"labels must lie in \[0, 2\]"):
        tables.predictions_frame(np.array([0, 0, 1, 1, 3, 0]), PROBS)
    with pytest.raises(DeepdiveError, match="shape"):
        tables.predictions_frame(TRUE[:5], PROBS)
    with pytest.raises(DeepdiveError, match="sum to 1"):
        tables.predictions_frame(TRUE, PROBS * 2)


def test_confusion_counts_and_row_normalised(frame):
    counts = tables.confusion(frame["true"], frame["pred"], 3)
    np.testing.assert_array_equal(counts, [[1, 2, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(tables.normalize_rows(counts), [[1 / 3, 2 / 3, 0], [0, 0.5, 0.5], [0, 0, 1]])
    # a class with no examples gets a zero row, not NaN
    np.testing.assert_array_equal(tables.normalize_rows(np.array([[0, 0], [1, 3]])), [[0, 0], [0.25, 0.75]])


def test_per_class_precision_recall_f1(frame):
    pc = tables.per_class(frame, NAMES)
    assert pc["name"].tolist() == NAMES
    assert pc["support"].tolist() == [3, 2, 1]
    assert pc["predicted"].tolist() == [1, 3, 2]
    assert pc["errors"].tolist() == [2, 1, 0]
    assert pc["recall"].tolist() == pytest.approx([1 / 3, 1 / 2, 1])
    assert pc["precision"].tolist() == pytest.approx([1, 1 / 3, 1 / 2])
    # F1 = 2TP / (2TP + FP + FN): class 0: 2/(2+0+2); class 1: 2/(2+2+1); class 2: 2/(2+1+0)
    assert pc["f1"].tolist() == pytest.approx([0.5, 0.4, 2 / 3])


def test_per_class_undefined_ratios_are_nan():
    # class 2 never occurs and is never predicted; class 1 occurs but is never predicted
    f = tables.predictions_frame(np.array([0, 1]), np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]]))
    pc = tables.per_class(f, NAMES)
    assert pc["precision"][0] == 0.5 and pc["recall"][0] == 1.0
    assert np.isnan(pc["precision"][1]) and pc["recall"][1] == 0 and pc["f1"][1] == 0
    assert np.isnan(pc["recall"][2]) and np.isnan(pc["precision"][2]) and np.isnan(pc["f1"][2])


def test_grouping_by_true_then_pred_rows_by_confidence(frame):
    g = tables.groups(frame)
    assert list(zip(g["true"], g["pred"], g["count"])) == [(0, 0, 1), (0, 1, 2), (1, 1, 1), (1, 2, 1), (2, 2, 1)]
    assert g["rows"].tolist() == [[0], [5, 1], [2], [3], [4]]
    assert tables.group_rows(frame, 0, 1).index.tolist() == [5, 1]
    assert tables.class_errors(frame, 0).index.tolist() == [5, 1]
    assert tables.class_errors(frame, 2).empty
    assert tables.by_confidence(frame).index.tolist() == [5, 3, 4, 0, 1, 2]  # ties (0.8) keep row order


def test_top_confusions(frame):
    top = tables.top_confusions(frame, k=10)
    assert top == [{"true": 0, "pred": 1, "count": 2, "indices": [5, 1]},
                   {"true": 1, "pred": 2, "count": 1, "indices": [3]}]
    assert tables.top_confusions(frame, k=1) == top[:1]
    assert tables.top_confusions(frame[frame["correct"]]) == []


# ---- taxonomy ------------------------------------------------------------------------------------------------
def _row(true, pred_p, true_p, runner=None, runner_p=0.0, c=10):
    """A probability row: pred class 1 gets pred_p, the true class true_p, optionally another class runner_p,
    the rest shares what is left equally."""
    p = np.zeros(c)
    p[1], p[true] = pred_p, true_p
    if runner is not None:
        p[runner] = runner_p
    rest = [k for k in range(c) if p[k] == 0]
    p[rest] = (1 - p.sum()) / len(rest)
    return p


def test_taxonomy_rules():
    probs = np.stack([
        _row(0, 0.97, 0.01),              # A confident, clear: model-fixable (H/ln10 = 0.085, margin 0.96)
        _row(0, 0.97, 0.01),              # B same, flagged by cleanlab: likely label error
        _row(0, 0.68, 0.32),              # C true class runner-up, margin 0.36 < 0.4 (H/ln10 = 0.27): ambiguous
        _row(0, 0.50, 0.05, 2, 0.25),     # D runner-up is class 2, but H/ln10 = 0.675 >= 0.3: ambiguous
        _row(0, 0.97, 0.01),              # E like A, but ensemble members disagree: ambiguous
        _row(1, 0.97, 0.97),              # F correct
        _row(0, 0.68, 0.32),              # G like C but flagged: uncertainty wins, ambiguous
    ])
    f = tables.predictions_frame(np.array([0, 0, 0, 0, 0, 1, 0]), probs)
    f["label_issue"] = [False, True, False, False, False, False, True]
    assert f["entropy"][2] / math.log(10) == pytest.approx(0.2723, abs=1e-3)
    assert f["entropy"][3] / math.log(10) > 0.6
    members = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 7, 1, 1], [-1, -1, -1, -1, 1, -1, -1]])
    f["category"] = taxonomy.categorize(f, members)
    assert f["category"].tolist() == ["model-fixable", "likely label error", "ambiguous", "ambiguous",
                                      "ambiguous", "correct", "ambiguous"]
    assert taxonomy.categorize(f)[4] == "model-fixable"  # without the members, E is a plain confident error
    counts = taxonomy.counts(f, [str(c) for c in range(10)])
    assert counts["total"] == {"likely label error": 1, "ambiguous": 4, "model-fixable": 1}
    assert counts["per_class"][0] == {"class": 0, "name": "0", "likely label error": 1, "ambiguous": 4,
                                      "model-fixable": 1}
    assert counts["per_class"][1]["ambiguous"] == 0
    described = taxonomy.describe()
    assert described["thresholds"] == {"entropy": 0.30, "margin": 0.40}
    assert "0.3" in described["rule"] and "0.4" in described["rule"]


def test_members_disagree_ignores_unevaluated():
    preds = np.array([[2, 3, -1], [2, 2, -1]])
    assert taxonomy.members_disagree(preds).tolist() == [False, True, False]


# ---- training insight ----------------------------------------------------------------------------------------
def _epochs(accs, seconds=None):
    seconds = seconds or [10.0] * len(accs)
    return [{"epoch": i + 1, "val_acc": a, "seconds": s} for i, (a, s) in enumerate(zip(accs, seconds))]


def test_early_stop_within_tolerance():
    # best 0.982 at epoch 5; within 0.1 pp means >= 0.981: epoch 3 (exactly 0.1 pp below counts)
    hint = insight.early_stop(_epochs([0.90, 0.95, 0.981, 0.9815, 0.982, 0.9805], [12, 10, 10, 9, 11, 8]))
    assert hint["best_epoch"] == 5 and hint["best_val_acc"] == 0.982
    assert hint["earliest_epoch"] == 3 and hint["earliest_val_acc"] == 0.981
    assert hint["epochs_saved"] == 3 and hint["epochs_total"] == 6
    assert hint["seconds_saved"] == pytest.approx(9 + 11 + 8)
    assert hint["seconds_total"] == pytest.approx(60)
    assert hint["fraction_saved"] == pytest.approx(28 / 60)


def test_early_stop_needs_the_curve_to_stay_within_tolerance():
    # The demo model's validation curve (seed 0, 2026-12-01): a lucky 99.50% at epoch 4 is within 0.1 pp of the best
    # (99.58%) but the curve falls back below 99.48% until epoch 19; stopping at 4 would have kept a far worse model.
    demo = [.9872, .9910, .9834, .9950, .9922, .9940, .9932, .9934, .9954, .9920, .9954, .9942, .9944, .9952, .9956,
            .9928, .9954, .9944, .9958, .9948, .9952, .9956, .9956, .9958]
    hint = insight.early_stop(_epochs(demo))
    assert (hint["best_epoch"], hint["earliest_epoch"], hint["epochs_saved"]) == (19, 19, 5)
    # a dip after the best does not move the hint; one before it does
    assert insight.early_stop(_epochs([0.90, 0.99, 0.95, 0.992, 0.98]))["earliest_epoch"] == 4
    assert insight.early_stop(_epochs([0.90, 0.9915, 0.992, 0.98]))["earliest_epoch"] == 2


def test_early_stop_tolerance_and_percent_scale():
    accs = [90.0, 98.0, 98.05, 98.2]  # percentages: tolerance stays 0.1 points
    assert insight.early_stop(_epochs(accs))["earliest_epoch"] == 4
    assert insight.early_stop(_epochs(accs), tolerance_pp=0.2)["earliest_epoch"] == 2
    assert insight.early_stop(_epochs([0.5]))["seconds_saved"] == 0
    assert insight.early_stop([{"epoch": 1, "val_acc": None, "seconds": 3.0}]) is None
    assert insight.early_stop([]) is None


def test_early_stop_judges_each_ensemble_member_on_its_own_curve():
    """Members train one after another from scratch: a fresh member's first epochs must not count as a drop
    from the previous member's best, nor its best hide the previous member's plateau."""
    first = _epochs([0.90, 0.98, 0.985, 0.985])                          # member 0: within 0.1 pp at its epoch 3
    second = [{**e, "epoch": e["epoch"] + 4} for e in _epochs([0.80, 0.97, 0.99, 0.9895], [5, 5, 5, 5])]
    rows = [{**e, "member": 0} for e in first] + [{**e, "member": 1} for e in second]
    hint = insight.early_stop(rows)
    assert [m["member"] for m in hint["members"]] == [0, 1]
    m0, m1 = hint["members"]
    assert (m0["earliest_epoch"], m0["earliest_member_epoch"], m0["best_member_epoch"]) == (3, 3, 3)
    assert (m1["first_epoch"], m1["earliest_epoch"], m1["earliest_member_epoch"], m1["member_epochs"]) == (5, 7, 3, 4)
    assert (hint["epochs_total"], hint["epochs_saved"]) == (8, 2)
    assert hint["seconds_saved"] == pytest.approx(10 + 5) and hint["seconds_total"] == pytest.approx(60)
    # judged as one curve, member 0 would look 0.5 pp short of member 1's best and "stop" only in member 1
    assert insight.early_stop([{k: v for k, v in r.items() if k != "member"} for r in rows])["earliest_epoch"] == 7


# ---- focus set and display images -------------------------------------------------------------------------------
def test_focus_set(frame, monkeypatch):
    frame["label_issue"] = [False, False, False, True, False, True]
    frame["issue_rank"] = [0, 0, 0, 2, 0, 1]
    focus = analysis.focus_set(frame)
    assert focus["errors"] == [5, 3, 1] and focus["errors_total"] == 3
    assert focus["representatives"] == {"0": 0, "1": 2, "2": 4}
    assert focus["label_issues"] == [5, 3]
    assert focus["indices"] == [5, 3, 1, 0, 2, 4]  # errors, representatives; issues already present
    monkeypatch.setattr(analysis, "FOCUS_ERROR_CAP", 1)
    capped = analysis.focus_set(frame)
    assert capped["errors"] == [5] and capped["errors_total"] == 3
    assert capped["indices"] == [5, 0, 2, 4, 3]


def test_display_images():
    x = np.zeros((2, 1, 2, 2), np.float32)
    x[0, 0, 0, 0] = 1.0
    x[1, 0, 1, 1] = 0.5
    np.testing.assert_array_equal(analysis.display_images(x), [[[255, 0], [0, 0]], [[0, 0], [0, 128]]])
    rgb = np.full((1, 3, 2, 2), -1.0, np.float32)
    rgb[0, :, 0, 0] = 3.0  # outside [0, 1]: min-max per channel
    out = analysis.display_images(rgb)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [255, 255, 255] and out[0, 1, 1].tolist() == [0, 0, 0]
    assert analysis.display_images(np.zeros((1, 2, 4, 4), np.float32)).shape == (1, 4, 4)


def test_a_picture_goes_back_to_the_inputs_it_displays():
    # ToTensor + Normalize of uint8 pictures that hold 0 and 255 in each channel: the display's min-max scale is
    # exactly the normalisation, so the pictures map back onto the same inputs (what a drawn picture is fed as)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 3, 4, 4)).astype(np.uint8)
    pixels[0, :, 0, 0], pixels[1, :, 0, 0] = 0, 255
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    x = (pixels / np.float32(255) - mean[None, :, None, None]) / std[None, :, None, None]
    scale = analysis.display_scale(x)
    np.testing.assert_allclose(scale[0], -mean / std, rtol=1e-6)
    shown = analysis.display_images(x)
    np.testing.assert_array_equal(shown, pixels.transpose(0, 2, 3, 1))
    as_shown = shown.transpose(0, 3, 1, 2) / np.float32(255)
    np.testing.assert_allclose(analysis.inputs_from_display(as_shown, scale), x, atol=1e-5)
    # inputs in [0, 1] keep their scale: a picture is pixels / 255
    gray = pixels[:, :1] / np.float32(255)
    assert [v.tolist() for v in analysis.display_scale(gray)] == [[0.0], [1.0]]
    np.testing.assert_allclose(analysis.inputs_from_display(gray, analysis.display_scale(gray)), gray)
    with pytest.raises(DeepdiveError, match=r"shape \(5, 1, 4, 4\) for inputs with 3 channel"):
        analysis.inputs_from_display(gray, scale)


def test_result_frame_roundtrips_parquet(frame, tmp_path):
    frame["category"] = "correct"
    path = tmp_path / "f.parquet"
    frame.to_parquet(path, index=False)
    back = pd.read_parquet(path)
    assert back["correct"].dtype == bool
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
