"""Slices (deepdive.analysis.slices): the measures read drawn shapes right; a planted slice of errors is found with a
p-value that is Fisher's, and only it; errors spread at random find nothing; what the tiny run's analysis stores."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

from deepdive.analysis import export
from deepdive.analysis.slices import (ALL, COLUMNS, FDR, SLICE_COLUMNS, backing, measure, measure_findings,
                                      members, slices_stage)


def canvas(n=1, size=28):
    return np.zeros((n, size, size), np.uint8)


def test_the_measures_of_drawn_shapes():
    pics = canvas(6)
    pics[0, 6:22, 12:15] = 255                 # a bar 3 wide, 16 tall, left of centre by half a pixel
    pics[1, 6:22, 10:15] = 255                 # 5 wide
    for row in range(6, 22):                   # a bar 3 wide leaning right by 20 degrees (top to the right)
        x = int(round(13 + (14 - row) * np.tan(np.radians(20))))
        pics[2, row, x:x + 3] = 255
    pics[3, 2:6, 2:6] = 255                    # two blobs apart
    pics[3, 20:24, 20:24] = 255                # their centre of mass (12.5, 12.5), one pixel off each way
    pics[4, 5, 5] = pics[4, 6, 6] = 255        # touching at a corner: one piece (8-connected)
    # pics[5] stays black: no ink
    m, inverted = measure(pics)
    assert not inverted
    assert m["thickness"][0] == pytest.approx(3.0) and m["thickness"][1] == pytest.approx(5.0)
    assert (m["height"][0], m["width"][0]) == (16, 3) and (m["height"][1], m["width"][1]) == (16, 5)
    assert m["offset"][0] == pytest.approx(0.5) and abs(m["slant"][0]) < 0.05
    assert 17 <= m["slant"][2] <= 23          # the drawn lean, up to the pixels' rounding
    assert list(m["pieces"][:5]) == [1, 1, 1, 2, 1]
    assert m["ink"][0] == pytest.approx(48 / 784, abs=1e-3) and m["brightness"][0] == pytest.approx(48 / 784, abs=1e-3)
    assert m["offset"][3] == pytest.approx(np.hypot(1, 1), abs=0.01) and m["pieces"][5] == 0 and m["ink"][5] == 0
    assert np.isnan(m["thickness"][5]) and np.isnan(m["slant"][5]) and np.isnan(m["offset"][5])


def test_dark_ink_on_light_paper_and_colour_pictures_measure_alike():
    pics = canvas(2)
    pics[0, 6:22, 12:15] = 255
    pics[1, 4:20, 8:12] = 200
    light, _ = measure(pics)
    dark, inverted = measure(255 - pics)
    assert inverted
    for key in ("thickness", "height", "width", "slant", "offset", "pieces", "ink"):
        np.testing.assert_allclose(dark[key], light[key], err_msg=key)
    colour, _ = measure(np.repeat(pics[..., None], 3, axis=3))
    for key in light:
        np.testing.assert_allclose(colour[key], light[key], atol=1e-3, err_msg=key)


def bars(rng, classes=10, per_class=300):
    """Pictures of vertical bars of random thickness (1-6 px) and height, labels in order."""
    n = classes * per_class
    pics = canvas(n)
    widths = rng.integers(1, 7, n)
    heights = rng.integers(10, 21, n)
    for i in range(n):
        top = 14 - heights[i] // 2
        pics[i, top:top + heights[i], 14 - widths[i] // 2:14 - widths[i] // 2 + widths[i]] = 255
    return pics, np.repeat(np.arange(classes), per_class)


def frame_of(true, wrong):
    pred = np.where(wrong, (true + 1) % 10, true)
    return pd.DataFrame({"true": true, "pred": pred, "correct": ~wrong})


def test_a_planted_slice_of_errors_is_found_with_fishers_p():
    rng = np.random.default_rng(0)
    pics, true = bars(rng)
    thickness, _ = measure(pics)
    thickness = thickness["thickness"]
    # the thick 3s (the class's widest bars, 5-6 px) go wrong half the time; elsewhere 1 in 100
    planted = (true == 3) & (thickness >= 5)
    wrong = np.where(planted, rng.random(len(true)) < 0.5, rng.random(len(true)) < 0.01)
    frame = frame_of(true, wrong)
    entry, table = slices_stage(pics, frame, [str(c) for c in range(10)])
    assert list(table.columns) == SLICE_COLUMNS and table["p"].is_monotonic_increasing
    assert set(COLUMNS) <= set(frame.columns) and np.array_equal(frame["img_thickness"], thickness)
    top = entry["listed"][0]
    assert (top["group"], top["property"], top["side"]) == (3, "thickness", "high") and top["found"]
    assert top["q"] <= FDR and entry["found"] >= 1 and entry["tested"] == len(table)
    # the listed rows are the class's bars at or above the threshold, and the p-value is Fisher's exact test of
    # their errors against the rest of the class
    rows = members(thickness, true, top)
    assert np.array_equal(rows, (true == 3) & (thickness >= top["thresholds"][3]))
    assert (rows.sum(), (rows & wrong).sum()) == (top["images"], top["errors"])
    rest = (true == 3) & ~rows
    _, p = fisher_exact([[top["errors"], top["images"] - top["errors"]],
                         [(rest & wrong).sum(), (rest & ~wrong).sum()]], alternative="greater")
    assert top["p"] == pytest.approx(p, rel=1e-9)
    assert top["taken_for"] == [[4, top["errors"]]] and top["augment"] == "thicken"
    # the advice's thicker strokes have it behind them, found first; slants have nothing
    assert backing(entry, {"overrides": {"augment": {"thicken": 0.2}}})[0] == top
    assert backing(entry, {"overrides": {"augment": {"rotate": 20}}}) == []
    assert backing(entry, {"overrides": {"augment": {"shear": 15}}}) == [
        item for item in entry["listed"] if item["property"] == "slant"]
    assert top["description"].startswith("3: the ") and "thickest" in top["description"]
    # every found slice is a cut of the planted one (the 3s' thick tails, or every class's thick tails, which
    # hold them)
    found = table[table["q"] <= FDR]
    assert set(found["property"]) <= {"thickness", "ink", "brightness", "contrast", "width"}
    assert set(found["group"]) <= {3, ALL} and set(found["side"]) == {"high"}
    thick = next(p for p in entry["properties"] if p["key"] == "thickness")
    assert thick["auroc"] > 0.6 and thick["q"] <= FDR
    assert any(f.startswith("higher in their class by ") and "thickness (" in f for f in measure_findings(entry))
    # the tenths of each class: every picture counted once, the errors with them
    assert sum(b[0] for b in thick["bins"]["all"]) == len(true)
    assert sum(b[1] for b in thick["bins"]["all"]) == wrong.sum()
    assert sum(b[1] for b in thick["bins"]["3"]) == (wrong & (true == 3)).sum()


def test_errors_spread_at_random_find_no_slice():
    rng = np.random.default_rng(1)
    pics, true = bars(rng)
    wrong = rng.random(len(true)) < 0.05
    entry, table = slices_stage(pics, frame_of(true, wrong), [str(c) for c in range(10)])
    assert entry["found"] == 0 and not (table["q"] <= FDR).any() and entry["tested"] > 200
    assert all(not item["found"] for item in entry["listed"])
    # ties (pieces: every bar is one piece) leave no tail to test but the whole class, which is no slice
    assert "pieces" not in set(table["property"])


def test_the_analysis_stores_them_and_the_export_lists_them(res, analyzed_run):
    entry = res.summary["slices"]
    assert entry["available"] and "slices" in res.summary["stage_seconds"]
    ex = res.examples
    assert set(COLUMNS) <= set(ex.columns)
    fresh, _ = measure(np.asarray(res.images))
    for key, col in zip(fresh, COLUMNS):
        np.testing.assert_array_equal(ex[col].to_numpy(), fresh[key], err_msg=col)
    table = export.table(res, "slices")
    assert list(table.columns) == SLICE_COLUMNS and len(table) == entry["tested"]
    assert table["p"].is_monotonic_increasing and ((table["q"] >= table["p"] - 1e-12) & (table["q"] <= 1)).all()
    true, wrong = ex["true"].to_numpy(), ~ex["correct"].to_numpy()
    for item in entry["listed"]:
        rows = members(ex[f"img_{item['property']}"].to_numpy(), true, item)
        assert (rows.sum(), (rows & wrong).sum()) == (item["images"], item["errors"])
    predictions = export.table(res, "predictions")
    assert set(COLUMNS) <= set(predictions.columns)


def test_measuring_in_chunks_changes_nothing(monkeypatch):
    from deepdive.analysis import slices

    rng = np.random.default_rng(2)
    pics, _ = bars(rng, classes=2, per_class=40)
    whole, _ = measure(pics)
    monkeypatch.setattr(slices, "CHUNK_PIXELS", 28 * 28 * 7)     # 7 pictures at a time: 12 chunks
    chunked, _ = measure(pics)
    for key in whole:
        np.testing.assert_array_equal(chunked[key], whole[key], err_msg=key)
