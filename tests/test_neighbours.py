"""Nearest training images (deepdive.analysis.neighbours): the search, the stored result of the analysed tiny run of
tests/conftest.py against the model's own features, the API, the report and the image detail in a browser."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepdive.analysis.neighbours import K, nearest, readings, reference_set
from deepdive.analysis.results import AnalysisResult
from deepdive.errors import DeepdiveError


def test_nearest_is_the_exact_cosine_top_k():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(700, 12)).astype(np.float32)
    queries = np.concatenate([refs[[5, 123]] * 3.0, rng.normal(size=(40, 12)).astype(np.float32)])
    pos, sims = nearest(queries, refs, k=5, chunk=16)   # several chunks
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    expected = unit(queries) @ unit(refs).T
    order = np.argsort(-expected, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(pos, order)
    np.testing.assert_allclose(sims, np.take_along_axis(expected, order, 1), atol=1e-5)
    assert pos[0, 0] == 5 and pos[1, 0] == 123 and sims[0, 0] == pytest.approx(1.0)  # scale does not matter
    assert (np.diff(sims, axis=1) <= 0).all()
    pos, sims = nearest(queries[:3], refs[:2], k=8)     # fewer references than k
    assert pos.shape == sims.shape == (3, 2)
    with pytest.raises(DeepdiveError, match="queries"):
        nearest(queries[:, :5], refs)
    with pytest.raises(DeepdiveError, match="at least one reference"):
        nearest(queries, refs[:0])


def reading(labels, true, pred):
    """readings() of one image."""
    return str(readings(np.asarray([labels]), [true], [pred])[0])


def test_atypical_images_are_the_far_ones():
    """Images far from every reference cluster are flagged and rank as more atypical than every sampled reference
    image; images from the clusters are not; a reference row is never its own neighbour."""
    from deepdive.analysis import atypical

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    ref = np.repeat(centres, 150, axis=0) + rng.normal(scale=0.15, size=(600, 16))
    near = ref[::30] + rng.normal(scale=0.03, size=(20, 16))     # beside a reference image of each cluster
    far = rng.normal(size=(5, 16))
    queries = np.concatenate([near, far]).astype(np.float32)
    reference = atypical.reference_distances(ref, k=8, sample=300)
    assert len(reference) == 300 and (np.diff(reference) >= 0).all() and reference.min() > 0   # never itself
    _, sims = nearest(queries, ref, k=8)
    frame = pd.DataFrame({"true": np.zeros(25, int), "pred": np.r_[np.zeros(20, int), [1, 1, 0, 0, 0]]})
    entry = atypical.atypical_entry(atypical.knn_distance(sims), reference, frame)
    assert frame["atypical"].tolist() == [False] * 20 + [True] * 5
    assert (frame["atypicality"][20:] == 1.0).all() and (frame["atypicality"][:20] < 0.995).all()
    assert (entry["count"], entry["errors"], entry["total_errors"]) == (5, 2, 2)
    assert sorted(entry["rows"][:5]) == [20, 21, 22, 23, 24] and entry["reference_sample"] == 300
    assert entry["fence"] == pytest.approx(np.percentile(reference, 75) + 1.7 * (
        np.percentile(reference, 75) - np.percentile(reference, 25)))
    assert not atypical.atypical_entry(np.zeros(3), reference[:2], frame.iloc[:3].copy())["available"]


def test_reading():
    assert reading([9, 9, 9, 9, 9, 4, 4, 4], true=4, pred=9) == "prediction"
    assert reading([4, 4, 4, 4, 4, 9, 9, 9], true=4, pred=9) == "label"
    assert reading([4, 4, 4, 4, 9, 9, 9, 9], true=4, pred=9) == "mixed"     # half is no majority
    assert reading([7, 7, 7, 7, 7, 7, 4, 9], true=4, pred=9) == "mixed"     # a third class
    assert reading([4, 4, 4, 4, 4, 9, 9, 9], true=4, pred=4) == "label"     # a correct image


def test_reference_set_is_what_the_run_trained_on(mnist, tmp_path):
    from deepdive.analysis.label_issues import training_indices

    config = {"limit_train": 200}
    run = SimpleNamespace(dataset="mnist", data_source={}, class_names=list(mnist.class_names), config=config)
    plain = reference_set(run)
    np.testing.assert_array_equal(plain.idx, training_indices(mnist.train_labels, config))
    first, second = int(plain.idx[0]), int(plain.idx[1])
    new_label = (int(mnist.train_labels[first]) + 1) % 10
    run.config = {**config, "reviewed_labels": {"relabel": {str(first): new_label}, "leave_out": [second]}}
    reviewed = reference_set(run)
    assert reviewed.labels[first] == new_label and second not in reviewed.idx and len(reviewed.idx) == 199
    assert reference_set(SimpleNamespace(dataset="custom", run_dir=tmp_path)) is None   # logged without train_data


def test_stored_neighbours_are_the_models_nearest_training_images(analyzed_run, mnist):
    from deepdive.analysis.embedding import penultimate_features
    from deepdive.analysis.label_issues import training_indices
    from deepdive.models import load_checkpoint

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    info = res.summary["neighbours"]
    train_idx = training_indices(mnist.train_labels, analyzed_run.store.get_run(analyzed_run.run_id).config)
    assert info["available"] and info["k"] == K and info["reference_size"] == len(train_idx) == 3000
    nb = res.neighbours()
    n = res.summary["n"]
    assert nb["index"].shape == nb["similarity"].shape == nb["label"].shape == (n, K)
    assert np.isin(nb["index"], train_idx).all()           # never a validation image
    np.testing.assert_array_equal(nb["label"], mnist.train_labels[nb["index"]])
    assert (np.diff(nb["similarity"], axis=1) <= 1e-6).all()

    # recomputed independently from the checkpoint's features for a few rows (errors first)
    model = load_checkpoint(analyzed_run.run_dir / "model_best.pt", device="cpu")
    frame = res.examples
    rows = np.concatenate([np.flatnonzero(~frame["correct"].to_numpy())[:3], [0, 1]])
    as_input = lambda images: torch.from_numpy(images[:, None].astype(np.float32) / 255)  # noqa: E731
    ref = penultimate_features(model, as_input(mnist.train_images[train_idx]))
    query = penultimate_features(model, as_input(mnist.test_images[frame["idx"].to_numpy()[rows]]))
    sims = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (ref / np.linalg.norm(ref, axis=1, keepdims=True)).T
    best = np.sort(sims, axis=1)[:, ::-1][:, :K]
    np.testing.assert_allclose(nb["similarity"][rows], best, atol=1e-4)
    assert (nb["index"][rows, 0] == train_idx[sims.argmax(axis=1)]).mean() >= 0.8   # ties aside

    # each row's reading is in the examples table, and the summary counts the errors' readings
    every = [reading(nb["label"][r], int(frame["true"][r]), int(frame["pred"][r])) for r in range(n)]
    assert frame["neighbours"].tolist() == every
    errors = np.flatnonzero(~frame["correct"].to_numpy())
    counts = {"prediction": 0, "label": 0, "mixed": 0}
    for r in errors:
        counts[every[r]] += 1
    assert info["errors"] == counts and sum(counts.values()) == res.summary["error_count"]
    assert set(every) - {"prediction"} and counts["prediction"], "a tiny 1-epoch run has errors of both kinds"
    vote = np.array([np.bincount(row).argmax() for row in np.asarray(nb["label"])])
    assert info["knn_accuracy"] == pytest.approx((vote == frame["true"].to_numpy()).mean())

    # each row's distance to its neighbours and how atypical that is among the training images (atypical.py)
    typical = info["atypical"]
    np.testing.assert_allclose(frame["knn_distance"], 1 - nb["similarity"].mean(axis=1), atol=1e-6)
    assert typical["available"] and typical["reference_sample"] == 2000 and typical["count"] == frame["atypical"].sum()
    assert frame["atypical"].tolist() == (frame["knn_distance"] > typical["fence"]).tolist()
    assert typical["errors"] == int((frame["atypical"] & ~frame["correct"]).sum())
    assert typical["rows"] == np.argsort(-frame["knn_distance"].to_numpy(), kind="stable")[:48].tolist()
    assert frame["atypicality"].between(0, 1).all() and 0.3 < frame["atypicality"].median() < 0.7   # as typical


def test_api_and_report(analyzed_run, tmp_path):
    from fastapi.testclient import TestClient

    from deepdive.web.app import create_app
    from deepdive.web.report import build_report

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    nb = res.neighbours()
    row = int(np.flatnonzero(~res.examples["correct"].to_numpy())[0])
    base = f"/api/runs/{analyzed_run.run_id}/splits/test/neighbours"
    with TestClient(create_app(analyzed_run.workspace)) as client:
        got = client.get(f"{base}/{row}")
        assert got.status_code == 200, got.text
        body = got.json()
        assert [i["idx"] for i in body["items"]] == nb["index"][row].tolist()
        assert [i["label"] for i in body["items"]] == nb["label"][row].tolist()
        assert all(i["image"].startswith("data:image/png;base64,") for i in body["items"])
        assert body["reading"] == reading(nb["label"][row], int(res.examples["true"][row]),
                                          int(res.examples["pred"][row]))
        assert client.get(f"{base}/{res.summary['n']}").status_code == 404
        bundle = client.get(f"/api/runs/{analyzed_run.run_id}/splits/test/bundle").json()
        codes = {"prediction": 0, "label": 1, "mixed": 2}
        assert bundle["examples"]["columns"]["neighbours"] == [codes[v] for v in res.examples["neighbours"]]
        assert bundle["examples"]["columns"]["atypical"] == res.examples["atypical"].astype(int).tolist()
        np.testing.assert_allclose(bundle["examples"]["columns"]["knn_distance"], res.examples["knn_distance"],
                                   atol=1e-6)
    info = build_report(analyzed_run.workspace, analyzed_run.run_id, "test", tmp_path / "r.html")
    assert info["neighbour_rows"] == len(res.focus_indices)    # the tiny run's focus set fits the budget


def test_the_image_detail_shows_them(analyzed_run, copy_workspace, tmp_path):
    from test_web_browser import served_page

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    frame = res.examples
    with served_page(ws) as (url, page, errors):
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/overview")
        summary = page.inner_text('[data-testid="neighbours-summary"]')
        e = res.summary["neighbours"]["errors"]
        assert f"{e['prediction']} errors sit among training images of the class it predicted" in summary
        # each count lists its errors in the predictions table
        page.click('[data-testid="neighbours-1"]')
        page.wait_for_selector(f'[data-testid="row-count"][data-count="{e["label"]}"]')
        assert page.input_value('[data-testid="filter-neighbours"]') == "1"
        assert page.input_value('[data-testid="filter-correct"]') == "wrong"
        shown = page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")
        assert shown and all(frame["neighbours"][r] == "label" and not frame["correct"][r] for r in shown)
        page.click('[data-testid="filter-reset"]')
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/predictions")
        page.wait_for_selector(".vrow")
        page.select_option('[data-testid="filter-correct"]', "wrong")
        # the first error the table shows (its order depends on the run, and rows far down are not drawn yet)
        page.wait_for_selector(f'[data-testid="row-count"][data-count="{int((~frame["correct"]).sum())}"]')
        row = int(page.get_attribute(".vrow", "data-row"))
        labels = res.neighbours()["label"][row]
        true, pred = int(frame["true"][row]), int(frame["pred"][row])
        assert not frame["correct"][row]
        page.click(f'.vrow[data-row="{row}"] .thumb')
        text = page.inner_text('[data-testid="neighbours-reading"]')
        assert "nearest among 3,000 mnist training images" in text
        assert f"{int((labels == true).sum())} labelled {true} (its label)" in text or not (labels == true).any()
        assert page.locator('[data-testid="neighbours"] .nb-img').count() == K
        assert page.locator('[data-testid="neighbours"] .nb-true').count() == int((labels == true).sum())
        assert page.locator('[data-testid="neighbours"] .nb-pred').count() == int((labels == pred).sum())
        # the Label issues view shows each flagged image's neighbours: red, labelled as suggested
        first = int(res.label_issues["row"].iat[0])
        suggested = int(frame["suggested_label"][first])
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/issues")
        cell = f'[data-testid="issue-neighbours"][data-row="{first}"]'
        page.wait_for_selector(f"{cell} .nb-img")
        first_labels = res.neighbours()["label"][first]
        assert page.locator(f"{cell} .nb-img").count() == K
        assert page.locator(f"{cell} .nb-pred").count() == int((first_labels == suggested).sum())
        assert page.locator(f"{cell} .nb-true").count() == int((first_labels == frame["true"][first]).sum())

        # the Overview's atypical images: the count, the most atypical first, listed in the predictions table in
        # that order, each with the reading in its detail
        typical = res.summary["neighbours"]["atypical"]
        assert typical["count"] > 0, "a 1-epoch model on 3,000 images has test images unlike them"
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/overview")
        text = page.inner_text('[data-testid="atypical-summary"]')
        assert f"{typical['count']:,} of the 1,000 images lie farther" in text
        assert f"{typical['errors']} of the {typical['total_errors']} errors are among them" in text
        thumbs = page.eval_on_selector_all('[data-testid="atypical-thumbs"] .thumb', "ts => ts.map(t => +t.dataset.row)")
        assert thumbs == typical["rows"]
        page.click('[data-testid="to-atypical"]')
        page.wait_for_selector(f'[data-testid="row-count"][data-count="{typical["count"]}"]')
        assert page.input_value('[data-testid="sort"]') == "dist-desc"
        shown = page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")
        assert shown == typical["rows"][:len(shown)] and all(frame["atypical"][r] for r in shown)
        page.click(f'.vrow[data-row="{shown[0]}"] .thumb')
        line = page.inner_text('[data-testid="neighbours-typicality"]')
        assert line.startswith("Atypical: its nearest training images lie at a mean cosine distance of "
                               f"{frame['knn_distance'][shown[0]]:.3f}") and "beyond their outlier fence" in line
        assert not errors, errors


def test_your_own_model_with_its_training_data(tmp_path):
    """log_evaluation(train_data=...): a model of your own gets its images' nearest training images too."""
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image
    from test_api import TinyNet

    import deepdive
    from deepdive.analysis import analyze
    from deepdive.errors import RunError
    from deepdive.store import Store
    from deepdive.web.app import create_app

    torch.manual_seed(0)
    model = TinyNet()
    train_x = torch.rand(200, 3, 32, 32) * torch.rand(200, 1, 1, 1)   # brightness varies, so the images differ
    train_y = torch.randint(0, 5, (200,))
    picked = [3, 50, 120]          # the first evaluated images are copies of these training images
    test_x = torch.cat([train_x[picked], torch.rand(37, 3, 32, 32)])
    test_y = torch.randint(0, 5, (40,))
    ws = tmp_path / "ws"
    run = deepdive.log_evaluation(model, (test_x, test_y), class_names=list("abcde"), workspace=ws, progress=False,
                                  train_data=(train_x, train_y))
    res = AnalysisResult.load(run.run_dir, "test")
    info = res.summary["neighbours"]
    assert info["available"] and info["reference_size"] == 200
    assert info["reference"] == "training images given to log_evaluation"
    nb = res.neighbours()
    assert nb["index"][:3, 0].tolist() == picked and np.allclose(nb["similarity"][:3, 0], 1.0, atol=1e-5)
    np.testing.assert_array_equal(nb["label"], train_y.numpy()[nb["index"]])
    with TestClient(create_app(ws)) as client:
        body = client.get(f"/api/runs/{run.id}/splits/test/neighbours/1").json()
    assert [i["idx"] for i in body["items"]] == nb["index"][1].tolist()
    png = Image.open(io.BytesIO(base64.b64decode(body["items"][0]["image"].split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(png), np.rint(train_x[50].permute(1, 2, 0).numpy() * 255))

    with pytest.raises(DeepdiveError, match=r"train_data images have shape \(1, 32, 32\)"):
        deepdive.log_evaluation(model, (test_x, test_y), workspace=ws, progress=False,
                                train_data=(torch.rand(5, 1, 32, 32), torch.zeros(5, dtype=torch.long)))
    with pytest.raises(DeepdiveError, match="train_data labels go up to 7 but the model outputs 5 classes"):
        deepdive.log_evaluation(model, (test_x, test_y), workspace=ws, progress=False,
                                train_data=(train_x[:5], torch.full((5,), 7)))
    with Store.open(ws, create=False) as store, pytest.raises(RunError, match="no recipe"):
        analyze(store, run.id, "train", progress=False)     # the stored training images are no recipe to retrain
