"""Weight and gradient histograms (deepdive.train.histograms): what one holds, the store's table, the recipe's and
run.watch's per epoch, the export, the API and the Overview's distributions in a browser."""
import math

import pytest
import torch

from deepdive.errors import DeepdiveError
from deepdive.store import Store
from deepdive.train.histograms import BINS, parameter_histograms


def test_a_histogram_holds_every_value_and_its_exact_moments():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[2].bias.zero_()                                   # a constant tensor: one bin holds it all
    before = parameter_histograms(model)
    assert [(h["name"], h["kind"]) for h in before] == [("0.weight", "weight"), ("0.bias", "weight"),
                                                        ("2.weight", "weight"), ("2.bias", "weight")]  # no grads yet
    model(torch.randn(8, 6)).pow(2).sum().backward()
    hists = {(h["name"], h["kind"]): h for h in parameter_histograms(model)}
    assert len(hists) == 8
    for (name, kind), h in hists.items():
        p = dict(model.named_parameters())[name]
        t = (p if kind == "weight" else p.grad).detach().reshape(-1).double()
        assert len(h["counts"]) == BINS and sum(h["counts"]) == t.numel()
        assert h["lo"] == pytest.approx(t.min().item(), abs=1e-6) and h["mean"] == pytest.approx(t.mean().item(), abs=1e-6)
        assert h["std"] == pytest.approx(t.std(correction=0).item(), abs=1e-6)
        assert h["hi"] == pytest.approx(t.max().item(), abs=1e-6) or h["lo"] == h["hi"] - max(abs(h["lo"]) * 1e-6, 1e-12)
    # the bins split [lo, hi] evenly: the values below the middle fill the lower half
    w = model[0].weight.detach().reshape(-1)
    h = hists[("0.weight", "weight")]
    assert sum(h["counts"][:BINS // 2]) == int((w < (h["lo"] + h["hi"]) / 2).sum())
    assert hists[("2.bias", "weight")]["counts"][0] == 2
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")                   # a diverged tensor has no histogram to draw
    assert ("0.weight", "weight") not in {(x["name"], x["kind"]) for x in parameter_histograms(model)}


def entry(name="fc.weight", kind="weight", counts=(1, 2, 3)):
    return {"name": name, "kind": kind, "lo": -1.0, "hi": 1.0, "mean": 0.1, "std": 0.5, "counts": list(counts)}


def test_the_store_keeps_them_with_their_epoch(tmp_path):
    with Store.open(tmp_path / "ws") as store:
        rid = store.create_run("h", "mnist", {}, {}, ["0", "1"], "cpu").id
        store.log_epoch(rid, 1, 0.5, 0.8, 0.4, 0.85, 0.1, 1.0, histograms=[entry(), entry(kind="grad"),
                                                                            entry("conv.weight")])
        store.log_epoch(rid, 2, 0.4, 0.9, 0.3, 0.9, 0.1, 1.0, histograms=[entry(counts=(3, 2, 1))])
        got = store.histograms(rid)
        assert [(h["name"], h["kind"], h["epoch"]) for h in got] == [
            ("fc.weight", "weight", 1), ("fc.weight", "weight", 2), ("fc.weight", "grad", 1), ("conv.weight", "weight", 1)]
        assert got[1]["counts"] == [3, 2, 1] and got[0]["std"] == 0.5
        store.log_epoch(rid, 1, 0.5, 0.8, 0.4, 0.85, 0.1, 1.0)         # re-logged: its histograms go with it
        assert [h["epoch"] for h in store.histograms(rid)] == [2]
        for bad, match in [(entry(kind="bias"), "kind must be one of weight, grad"),
                           ({**entry(), "lo": math.nan}, "lo <= hi, finite"), ({**entry(), "counts": [1, -2]},
                                                                               "counts not negative"),
                           ({"name": "x"}, "a histogram needs name, kind")]:
            with pytest.raises(DeepdiveError, match=match):
                store.log_epoch(rid, 3, 0.5, 0.8, 0.4, 0.85, 0.1, 1.0, histograms=[bad])
        assert [e["epoch"] for e in store.epochs(rid)] == [1, 2]      # a bad histogram logs nothing of its epoch


def test_a_version_7_store_gains_the_table(tmp_path):
    import sqlite3
    from contextlib import closing

    Store.open(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / "deepdive.sqlite")) as db, db:
        db.execute("DROP TABLE histograms")
        db.execute("PRAGMA user_version = 7")
    with Store.open(tmp_path) as store:
        assert store._query("PRAGMA user_version")[0][0] == 8
        rid = store.create_run("h", "mnist", {}, {}, ["0", "1"], "cpu").id
        store.log_epoch(rid, 1, 0.5, 0.8, 0.4, 0.85, 0.1, 1.0, histograms=[entry()])
        assert len(store.histograms(rid)) == 1


def test_the_recipe_records_them_each_epoch(analyzed_run):
    from deepdive.models import load_checkpoint

    got = analyzed_run.store.histograms(analyzed_run.run_id)
    model = load_checkpoint(analyzed_run.run_dir / "model_last.pt")
    names = [n for n, _ in model.named_parameters()]
    assert sorted({h["name"] for h in got}) == sorted(names)
    assert {(h["kind"], h["epoch"]) for h in got} == {("weight", 1), ("grad", 1)}
    last = {h["name"]: h for h in got if h["kind"] == "weight"}
    for name, p in model.named_parameters():       # the weights as the epoch left them: the kept last checkpoint's
        assert sum(last[name]["counts"]) == p.numel()
        assert last[name]["mean"] == pytest.approx(p.detach().float().mean().item(), abs=1e-5)


def test_watch_records_your_models(tmp_path):
    import deepdive

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    run = deepdive.init(name="watched", workspace=tmp_path / "ws")
    assert run.watch(model) is model
    with pytest.raises(DeepdiveError, match="watch takes a torch.nn.Module, got list"):
        run.watch([model])
    for _ in range(2):
        model(torch.randn(4, 3)).sum().backward()
        run.log(train_loss=1.0)
    run.finish()
    with Store.open(tmp_path / "ws", create=False) as store:
        got = store.histograms(run.id)
    assert {(h["name"], h["kind"], h["epoch"]) for h in got} == {(n, k, e) for n in ("0.weight", "0.bias")
                                                                  for k in ("weight", "grad") for e in (1, 2)}
    grads = [h for h in got if h["name"] == "0.bias" and h["kind"] == "grad"]
    assert [h["mean"] for h in grads] == pytest.approx([4.0, 8.0])     # accumulated: the loop never zeroed them


def test_export_and_api(analyzed_run, tmp_path, run_cli, client):
    from test_analysis_pipeline import exported_run_table

    rows = analyzed_run.store.histograms(analyzed_run.run_id)
    for back in exported_run_table(analyzed_run, tmp_path, run_cli, "histograms"):
        assert back.columns.tolist()[:7] == ["epoch", "name", "kind", "lo", "hi", "mean", "std"]
        assert back.columns.tolist()[7:] == [f"b{i}" for i in range(BINS)] and len(back) == len(rows)
        first = back.iloc[0]
        want = next(r for r in rows if (r["name"], r["kind"]) == (first["name"], first["kind"]))
        assert first[[f"b{i}" for i in range(BINS)]].tolist() == want["counts"]
    series = client.get(f"/api/runs/{analyzed_run.run_id}/histograms").json()
    assert len(series) == len(rows) and {s["kind"] for s in series} == {"weight", "grad"}
    assert series[0]["epoch"] == [1] and series[0]["counts"][0] == rows[0]["counts"]
    bundle = client.get(f"/api/runs/{analyzed_run.run_id}/splits/test/bundle").json()
    assert bundle["histograms"] == series


def test_the_overview_draws_their_distributions(tmp_path):
    """The Overview's Weights and gradients: the median and the bands per epoch for the chosen parameter (weights
    and gradient), a table of every parameter; a click on a row draws it."""
    from test_web_browser import served_page

    import deepdive

    ws = tmp_path / "ws"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 2))
    run = deepdive.init(name="watched", workspace=ws)
    run.watch(model)
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(16, 1, 6, 6)).sum().backward()
        with torch.no_grad():
            model[0].weight.mul_(2)                         # the weights' spread doubles each epoch
        run.log(train_loss=1.0, val_acc=0.5)
    run.log_evaluation(model, (torch.rand(20, 1, 6, 6), torch.randint(0, 2, (20,))), class_names=["a", "b"],
                       progress=False)
    with Store.open(ws, create=False) as store:
        weights = [h for h in store.histograms(run.id) if h["name"] == "0.weight" and h["kind"] == "weight"]
    with served_page(ws) as (url, page, errors):
        page.goto(f"{url}#/r/{run.id}/test/overview")
        page.wait_for_selector('[data-testid="hist-weight"] .scatterlayer .trace')
        assert page.input_value('[data-testid="hist-param"]') == "0.weight"
        data = page.evaluate("() => document.querySelector('[data-testid=\"hist-weight\"]').data")
        assert len(data) == 9 and data[8]["x"] == [1, 2, 3]     # four bands (two edges each) and the median
        lows, highs = data[0]["y"], data[1]["y"]                  # the outer band: least to greatest value
        assert lows == pytest.approx([h["lo"] for h in weights], rel=1e-3, abs=1e-6)
        assert highs == pytest.approx([h["hi"] for h in weights], rel=1e-3, abs=1e-6)
        spread = [b - a for a, b in zip(lows, highs)]
        assert spread[1] == pytest.approx(2 * spread[0], rel=1e-3) and spread[2] == pytest.approx(4 * spread[0], rel=1e-3)
        assert page.locator('[data-testid="hist-table"] tbody tr').count() == 4
        page.click('[data-testid="weights"] details summary')
        page.click('[data-testid="hist-table"] tr[data-param="0.bias"]')
        page.wait_for_function("() => document.querySelector('[data-testid=\"hist-grad\"]').layout.title.text"
                               ".startsWith('0.bias')")
        assert page.input_value('[data-testid="hist-param"]') == "0.bias"
        assert not errors, errors
