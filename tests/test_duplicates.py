"""Near-duplicates (deepdive.analysis.duplicates): planted copies are found, and only they; labels that disagree come
first; the train split leaves each image's own copy out; what the analysis of the tiny run stores."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from deepdive.analysis.duplicates import LISTED, duplicates_stage
from deepdive.analysis.neighbours import Reference, reference_set
from deepdive.analysis.results import AnalysisResult
from deepdive.errors import DeepdiveError


def noise(rng, n):
    return rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)


def frame_of(true, pred):
    return pd.DataFrame({"true": np.asarray(true, np.int64), "pred": np.asarray(pred, np.int64)})


@pytest.fixture
def planted():
    """30 noise training images (labels 0-2, dataset indices 100..129) and 12 analysed ones: row 0 a copy of
    training image 105 under its label, row 1 a brighter copy of 107 under another label, rows 4 and 9 one picture
    twice under two labels, rows 6 and 7 a second picture twice under one label."""
    rng = np.random.default_rng(0)
    train = noise(rng, 40)
    train[7] &= 0xFE                  # even, so that half of it is exactly half
    labels = np.zeros(130, np.int64)
    labels[100:130] = np.arange(30) % 3
    reference = Reference(images=np.concatenate([np.zeros((100, 8, 8), np.uint8), train[:30]]), labels=labels,
                          idx=np.arange(100, 130), name="planted training images")
    split = noise(rng, 12)
    split[0] = train[5]
    split[1] = train[7] // 2          # the same picture at half the brightness: cosine 1 all the same
    split[9] = split[4]
    split[7] = split[6]
    true = np.array([labels[105], (labels[107] + 1) % 3, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    true[6] = true[7] = 1
    pred = true.copy()
    pred[1] = labels[107]             # the model answers with the twin's label
    return reference, split[:, None].astype(np.float32) / 255, true, pred


def test_planted_copies_are_found_and_only_they(planted):
    reference, inputs, true, pred = planted
    frame = frame_of(true, pred)
    entry = duplicates_stage(inputs, reference, frame)
    assert entry["available"] and entry["reference_size"] == 30
    np.testing.assert_array_equal(np.flatnonzero(frame["duplicate_of_train"]), [0, 1])
    assert list(frame["train_twin"][:2]) == [105, 107]
    assert list(frame["train_twin_label"][:2]) == [reference.labels[105], reference.labels[107]]
    assert frame["train_twin_similarity"][:2].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert (frame["train_twin_similarity"][2:] < entry["similarity_cut"]).all()
    np.testing.assert_array_equal(np.flatnonzero(frame["duplicate_in_split"]), [4, 6, 7, 9])
    assert frame["split_twin"][4] == 9 and frame["split_twin"][9] == 4 and frame["split_twin"][6] == 7
    t = entry["train"]
    assert (t["count"], t["exact"], t["conflicts"], t["errors"]) == (2, 2, 1, 1)
    assert t["accuracy_duplicates"] == 0.5 and t["accuracy_rest"] == 1.0
    # the conflicting label first: row 1, then row 0
    assert [item[:3] for item in t["listed"]] == [[1, 107, reference.labels[107]], [0, 105, reference.labels[105]]]
    s = entry["split"]
    assert (s["count"], s["pairs_total"], s["conflicts"], s["exact"]) == (4, 2, 1, 2)
    assert [item[:2] for item in s["listed"]] == [[4, 9], [6, 7]]       # the pair of two labels first
    assert 0 < entry["scale"] and entry["similarity_cut"] == pytest.approx(1 - 0.13 * entry["scale"])
    assert LISTED >= 2


def test_the_export_lists_each_near_duplicate(planted):
    from deepdive.analysis import export

    reference, inputs, true, pred = planted
    frame = frame_of(true, pred).assign(idx=np.arange(500, 512), confidence=np.float32(0.9))
    duplicates_stage(inputs, reference, frame)
    result = SimpleNamespace(examples=frame, class_names=["zero", "one", "two"], run_dir=Path("r"), split="test")
    table = export.table(result, "duplicates")
    assert list(table.columns) == export.DUPLICATE_COLUMNS
    assert table[["kind", "row", "twin", "conflict"]].values.tolist() == [
        ["train", 1, 107, True], ["train", 0, 105, False],
        ["split", 4, 9, True], ["split", 9, 4, True], ["split", 6, 7, False], ["split", 7, 6, False]]
    assert table["twin_idx"].tolist()[2:] == [509, 504, 507, 506]
    assert table["twin_label_name"][0] == "zero one two".split()[reference.labels[107]]
    with pytest.raises(DeepdiveError, match="no near-duplicates"):
        export.table(SimpleNamespace(examples=frame_of(true, pred).assign(idx=0, confidence=1.0),
                                     class_names=["zero", "one", "two"], run_dir=Path("r"), split="test"),
                     "duplicates")


def test_the_train_split_leaves_each_images_own_copy_out(planted):
    reference, _, _, _ = planted
    images = reference.images.copy()
    images[118] = images[111]                       # two training images the same, labelled 2 and 0
    reference = Reference(images=images, labels=reference.labels, idx=reference.idx, name="train")
    inputs = images[100:130, None].astype(np.float32) / 255
    true = reference.labels[100:130]
    frame = frame_of(true, true)
    entry = duplicates_stage(inputs, reference, frame, exclude=reference.idx)
    np.testing.assert_array_equal(np.flatnonzero(frame["duplicate_of_train"]), [11, 18])
    assert frame["train_twin"][11] == 118 and frame["train_twin"][18] == 111   # not themselves
    assert entry["train"]["conflicts"] == 2 and entry["split"] is None
    assert (frame["split_twin"] == -1).all() and not frame["duplicate_in_split"].any()


def test_without_training_images_or_with_other_shapes(planted):
    reference, inputs, true, pred = planted
    entry = duplicates_stage(inputs, None, frame_of(true, pred))
    assert not entry["available"] and "train_data" in entry["reason"]
    with pytest.raises(DeepdiveError, match="64 values each and the training images 49"):
        duplicates_stage(inputs, Reference(images=np.zeros((3, 7, 7), np.uint8), labels=np.zeros(3, np.int64),
                                           idx=np.arange(3), name="small"), frame_of(true, pred))


def test_the_analysis_stores_them(analyzed_run, mnist):
    """The tiny run's test analysis: every row's training twin is its nearest training image in pixels."""
    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    entry, ex = res.summary["duplicates"], res.examples
    assert entry["available"] and "duplicates" in res.summary["stage_seconds"]
    images = res.images.reshape(len(ex), -1).astype(np.float64)
    trained = reference_set(analyzed_run.store.get_run(analyzed_run.run_id)).idx
    train = mnist.train_images.reshape(len(mnist.train_images), -1)[trained].astype(np.float64)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    for r in range(0, len(ex), max(1, len(ex) // 8)):      # brute force over every image the run trained on
        sims = train @ (images[r] / np.linalg.norm(images[r]))
        assert ex["train_twin_similarity"][r] == pytest.approx(sims.max(), abs=1e-4)
        assert ex["train_twin"][r] == trained[np.argmax(sims)]
    flagged = ex["duplicate_of_train"].to_numpy()
    assert flagged.sum() == entry["train"]["count"]
    assert (ex["train_twin_similarity"].to_numpy()[flagged] >= entry["similarity_cut"] - 1e-6).all()



def test_your_own_model_end_to_end(tmp_path, monkeypatch):
    """log_evaluation with train_data holding planted twins: the analysis finds them, the export lists them, and the
    dashboard (served and as a report) shows the pairs, filters the predictions by them and names them in an
    image's detail."""
    import torch
    from test_api import TinyNet
    from test_web_browser import served_page

    import deepdive
    from deepdive.analysis import export
    from deepdive.analysis.cli import json_summary, text_summary
    from fastapi.testclient import TestClient

    from deepdive.web import bundle as bundle_mod
    from deepdive.web.app import create_app
    from deepdive.web.report import build_report

    torch.manual_seed(0)
    train_x = torch.rand(300, 3, 16, 16) * torch.rand(300, 1, 1, 1)
    train_y = torch.randint(0, 4, (300,))
    test_x = torch.rand(60, 3, 16, 16)
    test_y = torch.randint(0, 4, (60,))
    test_x[[5, 17]] = train_x[[40, 41]]           # two leaked images: 5 under its label, 17 under another
    test_y[5], test_y[17] = train_y[40], (train_y[41] + 1) % 4
    test_x[30] = test_x[31]                      # twins within the test set, under two labels
    test_y[30], test_y[31] = 0, 1
    ws = tmp_path / "ws"
    run = deepdive.log_evaluation(TinyNet(num_classes=4), (test_x, test_y), class_names=list("abcd"), workspace=ws,
                                  progress=False, train_data=(train_x, train_y))
    res = AnalysisResult.load(run.run_dir, "test")
    d = res.summary["duplicates"]
    assert (d["train"]["count"], d["train"]["conflicts"]) == (2, 1)
    assert [item[:2] for item in d["train"]["listed"]] == [[17, 41], [5, 40]]
    assert d["split"]["listed"] == [[30, 31, pytest.approx(1.0, abs=1e-5)]]
    assert export.table(res, "duplicates")["row"].tolist() == [17, 5, 30, 31]
    line = [x for x in text_summary(res.summary, ws).splitlines() if x.startswith("near-duplicates")][0]
    assert "2 of a training image, 1 under another label; accuracy on them" in line
    assert "1 pair within the split, 1 under two labels" in line
    assert json_summary(res.summary)["duplicates"]["of_train"]["count"] == 2

    # the bundle carries the first listed twin's picture only: served, the other comes when shown; a report has one
    monkeypatch.setattr(bundle_mod, "DUPLICATE_PICTURES", 1)
    report = Path(build_report(ws, run.id, "test", tmp_path / "report.html")["path"])
    with TestClient(create_app(ws)) as client:
        base_api = f"/api/runs/{run.id}/splits/test/duplicates/pictures"
        got = client.get(f"{base_api}?idx=40,41")
        assert got.status_code == 200 and set(got.json()) == {"40", "41"}
        assert got.json()["41"].startswith("data:image/png;base64,")
        refused = client.get(f"{base_api}?idx=0")          # a training image no near-duplicate names
        assert refused.status_code == 404 and "not a listed near-duplicate" in refused.json()["detail"]
    with served_page(ws) as (url, page, errors):
        for base, pictures in ((url, 2), (report.as_uri(), 1)):
            page.goto(f"{base}#/r/{run.id}/test/overview")
            text = page.inner_text('[data-testid="duplicates-summary"]')
            assert "2 of the 60 images are near-duplicates of one of the 300 training images given to " \
                   "log_evaluation" in text and "1 of them under another label" in text, text
            assert "2 images repeat another of this split (1 pair, 1 under two labels)" in text
            pairs = page.locator('[data-testid="dup-train"] [data-testid="dup-pair"]')
            assert pairs.count() == 2 and "conflict" in pairs.first.get_attribute("class")
            page.wait_for_function("n => document.querySelectorAll('[data-testid=\"dup-train\"] img.dyn-img')"
                                   ".length === n", arg=pictures)          # the twins' pictures
            assert page.locator('[data-testid="dup-train"] .dyn-img.missing').count() == 2 - pictures
            assert page.locator('[data-testid="dup-split"] .thumb').count() == 2
            page.click('[data-testid="to-duplicates"]')
            page.wait_for_selector('[data-testid="row-count"][data-count="2"]')
            assert page.input_value('[data-testid="filter-duplicate"]') == "train"
            shown = page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")
            assert sorted(shown) == [5, 17]
            page.select_option('[data-testid="filter-duplicate"]', "none")
            page.wait_for_selector('[data-testid="row-count"][data-count="56"]')
            page.select_option('[data-testid="filter-duplicate"]', "train")
            page.click('.vrow[data-row="17"] .thumb')
            line = page.inner_text('[data-testid="detail-duplicate"]')
            assert "Almost the same picture as training image #41, labelled " \
                   f"{'abcd'[int(train_y[41])]}" in line and "The two labels differ" in line
        assert not errors, errors
