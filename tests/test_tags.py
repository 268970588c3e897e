"""Tags people put on images: the store's table, the rows of a split, the API, the export, the report and the
dashboard (an image's detail adds and removes them, the predictions table filters by them), on a copy of the tiny
analysed run of tests/conftest.py."""
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from deepdive.analysis.results import AnalysisResult
from deepdive.analysis.tags import tag_row, tags_by_row
from deepdive.errors import DeepdiveError
from deepdive.store import Store


@pytest.fixture()
def ws(analyzed_run, copy_workspace, tmp_path):
    return copy_workspace(analyzed_run.workspace, tmp_path / "ws")


def test_store_keeps_each_tag_once_per_image(tmp_path):
    with Store.open(tmp_path) as store:
        store.add_tag("mnist", "test", 7, "blurry", run_id="r1")
        store.add_tag("mnist", "test", 7, "  blurry ", run_id="r2")          # again: kept as it was
        store.add_tag("mnist", "test", 7, "for the slides")
        store.add_tag("mnist", "train", 7, "blurry")
        got = store.image_tags("mnist", "test")
        assert [(t["idx"], t["tag"], t["run_id"]) for t in got] == [(7, "blurry", "r1"), (7, "for the slides", None)]
        assert len(store.image_tags("mnist")) == 3 and store.image_tags("mnist", "test", idx=3) == []
        for bad in ("", "   ", "-dash first", "a/b", "c++", "a&b=c", "x" * 41, None):
            with pytest.raises(DeepdiveError, match="invalid tag"):
                store.add_tag("mnist", "test", 7, bad)
        assert store.remove_tag("mnist", "test", 7, "blurry") and not store.remove_tag("mnist", "test", 7, "blurry")
        assert [t["tag"] for t in store.image_tags("mnist", "test")] == ["for the slides"]


def test_tags_follow_the_image_and_go_with_a_logged_runs_own(ws, analyzed_run):
    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    ex = res.examples
    with Store.open(ws, create=False) as store:
        rec = store.get_run(analyzed_run.run_id)
        assert tag_row(store, rec, "test", ex, 5, "check later") == {"row": 5, "tags": ["check later"]}
        assert tag_row(store, rec, "test", ex, 5, "9s") == {"row": 5, "tags": ["9s", "check later"]}
        assert store.image_tags("mnist", "test")[0]["idx"] == int(ex["idx"].iat[5])     # kept by the image
        assert tags_by_row(store, rec, "test", ex) == {5: ["9s", "check later"]}
        with pytest.raises(DeepdiveError, match="outside"):
            tag_row(store, rec, "test", ex, len(ex), "x")
        assert tag_row(store, rec, "test", ex, 5, "9s", remove=True)["tags"] == ["check later"]
        # a run logged with log_evaluation brings its own images: their tags are its own and go with it
        store.add_tag("custom", f"run:{rec.id}/test", 1, "mine")
        store.add_tag("mnist", "test", 2, "shared")
        store.delete_run(rec.id)
        assert [t["tag"] for t in store.image_tags("custom")] == [] and len(store.image_tags("mnist")) == 2


def test_api_export_and_report(ws, analyzed_run, run_cli, tmp_path):
    from deepdive.web.app import create_app
    from deepdive.web.report import build_report

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    base = f"/api/runs/{analyzed_run.run_id}/splits/test/tags"
    with TestClient(create_app(ws)) as client:
        assert client.get(base).json() == {"tags": {}}
        assert client.put(f"{base}/3", json={"tag": "blurry"}).json() == {"row": 3, "tags": ["blurry"]}
        assert client.put(f"{base}/4", json={"tag": "blurry"}).status_code == 200
        assert client.put(f"{base}/4", json={"tag": "thin 4"}).json()["tags"] == ["blurry", "thin 4"]
        assert client.get(base).json() == {"tags": {"3": ["blurry"], "4": ["blurry", "thin 4"]}}
        bad = client.put(f"{base}/3", json={"tag": "a/b"})
        assert bad.status_code == 422 and "invalid tag" in bad.json()["detail"]
        assert client.put(f"{base}/{len(res.examples)}", json={"tag": "x"}).status_code == 404
        assert client.put("/api/runs/nope/splits/test/tags/1", json={"tag": "x"}).status_code == 404
        assert client.request("DELETE", f"{base}/3", json={"tag": "blurry"}).json() == {"row": 3, "tags": []}
        # many at once (the predictions table's "tag these"), in one transaction
        many = client.post(base, json={"rows": [4, 5, 6], "tag": "batch"}).json()
        assert many["changed"] == 3 and many["tags"]["5"] == ["batch"] and many["tags"]["4"] == ["batch", "blurry",
                                                                                                  "thin 4"]
        assert client.post(base, json={"rows": [5, 6, 7], "tag": "batch"}).json()["changed"] == 1
        assert client.post(base, json={"rows": [1, len(res.examples)], "tag": "x"}).status_code == 422
        assert "x" not in str(client.get(base).json())                    # nothing half-written
        assert client.post(base, json={"rows": [4, 5, 6, 7], "tag": "batch", "remove": True}).json()["changed"] == 4
    out = tmp_path / "tags.csv"
    proc = run_cli("export", analyzed_run.run_id, "tags", "--out", str(out), "--workspace", str(ws))
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert table[["row", "idx", "tag"]].values.tolist() == [[4, int(res.examples["idx"].iat[4]), "blurry"],
                                                            [4, int(res.examples["idx"].iat[4]), "thin 4"]]
    assert table["pred"].tolist() == [int(res.examples["pred"].iat[4])] * 2 and set(table["run_id"]) == {
        analyzed_run.run_id}
    info = build_report(ws, analyzed_run.run_id, "test", tmp_path / "r.html")
    assert '"tags":{"4":["blurry","thin 4"]}' in (tmp_path / "r.html").read_text() and info["bytes"] > 0


def test_the_detail_tags_and_the_predictions_filter_by_them(ws, analyzed_run):
    from test_web_browser import served_page

    with served_page(ws) as (url, page, errors):
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/predictions")
        page.wait_for_selector(".vrow")
        rows = page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")[:2]
        for row, tag in ((rows[0], "blurry"), (rows[1], "blurry"), (rows[1], "for the slides")):
            page.click(f'.vrow[data-row="{row}"] .thumb')
            page.wait_for_selector(f'#detail[data-row="{row}"] [data-testid="tag-input"]')
            page.fill('[data-testid="tag-input"]', tag)
            page.press('[data-testid="tag-input"]', "Enter")
            page.wait_for_selector(f'[data-testid="tag"]:has-text("{tag}")')
        assert page.eval_on_selector_all('[data-testid="tag"]', "ts => ts.map(t => t.firstChild.textContent)") == [
            "blurry", "for the slides"]
        page.fill('[data-testid="tag-input"]', "a/b")
        page.press('[data-testid="tag-input"]', "Enter")
        page.wait_for_selector('[data-testid="tag-status"]:has-text("invalid tag")')
        page.keyboard.press("Escape")
        page.select_option('[data-testid="filter-tag"]', "blurry")
        page.wait_for_selector('[data-testid="row-count"][data-count="2"]')
        assert page.url.endswith("/predictions/tag=blurry")
        assert sorted(page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")) == sorted(rows)
        assert page.inner_text(f'.vrow[data-row="{rows[1]}"] [data-testid="row-tags"]') == "blurry · for the slides"
        # taking a tag off in the detail updates the filtered list
        page.click(f'.vrow[data-row="{rows[0]}"] .thumb')
        page.click('[data-testid="tag"]:has-text("blurry") button')
        page.wait_for_selector('[data-testid="row-count"][data-count="1"]')
        # a fresh page opens on the same filter (the link), the tags loaded from the workspace
        page.reload()
        page.wait_for_selector('[data-testid="row-count"][data-count="1"]')
        assert page.input_value('[data-testid="filter-tag"]') == "blurry"
        # one tag on every listed image: the wrong answers, then listed by that tag
        correct = AnalysisResult.load(analyzed_run.run_dir, "test").examples["correct"]
        wrong = int((~correct).sum())
        page.click('[data-testid="filter-reset"]')
        page.select_option('[data-testid="filter-correct"]', "wrong")
        page.wait_for_selector(f'[data-testid="row-count"][data-count="{wrong}"]')
        assert not page.is_visible('[data-testid="tag-listed-form"]')
        page.click('[data-testid="tag-listed"]')
        page.fill('[data-testid="tag-listed-input"]', "wrong ones")
        page.click('[data-testid="tag-listed-add"]')
        page.wait_for_selector(f'[data-testid="tag-listed-status"]:has-text("on {wrong} images")')
        assert page.inner_text('[data-testid="tag-listed-status"]') == f'put "wrong ones" on {wrong} images'
        page.select_option('[data-testid="filter-correct"]', "all")
        page.select_option('[data-testid="filter-tag"]', "wrong ones")
        page.wait_for_selector(f'[data-testid="row-count"][data-count="{wrong}"]')
        page.reload()                                       # a tag with a space survives the link
        page.wait_for_selector(f'[data-testid="row-count"][data-count="{wrong}"]')
        assert page.input_value('[data-testid="filter-tag"]') == "wrong ones"
        # the Overview counts each tag and links to its images
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/overview")
        page.wait_for_selector('[data-testid="overview-tag"]')
        one = f"1 image, {0 if correct.iat[rows[1]] else 1} wrong"      # the image with both tags
        assert page.eval_on_selector_all('[data-testid="overview-tag"]', "ts => ts.map(t => t.textContent)") == [
            f"wrong ones · {wrong} images, {wrong} wrong", f"blurry · {one}", f"for the slides · {one}"]
        page.click('[data-testid="overview-tag"]:has-text("blurry")')
        page.wait_for_selector('[data-testid="row-count"][data-count="1"]')
        assert page.input_value('[data-testid="filter-tag"]') == "blurry"
        assert not errors, errors


def test_tag_from_python(ws, analyzed_run):
    import deepdive

    dive = deepdive.open_run(analyzed_run.run_id, workspace=ws)
    assert dive.tag([1, 2, 2], "from python") == 2 and dive.tag(3, "from python") == 1
    assert dive.table("tags")["row"].tolist() == [1, 2, 3]
    assert dive.tag([1, 2, 3], "from python", remove=True) == 3 and dive.table("tags").empty


def test_training_images_take_tags_in_the_training_dynamics(ws, analyzed_run, run_cli, tmp_path):
    """A training image's card in the Training dynamics view takes tags as a test image's detail does: kept with
    the image (the val split's images share them), 404 for an image the run did not train on, in the dynamics
    export and, as they were, in a report."""
    from test_web_browser import served_page

    from deepdive.web.app import create_app
    from deepdive.web.report import build_report

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    first = int(res.summary["dynamics"]["flagged"][0])           # the first card of "Training labels in doubt"
    base = f"/api/runs/{analyzed_run.run_id}/splits/test/dynamics/tags"
    with TestClient(create_app(ws)) as client:
        assert client.get(base).json() == {"tags": {}}
        assert client.put(f"{base}/{first}", json={"tag": "thin"}).json() == {"idx": first, "tags": ["thin"]}
        assert client.put(f"{base}/{first}", json={"tag": "a/b"}).status_code == 422
        assert client.put(f"{base}/{10 ** 7}", json={"tag": "x"}).status_code == 404
        assert client.get(base).json() == {"tags": {str(first): ["thin"]}}
        # many at once (a selection in the data map), in one transaction: an image the run did not train on
        # refuses the whole request
        second = int(res.summary["dynamics"]["flagged"][1])
        assert client.post(base, json={"idx": [first, 10 ** 7], "tag": "pair"}).status_code == 404
        assert client.post(base, json={"idx": [first, 10 ** 30], "tag": "pair"}).status_code == 404
        many = client.post(base, json={"idx": [first, second, second], "tag": "pair"}).json()
        assert many == {"changed": 2, "tags": {str(first): ["pair", "thin"], str(second): ["pair"]}}
        assert client.post(base, json={"idx": [first, second], "tag": "pair", "remove": True}).json() == {
            "changed": 2, "tags": {str(first): ["thin"]}}
    with Store.open(ws, create=False) as store:
        assert [(t["source"], t["idx"]) for t in store.image_tags("mnist")] == [("train", first)]
    out = tmp_path / "dyn.csv"
    assert run_cli("export", analyzed_run.run_id, "dynamics", "--out", str(out), "--workspace", str(ws)).returncode == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert table.loc[table["idx"] == first, "tags"].tolist() == ["thin"] and set(table["tags"]) == {"", "thin"}
    build_report(ws, analyzed_run.run_id, "test", tmp_path / "r.html")
    assert f'"tags":{{"{first}":["thin"]}}' in (tmp_path / "r.html").read_text()

    with served_page(ws) as (url, page, errors):
        page.goto(f"{url}#/r/{analyzed_run.run_id}/test/dynamics")
        card = f'[data-testid="dynamics-flagged"] [data-idx="{first}"]'
        page.wait_for_selector(f'{card} [data-testid="tag"]:has-text("thin")')
        assert "null" not in page.inner_text('[data-testid="dynamics-flagged"]')      # untagged cards: just the box
        page.fill(f'{card} [data-testid="tag-input"]', "check later")
        page.press(f'{card} [data-testid="tag-input"]', "Enter")
        page.wait_for_selector(f'{card} [data-testid="tag"]:has-text("check later")')
        page.click(f'{card} [data-testid="tag"]:has-text("thin") button')
        page.wait_for_function(f"() => document.querySelectorAll('{card} [data-testid=\"tag\"]').length === 1")
        page.wait_for_selector('[data-testid="dynamics-tag"]:has-text("check later · 1")')
        # a selection in the data map takes one tag on all its images; the tag line lists them again
        page.wait_for_selector('[data-testid="dynamics-map"] .nsewdrag')
        page.evaluate("""idxs => { const p = document.querySelector('[data-testid="dynamics-map"]');
            const text = p.data[0].text, ks = idxs.map(i => text.findIndex(t => t.startsWith('#' + i + ' ')));
            p.emit('plotly_selected', {points: ks.map(k => ({customdata: k}))}); }""", [first, second])
        page.wait_for_selector('[data-testid="dynamics-selection-count"][data-count="2"]')
        page.click('[data-testid="tag-selected"]')
        page.fill('[data-testid="tag-selected-input"]', "pair")
        page.click('[data-testid="tag-selected-add"]')
        page.wait_for_selector('[data-testid="tag-selected-status"]:has-text(\'put "pair" on 2 images\')')
        page.wait_for_selector(f'{card} [data-testid="tag"]:has-text("pair")')       # the card's tags again
        page.evaluate("() => document.querySelector('[data-testid=\"dynamics-map\"]').emit('plotly_deselect')")
        page.wait_for_selector('[data-testid="dynamics-selection"]:empty', state="attached")
        page.click('[data-testid="dynamics-tag"]:has-text("pair · 2")')
        page.wait_for_selector('[data-testid="dynamics-selection-count"][data-count="2"]')
        assert not errors, errors
    with TestClient(create_app(ws)) as client:
        assert client.get(base).json() == {"tags": {str(first): ["check later", "pair"], str(second): ["pair"]}}
