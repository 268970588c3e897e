"""Top-k accuracy and per-class precision-recall curves, on cases computed by hand."""
import numpy as np
import pytest

from deepdive.analysis import ranking, tables
from deepdive.analysis.cli import ranking_lines


def test_top_k_counts_the_true_class_among_the_k_most_probable():
    true = np.array([0, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1],    # right
                      [0.6, 0.3, 0.1],    # 1 is second
                      [0.5, 0.3, 0.2],    # 2 is third
                      [0.1, 0.2, 0.7]])   # right
    got = ranking.top_k_accuracy(true, probs)
    assert got == [{"k": 1, "accuracy": 0.5}, {"k": 2, "accuracy": 0.75}]   # k < the class count only
    assert ranking.top_k_accuracy(true, probs, ks=(1, 2, 3, 5)) == got


def test_top_k_of_a_binary_problem_is_its_accuracy():
    # scikit-learn wants a binary problem's scores as one column; two columns were a ValueError
    true, probs = np.array([0, 1, 1, 0]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])
    assert ranking.top_k_accuracy(true, probs) == [{"k": 1, "accuracy": 0.75}]


def test_pr_curve_keeps_each_recall_levels_best_precision():
    # class members score 0.9, 0.6, 0.3; the others 0.8, 0.4. Flagging p >= 0.9 finds 1 of 3 at precision 1;
    # p >= 0.6 finds 2 at 2/3 (0.8 let through); p >= 0.3 finds all 3 at 3/5.
    is_class = np.array([True, False, True, False, True])
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3])
    ap, points = ranking.pr_curve(is_class, scores, max_points=100)
    assert np.array(points) == pytest.approx(np.array([[1 / 3, 1, 0.9], [2 / 3, 2 / 3, 0.6], [1, 0.6, 0.3]]), abs=1e-6)
    # AP = sum over the recall steps of step x precision there
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 0.6)


def test_pr_curve_starts_at_the_first_image_of_the_class():
    # the two highest scores are not of the class: no vertex at recall 0
    ap, points = ranking.pr_curve(np.array([False, False, True, True]), np.array([0.9, 0.8, 0.7, 0.6]), 100)
    assert np.array(points) == pytest.approx(np.array([[0.5, 1 / 3, 0.7], [1, 0.5, 0.6]]))
    assert ranking.pr_curve(np.zeros(3, bool), np.array([0.1, 0.2, 0.3]), 100) == (None, [])


def test_pr_curve_thins_to_its_budget_keeping_the_ends_and_the_high_recall_tail():
    rng = np.random.default_rng(0)
    is_class = rng.random(5000) < 0.3
    scores = np.where(is_class, rng.normal(2, 1, 5000), rng.normal(0, 1, 5000))
    _, full = ranking.pr_curve(is_class, scores, max_points=10_000)
    assert len(full) == is_class.sum()            # one vertex per member of the class
    _, thin = ranking.pr_curve(is_class, scores, max_points=60)
    assert len(thin) <= 60 and thin[0] == full[0] and thin[-1] == full[-1]
    assert thin[-30:] == full[-30:]               # half the budget on the highest recalls
    recalls = [p[0] for p in thin]
    assert recalls == sorted(recalls) and len(set(recalls)) == len(recalls)
    assert all(p in full for p in thin)


def test_ranking_stage_skips_absent_classes_in_the_mean_ap():
    frame = tables.predictions_frame(np.array([0, 0, 1, 1]),
                                     np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1]]))
    r = ranking.ranking_stage(frame, ["a", "b", "c"])
    assert [cv["class"] for cv in r["pr_curves"]] == [0, 1, 2]
    assert r["pr_curves"][2] == {"class": 2, "ap": None, "points": []}     # no image of class c
    # class a: 0.8 (a), 0.4 (a), 0.3, 0.2 -> AP 1; class b: 0.7 (b), 0.6 (b), 0.5 (a) -> AP 1
    assert r["pr_curves"][0]["ap"] == pytest.approx(1) and r["pr_curves"][1]["ap"] == pytest.approx(1)
    assert r["mean_ap"] == pytest.approx(1)
    assert r["top_k"][0] == {"k": 1, "accuracy": 0.75}


def test_the_cli_line_says_how_many_errors_were_near_misses():
    r = {"top_k": [{"k": 1, "accuracy": 0.91}, {"k": 2, "accuracy": 0.98}, {"k": 3, "accuracy": 1.0},
                   {"k": 5, "accuracy": 1.0}], "mean_ap": 0.96}
    assert ranking_lines(r, 900, 10_000) == [
        "ranking: top-2 98.00%, top-3 100.00% (700 of the 900 errors have the right class second); "
        "mean average precision over the classes 0.9600"]
    assert ranking_lines({"top_k": [{"k": 1, "accuracy": 0.5}], "mean_ap": 1.0}, 1, 2) == []   # two classes
