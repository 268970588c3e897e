"""Reviews of suspected label errors: the store's table, the mapping to a split's rows, the API, the export and the
Label issues view's review buttons, on a copy of the tiny analysed run of tests/conftest.py."""
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from deepdive.analysis.results import AnalysisResult
from deepdive.analysis.reviews import review_row, review_source, reviews_by_row
from deepdive.errors import DeepdiveError
from deepdive.store import Store
from deepdive.store.schema import SCHEMA_VERSION


@pytest.fixture()
def ws(analyzed_run, copy_workspace, tmp_path):
    return copy_workspace(analyzed_run.workspace, tmp_path / "ws")


def test_store_keeps_one_review_per_image(tmp_path):
    with Store.open(tmp_path) as store:
        store.set_label_review("mnist", "test", 7, 4, "relabel", 9, run_id="r1")
        store.set_label_review("mnist", "test", 3, 1, "ambiguous")
        store.set_label_review("mnist", "train", 7, 2, "keep")
        store.set_label_review("mnist", "test", 7, 4, "keep", run_id="r2")   # replaces the first
        got = store.label_reviews("mnist", "test")
        assert [(r["idx"], r["verdict"], r["label"], r["run_id"]) for r in got] == [(3, "ambiguous", None, None),
                                                                                  (7, "keep", None, "r2")]
        assert len(store.label_reviews("mnist")) == 3 and store.label_reviews("fashion-mnist") == []
        for bad, match in ((("relabel", None), "needs the right label"), (("keep", 3), "only it takes one"),
                           (("relabel", 4), "the label it already has"), (("wrong", None), "unknown review verdict")):
            with pytest.raises(DeepdiveError, match=match):
                store.set_label_review("mnist", "test", 7, 4, *bad)
        assert store.delete_label_review("mnist", "test", 7) and not store.delete_label_review("mnist", "test", 7)
        assert [r["idx"] for r in store.label_reviews("mnist", "test")] == [3]


def test_a_version_2_store_gains_the_table(tmp_path):
    """A workspace from before reviews (schema v2: no label_reviews table, no runs.notes) is migrated when
    opened."""
    Store.open(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / "deepdive.sqlite")) as db, db:
        db.execute("DROP TABLE label_reviews")
        db.execute("DROP TABLE epoch_metrics")
        db.execute("DROP TABLE image_tags")
        db.execute("DROP TABLE histograms")
        db.execute("ALTER TABLE runs DROP COLUMN notes")
        db.execute("PRAGMA user_version = 2")
    with Store.open(tmp_path) as store:
        assert store._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 8
        store.set_label_review("mnist", "test", 1, 2, "ambiguous")
        assert len(store.label_reviews("mnist")) == 1


def test_reviews_follow_the_image_across_runs(ws, analyzed_run):
    """A review is keyed by the image: the same test image in a second run's analysis shows it at its own row."""
    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    ex = res.examples
    with Store.open(ws, create=False) as store:
        rec = store.get_run(analyzed_run.run_id)
        assert review_source(rec, "test") == "test" and review_source(rec, "val") == "train"
        row = int(res.label_issues["row"].iat[0]) if len(res.label_issues) else 5
        given = int(ex["true"].iat[row])
        other = (given + 1) % res.num_classes
        out = review_row(store, rec, "test", ex, res.num_classes, row, "relabel", other)
        assert out["review"]["idx"] == int(ex["idx"].iat[row]) and out["review"]["given_label"] == given
        assert {r: v["label"] for r, v in reviews_by_row(store, rec, "test", ex).items()} == {row: other}
        # the same images in another order (another run's analysis): found at their new rows
        shuffled = ex.iloc[::-1].reset_index(drop=True)
        assert list(reviews_by_row(store, rec, "test", shuffled)) == [len(ex) - 1 - row]
        assert reviews_by_row(store, rec, "test", ex.iloc[:0]) == {}
        with pytest.raises(DeepdiveError, match="outside"):
            review_row(store, rec, "test", ex, res.num_classes, row, "relabel", res.num_classes)
        review_row(store, rec, "test", ex, res.num_classes, row, None)
        assert reviews_by_row(store, rec, "test", ex) == {}


def test_api_and_export(ws, analyzed_run, run_cli, tmp_path):
    from deepdive.web.app import create_app

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    base = f"/api/runs/{analyzed_run.run_id}/splits/test/reviews"
    row = 3
    given = int(res.examples["true"].iat[row])
    with TestClient(create_app(ws)) as client:
        assert client.get(base).json() == {"source": "test", "reviews": {}}
        r = client.put(f"{base}/{row}", json={"verdict": "relabel", "label": (given + 1) % 10})
        assert r.status_code == 200 and r.json()["review"]["label"] == (given + 1) % 10
        assert client.put(f"{base}/4", json={"verdict": "ambiguous"}).status_code == 200
        got = client.get(base).json()["reviews"]
        assert sorted(got) == ["3", "4"] and got["4"]["verdict"] == "ambiguous"
        for body, status in (({"verdict": "relabel", "label": given}, 422), ({"verdict": "nonsense"}, 422),
                             ({"verdict": "relabel", "label": 10}, 422), ({"label": 1}, 422)):
            assert client.put(f"{base}/{row}", json=body).status_code == status, body
        assert client.put(f"{base}/{len(res.examples)}", json={"verdict": "keep"}).status_code == 404
        assert client.put("/api/runs/nope/splits/test/reviews/1", json={"verdict": "keep"}).status_code == 404
        assert client.delete(f"{base}/4").json() == {"row": 4, "review": None}
    out = tmp_path / "reviews.csv"
    proc = run_cli("export", analyzed_run.run_id, "reviews", "--out", str(out), "--workspace", str(ws))
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert table[["row", "idx", "true", "verdict", "label"]].values.tolist() == [
        [row, int(res.examples["idx"].iat[row]), given, "relabel", (given + 1) % 10]]
    assert table["pred"].tolist() == [int(res.examples["pred"].iat[row])]


def test_label_issues_view_saves_reviews(ws, analyzed_run):
    from test_web_browser import served_page

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    issues = res.label_issues
    assert len(issues) >= 2, "the tiny run should flag a few labels"
    first, second = (int(r) for r in issues["row"].iloc[:2])
    suggested = int(res.examples["suggested_label"].iat[first])
    with served_page(ws) as (url, page, errors):
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/issues")
        page.wait_for_selector('[data-testid="review-summary"]:has-text("Reviewed 0 of")')
        cell = f'[data-testid="review"][data-row="{first}"]'
        assert page.input_value(f"{cell} select") == str(suggested)   # relabel proposes the suggested label
        assert page.inner_text(cell).split() == ["Relabel", "Label", "right", "Ambiguous", *res.class_names]
        page.click(f'{cell} button[data-verdict="relabel"]')
        page.wait_for_selector(f'{cell} button[data-verdict="relabel"].active')
        page.click(f'[data-testid="review"][data-row="{second}"] button[data-verdict="keep"]')
        page.wait_for_selector('[data-testid="review-summary"]:has-text("Reviewed 2 of")')
        # accuracy against the reviewed labels: the first image scored against its new (the suggested) label
        ex = res.examples
        assert ex["pred"].iat[first] == suggested, "the check below needs the relabel to change the image's score"
        wrong = int((~ex["correct"]).sum()) - int(ex["pred"].iat[first] != ex["true"].iat[first]) \
            + int(ex["pred"].iat[first] != suggested)
        assert (f"(1 relabelled, 0 ambiguous left out) accuracy reads {100 * (1 - wrong / len(ex)):.2f}%, "
                f"{wrong} errors of {len(ex):,}") in page.inner_text('[data-testid="review-summary"]')
        # saved in the workspace: a fresh page shows them, and clicking the active verdict forgets it
        page.reload()
        page.wait_for_selector(f'{cell} button[data-verdict="relabel"].active')
        page.click(f'{cell} button[data-verdict="relabel"]')
        page.wait_for_selector('[data-testid="review-summary"]:has-text("Reviewed 1 of")')
        # an ambiguous image is left out of that accuracy; then back to "label right"
        other = f'[data-testid="review"][data-row="{second}"]'
        page.click(f'{other} button[data-verdict="ambiguous"]')
        wrong = int((~ex["correct"]).sum()) - int(ex["pred"].iat[second] != ex["true"].iat[second])
        page.wait_for_selector(f'[data-testid="review-summary"]:has-text("(0 relabelled, 1 ambiguous left out) '
                               f'accuracy reads {100 * (1 - wrong / (len(ex) - 1)):.2f}%, {wrong} errors of '
                               f'{len(ex) - 1:,}")')
        page.click(f'{other} button[data-verdict="keep"]')
        page.wait_for_selector(f'{other} button[data-verdict="keep"].active')
        with Store.open(ws, create=False) as store:
            saved = store.label_reviews("mnist", "test")
        assert [(r["idx"], r["verdict"]) for r in saved] == [(int(res.examples["idx"].iat[second]), "keep")]

        # any image can be reviewed from its detail: here a mistake confident learning did not flag
        shown = page.eval_on_selector_all(".tax-block .thumb[data-row]", "ts => ts.map(t => Number(t.dataset.row))")
        unflagged = next(r for r in shown if not ex["label_issue"].iat[r])
        page.click(f'.tax-block .thumb[data-row="{unflagged}"]')
        in_detail = f'#detail [data-testid="review"][data-row="{unflagged}"]'
        page.wait_for_selector(in_detail)
        # relabel proposes the model's answer when nothing is suggested
        assert page.input_value(f"{in_detail} select") == str(int(ex["pred"].iat[unflagged]))
        page.click(f'{in_detail} button[data-verdict="relabel"]')
        page.wait_for_selector(f'{in_detail}:has-text("saved")')
        page.wait_for_selector('[data-testid="review-summary"]:has-text("in this split: 1 relabel, 1 label right")')
        page.click('[data-testid="detail-close"]')
        with Store.open(ws, create=False) as store:
            saved = {r["idx"]: (r["verdict"], r["label"]) for r in store.label_reviews("mnist", "test")}
        assert saved[int(ex["idx"].iat[unflagged])] == ("relabel", int(ex["pred"].iat[unflagged]))

        # the reviewed images in the Predictions table: all of them, then one verdict
        page.click('[data-testid="list-reviewed"]')
        page.wait_for_selector('main[data-view="predictions"] [data-testid="row-count"][data-count="2"]')
        page.select_option('[data-testid="filter-review"]', "relabel")
        page.wait_for_selector('[data-testid="row-count"][data-count="1"]')
        assert page.get_attribute(".vrow", "data-row") == str(unflagged)
        assert page.inner_text(".vrow [data-testid=review-badge]") == f"relabel → {int(ex['pred'].iat[unflagged])}"

        # by keyboard: a verdict key reviews the current image and moves on; the same verdict again forgets it
        page.evaluate("h => { location.hash = h; }", f"#/r/{analyzed_run.run_id}/test/issues")
        page.wait_for_selector('main[data-view="issues"] tr.current')
        page.wait_for_selector('[data-testid="review-summary"]:has-text("Reviewed 1 of")')   # the keys wait for it
        assert page.get_attribute("tr.current", "data-row") == str(first)
        page.keyboard.press("a")
        page.wait_for_selector(f'{cell} button[data-verdict="ambiguous"].active')
        assert page.get_attribute("tr.current", "data-row") == str(second)
        page.keyboard.press("ArrowUp")
        page.keyboard.press("a")
        page.wait_for_selector(f'{cell} button.active', state="detached")
        page.wait_for_selector('[data-testid="review-summary"]:has-text("in this split: 1 relabel, 1 label right, 0 ambiguous")')

        # a report written now carries that review, read-only
        from deepdive.web.report import build_report

        out = Path(ws) / "report.html"
        build_report(ws, analyzed_run.run_id, "test", out)
        page.goto(f"{out.as_uri()}#/r/{analyzed_run.run_id}/test/issues")
        page.wait_for_selector('[data-testid="review-summary"]:has-text("Reviewed 1 of")')
        assert page.inner_text(f'[data-testid="review"][data-row="{second}"]') == "Label right"
        assert page.inner_text(f'[data-testid="review"][data-row="{first}"]') == "–"
        assert page.locator('[data-testid="review"] button').count() == 0
    assert not errors, errors


def test_apply_reviewed_labels():
    from deepdive.train.recipe import apply_reviewed_labels

    given = np.array([0, 1, 2, 3, 4, 5])
    train_idx, val_idx = np.array([0, 1, 2, 4]), np.array([3, 5])
    labels, t, v = apply_reviewed_labels(given, train_idx, val_idx, {"relabel": {"1": 7, "5": 0}, "leave_out": [2, 3]})
    assert labels.tolist() == [0, 7, 2, 3, 4, 0] and given.tolist() == [0, 1, 2, 3, 4, 5]   # a copy
    assert t.tolist() == [0, 1, 4] and v.tolist() == [5]
    labels, t, v = apply_reviewed_labels(given, train_idx, val_idx, None)
    assert labels.tolist() == given.tolist() and t is train_idx and v is val_idx
    with pytest.raises(DeepdiveError, match="training image 6: outside 0..5"):
        apply_reviewed_labels(given, train_idx, val_idx, {"relabel": {"6": 1}})


def test_training_with_reviewed_labels(ws, mnist, monkeypatch):
    """deepdive train --reviewed-labels: the workspace's reviews of training images, copied into the run's config;
    the validation split is the usual one less the left-out images."""
    from deepdive.train.recipe import PRESETS, train_val_indices
    from deepdive.train.run import train_and_evaluate

    train_idx, val_idx = train_val_indices(mnist.train_labels, PRESETS["fast"]["val_size"], 3000)
    moved, dropped, kept = int(train_idx[0]), int(val_idx[0]), int(train_idx[1])
    tiny = dict(epochs=1, limit_train=3000, limit_test=200, progress=False, workspace=ws)
    with pytest.raises(DeepdiveError, match="no reviewed labels of mnist's training images"):
        train_and_evaluate("mnist", "fast", reviewed_labels=True, **tiny)
    with Store.open(ws, create=False) as store:
        label = int(mnist.train_labels[moved])
        store.set_label_review("mnist", "train", moved, label, "relabel", (label + 1) % 10)
        store.set_label_review("mnist", "train", dropped, int(mnist.train_labels[dropped]), "ambiguous")
        store.set_label_review("mnist", "train", kept, int(mnist.train_labels[kept]), "keep")
        store.set_label_review("mnist", "test", 0, 7, "ambiguous")   # a test image: not for training
    from deepdive.train import recipe

    seen = {}
    train_one = recipe._train_one

    def spy(member_cfg, info, x_train, y_train, x_val, y_val, *args, **kwargs):
        seen.update(y_train=y_train.cpu().numpy(), y_val=np.asarray(y_val))
        return train_one(member_cfg, info, x_train, y_train, x_val, y_val, *args, **kwargs)

    monkeypatch.setattr(recipe, "_train_one", spy)
    result = train_and_evaluate("mnist", "fast", reviewed_labels=True, **tiny)
    # the net saw the new label, and validated without the left-out image
    assert seen["y_train"][0] == (label + 1) % 10 and seen["y_train"][1] == mnist.train_labels[kept]
    assert len(seen["y_train"]) == len(train_idx) and len(seen["y_val"]) == len(val_idx) - 1
    with Store.open(ws, create=False) as store:
        rec = store.get_run(result["run_id"])
        assert rec.config["reviewed_labels"] == {"relabel": {str(moved): (label + 1) % 10}, "leave_out": [dropped]}
        assert rec.recipe_text == "fast · 1 ep · seed 0 · 3,000 images · 2 reviewed labels"
        val = np.load(rec.run_dir / "val_indices.npy")
        assert dropped not in val and len(val) == len(val_idx) - 1
        # a review made on other data is refused before anything trains
        store.set_label_review("mnist", "train", kept, (int(mnist.train_labels[kept]) + 1) % 10, "keep")
        runs_before = len(store.list_runs())
    with pytest.raises(DeepdiveError, match=f"the review of training image {kept} was made on other data"):
        train_and_evaluate("mnist", "fast", reviewed_labels=True, **tiny)
    with Store.open(ws, create=False) as store:
        assert len(store.list_runs()) == runs_before


def test_a_logged_run_keeps_its_own_reviews(tmp_path):
    """A run logged with log_evaluation brings its own images (eval/<split>_inputs.npy): nothing says another run
    holds the same ones, so its reviews are keyed by the run, not the dataset's files."""
    from types import SimpleNamespace

    (tmp_path / "eval").mkdir()
    np.save(tmp_path / "eval" / "test_inputs.npy", np.zeros((2, 1, 4, 4), np.float32))
    logged = SimpleNamespace(id="20990101-000000-abcdef", run_dir=tmp_path)
    assert review_source(logged, "test") == "run:20990101-000000-abcdef/test"
    # a split without its own inputs is read from the dataset's files, as `analyze` reads it (analysis._load_split)
    assert review_source(logged, "val") == "train"
