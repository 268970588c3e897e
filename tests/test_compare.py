"""`deepdive compare` / the Compare view: two analysed runs' mistakes on the same images (deepdive.analysis.compare),
on the tiny analysed run of tests/conftest.py and a second tiny run of another seed beside it."""
import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from deepdive.analysis.compare import compare_runs, text_summary
from deepdive.analysis.robustness import FAMILIES
from deepdive.analysis.results import AnalysisResult
from deepdive.errors import DeepdiveError, RunError
from deepdive.store import Store


@pytest.fixture(scope="module")
def pair(analyzed_run, copy_workspace, tmp_path_factory):
    """(workspace, run A = the tiny analysed run, run B = the same recipe at seed 1, analysed), store records."""
    from deepdive.analysis import analyze
    from deepdive.train.run import train_and_evaluate

    ws = copy_workspace(analyzed_run.workspace, tmp_path_factory.mktemp("compare") / "ws")
    b = train_and_evaluate("mnist", "fast", workspace=ws, epochs=1, limit_train=3000, limit_test=1000, seed=1,
                           progress=False, name="seed1")
    with Store.open(ws, create=False) as store:
        analyze(store, b["run_id"], "test", progress=False)
        rec_a, rec_b = store.get_run(analyzed_run.run_id), store.get_run(b["run_id"])
    return ws, rec_a, rec_b


def test_groups_are_each_images_fate_in_both_runs(pair):
    _, a, b = pair
    res = compare_runs(a, b)
    fa, fb = (AnalysisResult.load(r.run_dir, "test").examples for r in (a, b))
    wa, wb = ~fa["correct"].to_numpy(), ~fb["correct"].to_numpy()
    assert res["n"] == len(fa) == 1000
    assert (res["a"]["id"], res["b"]["id"], res["a"]["errors"], res["b"]["errors"]) == (a.id, b.id, wa.sum(), wb.sum())
    for key, mask, conf in (("fixed", wa & ~wb, fa), ("new", ~wa & wb, fb), ("both", wa & wb, fa)):
        g = res[key]
        assert sorted(g["rows"]) == np.flatnonzero(mask).tolist(), key
        assert g["idx"] == fa["idx"].to_numpy()[g["rows"]].tolist()
        assert g["true"] == fa["true"].to_numpy()[g["rows"]].tolist()
        assert g["pred_a"] == fa["pred"].to_numpy()[g["rows"]].tolist()
        assert g["pred_b"] == fb["pred"].to_numpy()[g["rows"]].tolist()
        c = conf["confidence"].to_numpy()[g["rows"]]
        assert np.all(np.diff(c) <= 0), f"{key}: not most confident first"
    # two seeds of a 1-epoch run on 3,000 images: each makes tens of errors, and they do not all agree
    assert res["fixed"]["rows"] and res["new"]["rows"] and res["both"]["rows"]
    both = wa & wb
    assert res["both_same_prediction"] == int((both & (fa["pred"].to_numpy() == fb["pred"].to_numpy())).sum())
    fixed, new = len(res["fixed"]["rows"]), len(res["new"]["rows"])
    assert res["paired"] == {"fixed": fixed, "new": new, "p_value": round(binomtest(fixed, fixed + new, 0.5).pvalue, 4)}
    assert f"B fixes {fixed} of A's errors and makes {new} new" in res["verdict"]
    swapped = compare_runs(b, a)
    assert (swapped["paired"]["fixed"], swapped["paired"]["new"]) == (new, fixed)


def test_this_runs_slices_in_both_runs(pair):
    """Where A fails most (its listed slices), each run's errors on the slice's images and B's paired change there."""
    from deepdive.analysis.slices import members

    _, a, b = pair
    res = compare_runs(a, b)
    ra = AnalysisResult.load(a.run_dir, "test")
    wb = ~AnalysisResult.load(b.run_dir, "test").examples["correct"].to_numpy()
    listed = ra.summary["slices"]["listed"][:10]
    assert len(res["slices"]) == len(listed) > 0
    ex = ra.examples
    for s, item in zip(res["slices"], listed):
        inside = members(ex[f"img_{item['property']}"].to_numpy(), ex["true"].to_numpy(), item)
        assert (s["description"], s["images"], s["errors_a"]) == (item["description"], item["images"], item["errors"])
        assert s["errors_b"] == int((inside & wb).sum())
        assert s["errors_a"] - s["errors_b"] == s["paired"]["fixed"] - s["paired"]["new"]
    assert f"in A's slice {listed[0]['description']}" in text_summary(res)


def test_what_fools_each_run_on_the_same_right_answers(pair):
    """Both searches drew the same pictures (robustness: a sample of all of them, then each run's right answers):
    per kind of change, the flips up to its headline size on the right answers of both, and the paired split."""
    _, a, b = pair
    res = compare_runs(a, b)
    ta, tb = (AnalysisResult.load(r.run_dir, "test").robustness() for r in (a, b))
    assert [r["id"] for r in res["robustness"]] == [f.id for f in FAMILIES]
    for r, family in zip(res["robustness"], FAMILIES):
        sa, sb = (t[(t["family"] == family.id) & ~t["mending"]].set_index("row")["size"] for t in (ta, tb))
        common = sa.index.intersection(sb.index)
        # the samples coincide but for the pictures one run gets wrong
        assert len(common) == r["pictures"] >= 0.8 * max(len(sa), len(sb))
        fa, fb = (s.loc[common].astype(float).round(6) <= family.headline for s in (sa, sb))
        assert (r["flipped_a"], r["flipped_b"]) == (int(fa.sum()), int(fb.sum()))
        assert (r["paired"]["fixed"], r["paired"]["new"]) == (int((fa & ~fb).sum()), int((~fa & fb).sum()))
    adv = res["robustness"][-1]
    assert f"flips {adv['flipped_a']} of {adv['pictures']} right answers of both in A" in text_summary(res)


def test_what_cannot_be_compared_says_why(pair, tmp_path):
    _, a, b = pair
    with pytest.raises(DeepdiveError, match="same run"):
        compare_runs(a, a)
    with pytest.raises(RunError, match=r"no analysis of its 'val' split .* deepdive analyze"):
        compare_runs(a, b, "val")
    with pytest.raises(DeepdiveError, match="different datasets"):
        compare_runs(a, dataclasses.replace(b, dataset="fashion-mnist"))
    # B evaluated on other images: a copy of its run folder whose examples table lost its first 10 rows
    other = tmp_path / "other"
    shutil.copytree(b.run_dir, other)
    path = other / "analysis" / "test" / "examples.parquet"
    pd.read_parquet(path).iloc[10:].reset_index(drop=True).to_parquet(path)
    with pytest.raises(DeepdiveError, match=r"different images of the 'test' split \(1,000 and 990 images\); .*"
                                            "without --limit-test"):
        compare_runs(a, dataclasses.replace(b, id="other", run_dir=other))
    # models of your own: the hint is theirs
    with pytest.raises(DeepdiveError, match="two models logged with log_evaluation on the same data"):
        compare_runs(dataclasses.replace(a, model_arch="pickled"),
                     dataclasses.replace(b, id="other", run_dir=other, model_arch="pickled"))


def test_a_run_without_analysis_compares_by_its_predictions(pair, tmp_path):
    """verify-advice's retrained runs, and any run nobody analysed, are compared through their stored predictions."""
    ws, a, b = pair
    bare = dataclasses.replace(b, run_dir=tmp_path / "bare")   # the same run, its analysis folder out of reach
    with pytest.raises(RunError, match="no analysis"):
        compare_runs(a, bare)                                  # without the store, the analysis is all there is
    full = compare_runs(a, b)
    with Store.open(ws, create=False) as store:
        res = compare_runs(a, bare, store=store)
        with pytest.raises(RunError, match="neither an analysis nor stored predictions of its 'val' split"):
            compare_runs(bare, a, "val", store=store)
    assert (res["a"]["analysed"], res["b"]["analysed"], full["b"]["analysed"]) == (True, False, True)
    assert res["b"]["errors"] == full["b"]["errors"] and res["b"]["accuracy"] == pytest.approx(full["b"]["accuracy"])
    for key in ("fixed", "new", "both"):
        for part in ("rows", "idx", "true", "pred_a", "pred_b"):
            assert res[key][part] == full[key][part], (key, part)
    assert (res["paired"], res["verdict"]) == (full["paired"], full["verdict"])
    from deepdive.analysis.compare import text_summary

    assert "(not analysed: read from its stored predictions)" in text_summary(res).splitlines()[1]
    assert "not analysed" not in text_summary(full)


def test_cli_compare(pair, run_cli):
    ws, a, b = pair
    done = run_cli("compare", a.id, "seed1", "--workspace", ws, "--json")
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res == json.loads(json.dumps(compare_runs(a, b)))
    text = run_cli("compare", a.id, "seed1", "--workspace", ws)
    assert text.returncode == 0, text.stderr
    first = res["fixed"]["idx"][0]
    assert res["verdict"] in text.stdout and f"fixed by B: #{first} " in text.stdout
    missing = run_cli("compare", a.id, "nope", "--workspace", ws)
    assert missing.returncode != 0 and "no run 'nope'" in missing.stderr


def test_api_compare(pair):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepdive.web.app import create_app

    ws, a, b = pair
    with TestClient(create_app(ws)) as client:
        got = client.get(f"/api/runs/{a.id}/splits/test/compare/{b.id}")
        assert got.status_code == 200 and got.json() == json.loads(json.dumps(compare_runs(a, b)))
        assert client.get(f"/api/runs/{a.id}/splits/test/compare/nope").status_code == 404
        assert client.get(f"/api/runs/{a.id}/splits/..%2F..%2Fetc/compare/{b.id}").status_code == 404
        val = client.get(f"/api/runs/{a.id}/splits/val/compare/{b.id}")
        assert val.status_code == 404 and "deepdive analyze" in val.json()["detail"]
        same = client.get(f"/api/runs/{a.id}/splits/test/compare/{a.id}")
        assert same.status_code == 422 and "same run" in same.json()["detail"]


def test_compare_view_shows_each_group(pair):
    """The served dashboard's Compare view, run A against B (the only other run, so picked by default)."""
    from test_web_browser import served_page

    ws, a, b = pair
    expected = compare_runs(a, b)
    with served_page(ws) as (url, page, errors):
        page.goto(f"{url}#/r/{a.id}/test/compare")
        page.wait_for_selector('[data-testid="compare-verdict"]')
        assert page.input_value('[data-testid="compare-with"]') == b.id
        assert page.inner_text('[data-testid="compare-verdict"]') == expected["verdict"]
        assert page.locator('[data-testid="compare-slices"] tbody tr').count() == len(expected["slices"]) > 0
        assert page.locator('[data-testid="compare-robustness"] tbody tr').count() == len(expected["robustness"]) \
            == len(FAMILIES)
        for key in ("fixed", "new", "both"):
            rows = page.eval_on_selector_all(f'[data-testid="compare-{key}"] .thumb',
                                             "ts => ts.map(t => Number(t.dataset.row))")
            assert rows == expected[key]["rows"], key
        # captions read "true→wrong answer", the answer of the run that got it wrong
        first_new = page.inner_text('[data-testid="compare-new"] figcaption >> nth=0')
        g = expected["new"]
        assert first_new.startswith(f"{g['true'][0]}→{g['pred_b'][0]} · ") and first_new.endswith("%")
        # an image opens its detail, as everywhere
        row = expected["new"]["rows"][0]
        page.click(f'[data-testid="compare-new"] .thumb[data-row="{row}"]')
        detail = page.wait_for_selector("#detail:not([hidden])")
        assert f"Image #{expected['new']['idx'][0]}" in detail.inner_text()

        # the runs page links two ticked runs here, the older as A; its link names B, which the view then shows
        page.goto(url)
        link = page.wait_for_selector('[data-testid="compare-pair-link"]')
        assert link.get_attribute("href") == f"#/r/{a.id}/test/compare/{b.id}"
        page.click('[data-testid="compare-tick"] >> nth=0')
        assert "Tick two analysed runs" in page.inner_text('[data-testid="compare-pair"]')
        page.click('[data-testid="compare-tick"] >> nth=0')
        page.click('[data-testid="compare-pair-link"]')
        page.wait_for_selector('[data-testid="compare-verdict"]')
        assert page.input_value('[data-testid="compare-with"]') == b.id
        assert page.inner_text('[data-testid="compare-verdict"]') == expected["verdict"]
        # a link naming a run that cannot be B (here the run itself) says so and shows the one that can
        page.goto(f"{url}#/r/{b.id}/test/compare/{b.id}")   # a hash change: wait for B's page, not A's still there
        page.wait_for_selector(f'[data-testid="run-name"]:has-text("{b.name}")')
        page.wait_for_selector('[data-testid="compare-verdict"]')
        assert page.input_value('[data-testid="compare-with"]') == a.id
        assert f"Run {b.id} cannot be compared with this one" in page.inner_text("main")
    assert not errors, errors
