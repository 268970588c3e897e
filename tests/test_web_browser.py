"""The dashboard in a real browser: Playwright driving Debian's Chromium against `deepdive serve` (uvicorn in a
thread, free 127.0.0.1 port) and against the `deepdive report` export opened from file://.

Both run on a copy of the small analysed run whose run name and first class names are XSS payloads, so every
test also checks that data-derived text is rendered as text. Screenshots land in test-output/.
"""
import base64
import io
import json
import math
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_web_api import XSS_CLASSES, XSS_RUN, hostile_copy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWS = ("overview", "classes", "confusion", "slices", "saliency", "activations", "predictions", "confidence",
         "robustness", "issues", "dynamics", "embedding", "advice")
MODES = ("served", "report")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason=f"Debian's Chromium is not installed at {CHROMIUM} (make test installs it)")


# ---- fixtures ------------------------------------------------------------------------------------------------
# A verify-advice result in the shape deepdive.analysis.advice.verify_advice writes (retraining is too slow for
# these tests), so the Advice view's verification section is exercised too.
def _seed(seed, before, after, errors, fixed, new, baseline, retrained):
    return {"seed": seed, "baseline_run_id": baseline, "baseline_trained": seed > 0, "retrained_run_id": retrained,
            "retrained_run_name": "mnist-fast+shift-2" + (f"@seed{seed}" if seed else ""), "retrained": True,
            "accuracy": {"before": before, "after": after, "delta": after - before},
            "errors": {"before": errors[0], "after": errors[1], "delta": errors[1] - errors[0]},
            "paired": {"targeted": {"fixed": 0, "new": 0, "p_value": 1.0},
                       "errors": {"fixed": fixed, "new": new, "p_value": 0.5}}}


VERIFICATION = {
    "run_id": None, "retrained_run_id": "20990101-000000-abcdef", "retrained_run_name": "mnist-fast+shift-2",
    "split": "test", "suggestion": {"id": "shift-2", "title": "shift ±2 px", "text": "…", "overrides": {"augment": {"shift": 2}}},
    "overrides": {"augment": {"shift": 2}}, "accuracy": {"before": 0.99705, "after": 0.99815, "delta": 0.0011},
    "errors": {"before": 59, "after": 37, "delta": -22}, "targeted_confusions": [],
    "targeted_total": {"before": 20, "after": 12, "delta": -8},
    "paired": {"targeted": {"fixed": 9, "new": 1, "p_value": 0.0214},
               "errors": {"fixed": 14, "new": 4, "p_value": 0.0309}},
    "verdict": "helped: 9 targeted confusions fixed, 1 new (p = 0.021); all errors: 14 fixed, 4 new (p = 0.031); "
               "accuracy higher at 2 of 2 seeds, lower at 0",
    "seeds": [_seed(0, 0.9971, 0.9981, (29, 19), 8, 1, "orig", "20990101-000000-abcdef"),
              _seed(1, 0.9970, 0.9982, (30, 18), 6, 3, "20990101-000001-baseln", "20990101-000002-second")],
    "retrain_seconds": 12.5, "note": "two seeds, each with and without the suggestion",
    "robustness": [{"id": "shift", "label": "shift", "unit": "px", "headline": 2, "pictures": 980,
                    "flipped_before": 31, "flipped_after": 9, "paired": {"fixed": 25, "new": 3, "p_value": 0.00002},
                    "median_before": 4, "median_after": None}],
}


@pytest.fixture(scope="module")
def workspace(analyzed_run, tmp_path_factory):
    ws = hostile_copy(analyzed_run, tmp_path_factory.mktemp("web_browser"))
    verification = {**VERIFICATION, "run_id": analyzed_run.run_id}
    (ws / analyzed_run.run_id / "analysis" / "test" / "verify_advice.json").write_text(json.dumps(verification))
    return ws


@pytest.fixture(scope="module")
def expected(analyzed_run):
    """What the views must show, straight from the stored analysis."""
    from deepdive.analysis.channels import strongest
    from deepdive.analysis.results import AnalysisResult

    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    return {"frame": res.examples, "summary": res.summary, "layers": [x["name"] for x in res.activations()["layers"]],
            "methods": res.saliency_methods, "focus": res.focus_indices.tolist(), "run_id": analyzed_run.run_id,
            "class_reps": int((np.asarray(res.saliency(res.saliency_methods[0])["class_rep_index"]) >= 0).sum()),
            "saliency_errors": len(res.saliency(res.saliency_methods[0])["errors_index"]),
            "issues": len(res.label_issues), "advice": res.advice if res.has("advice") else None,
            "channels": {int(r): strongest(c) for r, c in zip(res.channels()["errors_index"], res.channels()["errors"])},
            "dynamics_idx": res.dynamics()["idx"].tolist(),
            "dynamics_easy": [int(i) for i in res.dynamics().query("region == 'easy' and aum >= 0")["idx"]],
            # test rows whose nearest training images include ones with a doubted label (those the bundle lists)
            "doubted_neighbours": {r: int(np.isin(row, res.summary["dynamics"]["flagged"]).sum())
                                   for r, row in enumerate(np.asarray(res.neighbours()["index"]))
                                   if np.isin(row, res.summary["dynamics"]["flagged"]).any()},
            "losses": [r[k] for r in analyzed_run.store.epochs(analyzed_run.run_id) for k in ("train_loss", "val_loss")],
            "precision": "bf16 autocast" if analyzed_run.store.get_run(analyzed_run.run_id).config["resolved"]["amp"]
            else "fp32"}


@contextmanager
def served_page(workspace):
    """A Chromium page beside `deepdive serve` of `workspace` (for test modules of their own, which this module's
    skip mark does not cover): yields (url, page, errors), errors collecting the page's uncaught exceptions."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (make test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with serving(workspace) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield url, page, errors
        finally:
            browser.close()


@contextmanager
def serving(workspace):
    """`deepdive serve` of `workspace` on a free 127.0.0.1 port, in a thread; yields its URL."""
    import uvicorn

    from deepdive.web.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(workspace), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(workspace):
    with serving(workspace) as url:
        yield url


@pytest.fixture(scope="module")
def report_url(workspace, expected, tmp_path_factory):
    from deepdive.web.report import build_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    build_report(workspace, expected["run_id"], "test", out)
    return out.as_uri()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Tab:
    """A page plus what it did: dialogs (an XSS would open one), page errors, every request URL."""

    def __init__(self, browser, url, run_id):
        self.page = browser.new_page(viewport={"width": 1440, "height": 900})
        self.url, self.run_id = url, run_id
        self.dialogs, self.errors, self.requests = [], [], []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)

    def view(self, name):
        self.page.evaluate("h => { location.hash = h; }", f"#/r/{self.run_id}/test/{name}")
        self.page.wait_for_selector(f'main[data-view="{name}"]')
        return self.page

    def count(self, selector):
        return self.page.locator(selector).count()

    def images_loaded(self, selector):
        """Wait until every <img> matching selector has decoded with a real size; returns how many there are."""
        self.page.wait_for_function("""sel => [...document.querySelectorAll(sel)].every(
            i => i.complete && i.naturalWidth > 0)""", arg=selector)
        return self.count(selector)


@pytest.fixture(params=MODES)
def tab(request, browser, expected):
    url = request.getfixturevalue("server_url" if request.param == "served" else "report_url")
    t = Tab(browser, url, expected["run_id"])
    t.mode = request.param
    yield t
    assert not t.dialogs, f"a dialog opened (script injection?): {t.dialogs}"
    assert not t.errors, f"page errors: {t.errors}"
    t.page.close()


# ---- tests ---------------------------------------------------------------------------------------------------
def view_checks(tab, expected) -> dict:
    """Per view: a check that waits for the view's content and compares it with the stored analysis."""
    frame, summary = expected["frame"], expected["summary"]
    n, c = len(frame), len(summary["class_names"])
    shown_errors = min(3, expected["saliency_errors"])
    advice = (expected["advice"] or {}).get("suggestions")

    def overview(p):
        p.wait_for_selector('[data-testid="loss-chart"] .scatterlayer .trace')
        # The loss axis (log) is labelled at 1-2-5 steps with full values near the losses; plotly's own labels
        # minor ticks with bare digits ("2".."9" under "0.1") or at uneven steps.
        ticks = p.eval_on_selector_all('[data-testid="loss-chart"] .ytick text', "ts => ts.map(t => t.textContent)")
        lo, hi = min(expected["losses"]), max(expected["losses"])
        mantissas = [float(t) / 10 ** math.floor(math.log10(float(t))) for t in ticks]
        # (1-2-5 steps are at most 2.5x apart: an axis widened to the steps around narrow losses stays within that)
        one_two_five = all(round(m, 6) in (1, 2, 5) and lo / 2.5 <= float(t) <= hi * 2.5
                           for m, t in zip(mantissas, ticks))
        # a deepdive-trained run says what its train and validation lines measure
        note = tab.count('[data-testid="curves-note"]') and p.inner_text('[data-testid="curves-note"]')
        cards = p.inner_text('[data-testid="overview-cards"]')
        # each top confusion whose errors share their strongest channel names it (the stored errors' channels)
        leads, names = [], XSS_CLASSES + summary["class_names"][len(XSS_CLASSES):]   # the workspace's names
        for tc in summary["top_confusions"][:6]:
            firsts = [expected["channels"][r]["toward"][0][0] for r in tc["indices"]
                      if r in expected["channels"] and expected["channels"][r]["toward"]]
            n = max((firsts.count(k) for k in set(firsts)), default=0)
            if n >= 2:
                k = min(k for k in set(firsts) if firsts.count(k) == n)
                leads.append(f"channel {k} lifts {names[tc['pred']]} most in {n} of "
                             f"{sum(r in expected['channels'] for r in tc['indices'])}; it fires most for")
        shown = p.eval_on_selector_all('[data-testid="confusion-channel"]', "cs => cs.map(c => c.textContent)")
        channels_ok = len(shown) == len(leads) and all(text.startswith(lead) for text, lead in zip(shown, leads))
        return f"{100 * summary['accuracy']:.2f}%" in cards and f"on cpu · {expected['precision']}" in cards and \
            len(ticks) >= 2 and one_two_five and bool(note) and "cross-entropy against the true labels" in note \
            and channels_ok

    def classes(p):
        thumbs = sum(min(48, row["errors"]) for row in summary["per_class"])
        ap = p.eval_on_selector_all('[data-testid="class-table"] tbody td:nth-child(6)', "ts => ts.map(t => t.textContent)")
        return tab.count('[data-testid="class-table"] tbody tr') == c and \
            tab.count('[data-testid="class-errors"] .thumb') == thumbs and \
            len(ap) == c and all(abs(float(t) - row["ap"]) <= 5e-6 + 1e-12 for t, row in zip(ap, summary["per_class"]))

    def confusion(p):
        cells = p.eval_on_selector_all("td.cm-cell", "cs => cs.map(c => Number(c.dataset.count))")
        return cells == [x for row in summary["confusion"]["counts"] for x in row]

    def saliency(p):
        # One map per class over its representative image (classes with no correct image say so instead).
        return tab.count('[data-testid="class-maps"] figure') == c and \
            tab.images_loaded('[data-testid="class-maps"] img.sal') == expected["class_reps"] and \
            tab.count(".sal-card") == min(24, expected["saliency_errors"]) and \
            tab.images_loaded(".sal-card:nth-child(-n+3) img.sal") == 2 * shown_errors

    def activations(p):
        p.wait_for_selector('[data-testid="layers"] .layer')
        names = p.eval_on_selector_all('[data-testid="layers"] .layer', "ls => ls.map(l => l.dataset.layer)")
        return names == expected["layers"] and tab.images_loaded(".layer-img") == len(names)

    def predictions(p):
        return p.get_attribute('[data-testid="row-count"]', "data-count") == str(n) and 0 < tab.count(".vrow") < 100

    def confidence(p):
        c = summary["confidence"]
        p.wait_for_selector('[data-testid="reliability-plot"] .scatterlayer .trace')
        p.wait_for_selector('[data-testid="caught-plot"] .scatterlayer .trace')
        bars = p.evaluate("() => document.querySelector('[data-testid=\"reliability-plot\"]').data[0].y")
        signals = p.eval_on_selector_all('[data-testid="signals-table"] tbody tr',
                                         "rs => rs.map(r => r.dataset.signal)")
        found = p.eval_on_selector_all('[data-testid="signals-table"] tbody tr td:nth-child(4)',
                                       "ds => ds.map(d => d.textContent)")
        text = p.inner_text('[data-testid="confidence-summary"]')
        worst = max((b for b in c["reliability"] if b["count"]), key=lambda b: abs(b["accuracy"] - b["confidence"]))
        return bars == pytest.approx([b["accuracy"] for b in c["reliability"] if b["count"]]) and \
            signals == ["confidence", "margin", "entropy", "neighbours", "typicality"] and \
            found == [f"{c['signals'][s]['caught']['0.01']} of {c['errors']}" for s in signals] and \
            f"ECE {100 * c['ece']:.1f}%" in text and f"T = {c['temperature']['value']:.2f}" in text and \
            f"worst bin {100 * c['mce']:.1f}% with {worst['count']} image" in text

    def issues(p):
        return tab.count('[data-testid="issues-table"] tbody tr') == min(50, expected["issues"]) and \
            tab.count('[data-testid="taxonomy"] .tax-block') == len(summary["taxonomy"]["categories"])

    def embedding(p):
        p.wait_for_selector('[data-testid="embedding-plot"] .plot-container')
        points = p.evaluate("""() => document.querySelector('[data-testid="embedding-plot"]').data
                                     .reduce((sum, trace) => sum + trace.x.length, 0)""")
        return points == n

    def advice_view(p):
        if advice is None:
            return "no augmentation advice" in p.inner_text("main")
        # each suggestion's broken images, the original beside its picture as probed (both decoded)
        shown = sum(len(a.get("examples", [])) for a in advice)
        return tab.count('[data-testid="advice-item"]') == len(advice) and \
            tab.images_loaded('[data-testid="advice-examples"] img.broken-img') == shown > 0 and \
            tab.count('[data-testid="advice-examples"] .thumb') == shown and \
            VERIFICATION["verdict"] in p.inner_text('[data-testid="verification"]') and \
            p.inner_text('[data-testid="verification-paired"]') == \
            "targeted: 9 fixed, 1 new (p = 0.021) · all errors: 14 fixed, 4 new (p = 0.031)" and \
            p.inner_text('[data-testid="verification-robustness"]') == "a shift up to 2 px flips 31 of 980 right " \
            "answers (of both) before, 9 after: 25 held now, 3 flipped now (p < 0.0001); median shift to flip 4 px " \
            "→ beyond the largest" and \
            p.inner_text('[data-testid="verification-accuracy"]') == "99.705% → 99.815% +0.110 pp" and \
            tab.count('[data-testid="verification-seeds"] tbody tr') == 2 and \
            "99.70%\t99.82%\t+0.12 pp\t30 → 18\t6 fixed, 3 new" in p.inner_text('[data-testid="verification-seeds"]') \
            and compare_link(p)

    def compare_link(p):
        """Served: the retrained run's mistakes beside this run's are one click away; a report holds one run."""
        links = p.eval_on_selector_all('[data-testid="verification-compare"]', "as => as.map(a => a.hash)")
        if tab.mode != "served":
            return links == []
        return links == [f"#/r/{expected['run_id']}/test/compare/{VERIFICATION['retrained_run_id']}"]

    def dynamics_view(p):
        d = summary["dynamics"]
        p.wait_for_selector('[data-testid="dynamics-map"] .plot-container')
        points = p.evaluate("() => document.querySelector('[data-testid=\"dynamics-map\"]').data[0].x.length")
        text = p.inner_text('[data-testid="dynamics-summary"]')
        cards = min(30, d["negative_aum"])   # the first page of the likely label errors, each with its picture
        p.wait_for_selector('[data-testid="dynamics-flagged"] [data-testid="dyn-card"]')
        # each card with its picture; or, where this workspace's renamed classes keep its dataset from loading (the
        # training images are cached once another run of the dataset loaded them), a note saying why
        pictures = tab.images_loaded('[data-testid="dynamics-flagged"] img.dyn-img')
        return points == d["images"] and f"{d['negative_aum']:,} with a negative area under the margin" in text \
            and tab.count('[data-testid="dynamics-flagged"] [data-testid="dyn-card"]') == cards > 0 and \
            (pictures == cards or (pictures == 0 and "cannot be loaded" in p.inner_text("main"))) and \
            (d["negative_aum"] <= 200 or f"Training labels in doubt (the first 200 of {d['negative_aum']:,})" in
             p.inner_text("main")) and \
            tab.count('[data-testid="dynamics-classes"] tbody tr') == c

    def slices_view(p):
        """Each listed slice, named with this workspace's class names, holds the images the analysis counted; the
        chart draws the first measure's tenths as the analysis counted them."""
        from deepdive.analysis.slices import describe

        s = summary["slices"]
        p.wait_for_selector('[data-testid="slice-chart"] .main-svg')
        names = XSS_CLASSES + summary["class_names"][len(XSS_CLASSES):]
        sizes = p.eval_on_selector_all('[data-testid="slice-row"]', "rs => rs.map(r => Number(r.dataset.rows))")
        texts = p.eval_on_selector_all('[data-testid="slice-text"]', "ts => ts.map(t => t.textContent)")
        bars = p.evaluate("() => document.querySelector('[data-testid=\"slice-chart\"]').data[0].customdata"
                          ".map(c => c[0])")
        return len(s["listed"]) > 0 and sizes == [item["images"] for item in s["listed"]] and \
            texts == [describe(item, names) for item in s["listed"]] and \
            bars == [b[0] for b in s["properties"][0]["bins"]["all"]] and \
            f"Of the {s['tested']:,} slices tried" in p.inner_text('[data-testid="slices-summary"]')

    def robustness_view(p):
        """The families as the analysis summed them, the first one's curves (all: its stored curve), its most easily
        fooled pictures (decoded) and one line per error tried."""
        r = summary["robustness"]
        first = r["families"][0]
        p.wait_for_selector('[data-testid="robustness-chart"] .main-svg')
        curves = p.evaluate("() => document.querySelector('[data-testid=\"robustness-chart\"]').data"
                            ".map(t => [t.name, t.y])")
        fooled = min(12, first["flipped"])      # web.maps.FRAGILE_SHOWN
        return tab.count('[data-testid="robustness-family"]') == len(r["families"]) and \
            curves[-1] == ["all", [1, *first["curve"]]] and len(curves) == c + 1 and \
            tab.images_loaded('[data-testid="robustness-fragile"] img.rob-img') == fooled and \
            tab.count('[data-testid="robustness-error"]') == r["errors"] and \
            f"Of {r['n']} right answers" in p.inner_text('[data-testid="robustness-summary"]')

    return {"overview": overview, "classes": classes, "confusion": confusion, "slices": slices_view, "saliency": saliency,
            "activations": activations, "predictions": predictions, "confidence": confidence, "issues": issues,
            "dynamics": dynamics_view, "embedding": embedding, "robustness": robustness_view,
            "advice": advice_view}


def test_log_axes_always_carry_two_labels(tab):
    """DD.logTicks (the loss charts' log axes): losses within less than two 1-2-5 steps (a one-epoch run's
    0.24-0.74 showed the single label "0.5") widen the axis to the steps around them."""
    tab.view("overview")
    for lo, hi in [(0.2444, 0.7392), (0.49, 0.51), (1.2, 1.3), (0.0123, 0.0456), (0.01, 2.3)]:
        axis = tab.page.evaluate("v => DD.logTicks(v)", [lo, hi])
        shown_lo, shown_hi = (10 ** r for r in axis["range"]) if "range" in axis else (lo, hi)
        assert shown_lo <= lo and shown_hi >= hi, (lo, hi, axis)
        labels = [v for v in axis["tickvals"] if shown_lo <= v <= shown_hi]
        assert len(labels) >= 2, (lo, hi, axis)
        assert axis["ticktext"] == [str(v).removesuffix(".0") for v in axis["tickvals"]]
    assert "range" not in tab.page.evaluate("v => DD.logTicks(v)", [0.01, 2.3])   # wide spans: plotly's autorange


def test_curve_axis_titles_clear_their_tick_labels(tab):
    """Each training chart's y-axis title sits left of its widest tick label: with plotly's fixed margin the
    accuracy chart's "100.00%" ran into the title."""
    page = tab.view("overview")
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .ytitle').length >= 2")
    # the charts with a y-axis title (the other metrics' small charts carry theirs in the chart title)
    charts = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].filter((gd) =>
        gd.querySelector('.ytitle')).map((gd) => {
        const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.right]; };
        return {title: box(gd.querySelector('.ytitle')), ticks: [...gd.querySelectorAll('.ytick text')].map(box)};
    })""")
    assert len(charts) >= 2
    for chart in charts:
        assert len(chart["ticks"]) >= 2, chart
        assert all(chart["title"][1] <= left for left, _ in chart["ticks"]), chart


def wrong_least_confident_first(tab, expected):
    """The predictions view listing the wrong answers, least confident first: (page, how many, rows shown)."""
    page = tab.view("predictions")
    page.select_option('[data-testid="filter-correct"]', "wrong")
    page.select_option('[data-testid="sort"]', "conf-asc")
    wrong = int((~expected["frame"]["correct"]).sum())
    page.wait_for_selector(f'[data-testid="row-count"][data-count="{wrong}"]')
    return page, wrong, page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")


def test_the_predictions_filter_is_in_the_address(tab, expected, browser):
    """A filtered, sorted predictions list is a link: the address follows the filters, the same address in a
    fresh page shows the same rows, and reset clears both."""
    frame = expected["frame"]
    page, wrong, rows = wrong_least_confident_first(tab, expected)
    link = page.url
    assert link.endswith(f"/r/{expected['run_id']}/test/predictions/correct=wrong&sort=conf-asc"), link
    fresh = Tab(browser, link, expected["run_id"])
    fresh.page.wait_for_selector(f'[data-testid="row-count"][data-count="{wrong}"]')
    assert fresh.page.input_value('[data-testid="sort"]') == "conf-asc"
    assert fresh.page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))") == rows
    assert not fresh.errors
    fresh.page.close()
    page.click('[data-testid="filter-reset"]')
    page.wait_for_selector(f'[data-testid="row-count"][data-count="{len(frame)}"]')
    assert page.url.endswith("/test/predictions")


def test_the_listed_predictions_download_as_csv(tab, expected, tmp_path):
    """The CSV button writes the images the filters list, in the order shown, with the export's columns the page
    holds (names, scores, category, every class probability), in a report as served."""
    frame = expected["frame"]
    page, wrong, rows = wrong_least_confident_first(tab, expected)
    with page.expect_download() as info:
        page.click('[data-testid="download-csv"]')
    download = info.value
    assert download.suggested_filename.endswith("-test-predictions.csv")
    download.save_as(tmp_path / "listed.csv")
    got = pd.read_csv(tmp_path / "listed.csv", dtype={"true_name": str, "pred_name": str, "suggested_name": str})
    assert len(got) == wrong and got["row"].tolist()[:len(rows)] == rows
    assert got["confidence"].is_monotonic_increasing and not got["correct"].any()
    want = frame.loc[got["row"]]
    for column in ("idx", "true", "pred", "category", "suggested_label"):
        assert got[column].tolist() == want[column].tolist(), column
    names = XSS_CLASSES + [str(c) for c in range(len(XSS_CLASSES), 10)]     # quotes and markup survive the CSV
    assert got["true_name"].tolist() == [names[c] for c in want["true"]]
    assert got["pred_name"].tolist() == [names[c] for c in want["pred"]]
    probs = [f"p{c}" for c in range(10)]
    np.testing.assert_allclose(got[probs].to_numpy(), want[probs].to_numpy(), atol=1e-4)   # the bundle's rounding


def test_the_detail_steps_through_the_list_it_was_opened_from(tab, expected):
    """An image opened from the filtered predictions steps through them (‹ › and the arrow keys), one opened from a
    strip of thumbnails through that strip."""
    page, wrong, rows = wrong_least_confident_first(tab, expected)
    page.click(f'.vrow[data-row="{rows[0]}"] .thumb')
    page.wait_for_selector(f'#detail[data-row="{rows[0]}"]')
    assert page.inner_text('[data-testid="detail-position"]') == f"1 of {wrong}"
    assert page.is_disabled('[data-testid="detail-prev"]')
    page.keyboard.press("ArrowRight")
    page.wait_for_selector(f'#detail[data-row="{rows[1]}"]')
    page.click('[data-testid="detail-next"]')
    page.wait_for_selector(f'#detail[data-row="{rows[2]}"]')
    page.click('[data-testid="detail-prev"]')
    page.wait_for_selector(f'#detail[data-row="{rows[1]}"]')
    assert page.inner_text('[data-testid="detail-position"]') == f"2 of {wrong}"
    page.keyboard.press("Escape")
    strip = expected["summary"]["neighbours"]["atypical"]["rows"]
    page = tab.view("overview")
    page.click(f'[data-testid="atypical-thumbs"] .thumb[data-row="{strip[2]}"]')
    assert page.inner_text('[data-testid="detail-position"]') == f"3 of {len(strip)}"
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector(f'#detail[data-row="{strip[1]}"]')


def test_the_overview_lists_the_models_layers(tab, expected):
    """Folded under the Overview: the model's layers in call order with their output shapes and parameters."""
    a = expected["summary"]["architecture"]
    page = tab.view("overview")
    head = page.inner_text('[data-testid="layers"] summary')
    assert f"Model layers: {len(a['layers'])} in call order, {a['total_params']:,} parameters" in head
    assert not page.is_visible('[data-testid="layers"] table')
    page.click('[data-testid="layers"] summary')
    rows = page.eval_on_selector_all('[data-testid="layers"] tbody tr',
                                     "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert [r[1] for r in rows] == [layer["name"] for layer in a["layers"]]
    assert [r[3] for r in rows] == ["×".join(map(str, layer["output"])) for layer in a["layers"]]
    assert sum(int(r[4].replace(",", "") or 0) for r in rows) == a["total_params"]


def test_every_view_renders_the_runs_data(tab, expected, test_output_dir):
    checks = view_checks(tab, expected)
    for name in VIEWS:
        page = tab.view(name)
        assert checks[name](page), f"the {name} view ({tab.mode}) does not show the run's data"
        page.screenshot(path=str(test_output_dir / f"web-{tab.mode}-{name}.png"))


def test_hovering_a_confusion_cell_shows_exactly_its_images(tab, expected):
    frame = expected["frame"]
    counts = np.array(expected["summary"]["confusion"]["counts"])
    off = counts - np.diag(np.diag(counts))
    cells = [tuple(int(v) for v in np.unravel_index(off.argmax(), off.shape)), (1, 1)]
    page = tab.view("confusion")
    for t, p in cells:
        page.hover(f'td.cm-cell[data-t="{t}"][data-p="{p}"]')
        page.wait_for_selector('#tooltip:not([hidden]) [data-testid="cell-thumbs"]')
        rows = page.eval_on_selector_all("#tooltip .thumb", "ts => ts.map(t => Number(t.dataset.row))")
        truth = np.flatnonzero((frame["true"] == t).to_numpy() & (frame["pred"] == p).to_numpy())
        assert len(rows) == counts[t, p] and sorted(rows) == truth.tolist()
        page.mouse.move(5, 5)  # leave the matrix: the preview goes away
        page.wait_for_selector("#tooltip", state="hidden")


def test_confusion_cells_show_their_images(tab, expected):
    """Images mode, the default: each off-diagonal cell holds its own images, most confident first, at most the
    view's cap, then "+N" for the rest; the diagonal its count; Counts mode no images. Clicking an image in a cell
    opens that image, not the cell's list."""
    frame = expected["frame"]
    counts = np.array(expected["summary"]["confusion"]["counts"])
    cap = 2   # the view shows 9; the tiny run's largest confusion has fewer, so the test lowers the cap
    assert (counts - np.diag(np.diag(counts))).max() > cap, "the fixture run has no cell past the cap"
    page = tab.view("confusion")
    assert page.get_attribute('[data-testid="cm-mode"] button.active', "data-value") == "images"
    cells_js = """cs => cs.map(c => [Number(c.dataset.t), Number(c.dataset.p),
        [...c.querySelectorAll('.thumb')].map(t => Number(t.dataset.row)),
        c.querySelector('.cm-more') ? Number(c.querySelector('.cm-more').dataset.more) : 0])"""
    assert sum(len(rows) for _, _, rows, _ in page.eval_on_selector_all("td.cm-cell", cells_js)) > 0
    page.evaluate(f"DD.views.confusion.cellCap = {cap}")
    page.click('[data-testid="cm-mode"] button[data-value="count"]')
    assert tab.count("td.cm-cell .thumb") == 0
    # Column %: each cell's share of its predicted class; the diagonal is the class's precision
    page.click('[data-testid="cm-mode"] button[data-value="colnorm"]')
    diag = page.eval_on_selector_all("td.cm-cell.diag", "cs => cs.map(c => c.textContent)")
    precision = [row["precision"] for row in expected["summary"]["per_class"]]
    assert diag == [f"{100 * p:.1f}%" for p in precision]
    page.click('[data-testid="cm-mode"] button[data-value="images"]')   # redrawn with the lowered cap
    confidence = frame["confidence"].to_numpy()
    for t, p, rows, more in page.eval_on_selector_all("td.cm-cell", cells_js):
        truth = np.flatnonzero((frame["true"] == t).to_numpy() & (frame["pred"] == p).to_numpy())
        if t == p:
            assert rows == [] and more == 0
            continue
        assert len(rows) == min(cap, len(truth)) and set(rows) <= set(truth.tolist()), (t, p)
        assert more == max(0, len(truth) - cap), (t, p)
        hidden = np.setdiff1d(truth, rows)
        if rows and hidden.size:   # the most confident mistakes are the ones shown
            assert confidence[rows].min() >= confidence[hidden].max() - 1e-4, (t, p)
    t, p = (int(v) for v in np.unravel_index((counts - np.diag(np.diag(counts))).argmax(), counts.shape))
    row = page.get_attribute(f'td.cm-cell[data-t="{t}"][data-p="{p}"] .thumb', "data-row")
    page.click(f'td.cm-cell[data-t="{t}"][data-p="{p}"] .thumb[data-row="{row}"]')
    detail = page.wait_for_selector("#detail:not([hidden])")
    assert f"Image #{frame['idx'][int(row)]}" in detail.inner_text()
    assert page.get_attribute("main", "data-view") == "confusion"
    page.click('[data-testid="detail-close"]')


def test_compare_is_a_served_view(tab, expected):
    """Compare needs the workspace's other runs: the served dashboard lists it (and, with no other analysed run,
    says what to do); a report has one run, so neither its nav nor its router knows the view."""
    page = tab.view("overview")
    nav = page.eval_on_selector_all("#sidenav .nav-item", "as => as.map(a => a.dataset.view)")
    if tab.mode == "served":
        assert nav[-2:] == ["compare", "try"]
        page = tab.view("compare")   # the list of runs arrives after the view is drawn
        page.wait_for_selector('main:has-text("No other run on mnist has an analysis of its test split")')
    else:
        assert "compare" not in nav and "try" not in nav and len(nav) == len(VIEWS)
        page.evaluate("h => { location.hash = h; }", f"#/r/{expected['run_id']}/test/compare")
        page.wait_for_function("document.querySelector('main').dataset.view === 'overview'")


def test_filters_give_the_right_rows(tab, expected):
    frame = expected["frame"]
    wrong = ~frame["correct"].to_numpy()
    page = tab.view("predictions")

    def shown():
        return int(page.get_attribute('[data-testid="row-count"]', "data-count"))

    page.select_option('[data-testid="filter-correct"]', "wrong")
    assert shown() == wrong.sum()
    t = int(frame["true"][wrong].mode()[0])
    page.select_option('[data-testid="filter-true"]', str(t))
    expect = wrong & (frame["true"] == t).to_numpy()
    assert shown() == expect.sum()
    visible = page.eval_on_selector_all(".vrow", "rs => rs.map(r => Number(r.dataset.row))")
    assert visible and set(visible) <= set(np.flatnonzero(expect).tolist())
    page.select_option('[data-testid="filter-correct"]', "all")
    page.select_option('[data-testid="filter-issue"]', "yes")
    assert shown() == (frame["label_issue"].to_numpy() & (frame["true"] == t).to_numpy()).sum()
    # Clicking a confusion cell lists exactly that cell.
    counts = expected["summary"]["confusion"]["counts"]
    tab.view("confusion").click(f'td.cm-cell[data-t="{t}"][data-p="{t}"]')
    page.wait_for_selector('main[data-view="predictions"]')
    assert shown() == counts[t][t]


def test_a_slice_and_a_tenth_list_their_images_and_the_detail_measures_the_picture(tab, expected):
    s, frame = expected["summary"]["slices"], expected["frame"]
    page = tab.view("slices")

    def shown():
        return int(page.get_attribute('[data-testid="row-count"]', "data-count"))

    page.click('[data-testid="slice-list-0"]')
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-slice"]')
    assert shown() == s["listed"][0]["images"]
    page.click('[data-testid="filter-slice-clear"]')
    assert shown() == len(frame)
    # a click on a bar lists its tenth: here of one class, with that class's value ranges
    thick = next(p for p in s["properties"] if p["key"] == "thickness")
    cls = int(frame["true"].mode()[0])
    page = tab.view("slices")
    page.click('[data-testid="measure-row"][data-key="thickness"]')
    page.select_option('[data-testid="slice-class"]', str(cls))
    page.wait_for_function("n => { const gd = document.querySelector('[data-testid=\"slice-chart\"]');"
                           "return gd.data && gd.data[0].customdata.reduce((a, c) => a + c[0], 0) === n; }",
                           arg=int((frame["true"] == cls).sum()))
    cells = page.evaluate("() => document.querySelector('[data-testid=\"slice-chart\"]').data[0].customdata")
    assert [c[0] for c in cells] == [b[0] for b in thick["bins"][str(cls)]]
    b = max(range(10), key=lambda k: cells[k][0])
    page.evaluate("b => document.querySelector('[data-testid=\"slice-chart\"]')"
                  ".emit('plotly_click', {points: [{curveNumber: 0, customdata: [0, 0, '', b]}]})", b)
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-slice"]')
    assert shown() == thick["bins"][str(cls)][b][0]
    # the detail: the picture's measures as stored, bold where it is in its class's lowest or highest 5%
    page.click(".vrow .thumb")
    row = int(page.get_attribute("#detail", "data-row"))
    page.wait_for_selector('[data-testid="detail-measures"]')
    text = page.inner_text('[data-testid="detail-measures"]')
    assert f"thickness {frame['img_thickness'][row]:.2f} px" in text and f"pieces {frame['img_pieces'][row]:.0f}" in text


def test_the_embedding_colours_by_a_measure_within_each_class(tab, expected):
    """The percentile the page computes (DD.measureTenths) is the analysis' (slices._within_class): ties at their
    middle, within the image's class."""
    frame, c = expected["frame"], len(expected["summary"]["class_names"])
    page = tab.view("embedding")
    page.wait_for_selector('[data-testid="embedding-plot"] .plot-container')
    page.select_option('[data-testid="embedding-colour"]', "thickness")
    plot = "document.querySelector('[data-testid=\"embedding-plot\"]')"
    page.wait_for_function(f"() => Array.isArray({plot}.data[0].marker.color)")
    data = page.evaluate(f"() => {plot}.data.map(t => [t.customdata, t.marker.color])")
    v, t = frame["img_thickness"].to_numpy(), frame["true"].to_numpy()
    mid = np.full(len(v), np.nan)
    for k in np.unique(t):
        rows = np.flatnonzero((t == k) & np.isfinite(v))
        s = np.sort(v[rows])
        mid[rows] = (np.searchsorted(s, v[rows], "left") / len(s) + np.searchsorted(s, v[rows], "right") / len(s)) / 2
    for rows, colours in data[:c]:
        got = np.array([np.nan if x is None else x for x in colours], dtype=float)
        np.testing.assert_allclose(got, mid[rows], rtol=0, atol=1e-12)
    assert all(isinstance(x, str) for x in data[c][1])      # the errors keep their class colours, ringed
    page.select_option('[data-testid="embedding-colour"]', "class")
    page.wait_for_function(f"() => typeof {plot}.data[0].marker.color === 'string'")


def test_an_errors_detail_shows_what_would_make_it_right(tab, expected):
    """Every error tried has its pictures inlined (both modes): the smallest change of each kind toward its label."""
    r = expected["summary"]["robustness"]
    page = tab.view("robustness")
    page.click('[data-testid="robustness-error"] .thumb')
    row = int(page.get_attribute("#detail", "data-row"))
    page.wait_for_selector('[data-testid="robustness-reading"]')
    names = XSS_CLASSES + expected["summary"]["class_names"][len(XSS_CLASSES):]
    reading = page.inner_text('[data-testid="robustness-reading"]')
    assert f"makes the model read it as {names[expected['frame']['true'][row]]}, its label" in reading
    assert tab.images_loaded('[data-testid="detail-robustness"] img.rob-img') == len(r["families"])
    assert "What would make it right" in page.inner_text("#detail")


def test_the_overview_says_what_fools_it(tab, expected):
    r = expected["summary"]["robustness"]
    adv = r["families"][-1]
    page = tab.view("overview")
    page.wait_for_selector('[data-testid="to-robustness"]')
    assert f"Of {r['n']} right answers" in page.inner_text('[data-testid="robustness-summary"]')
    if adv["median"] is not None and adv["errors"]["median"] is not None:    # the tiny run: both, so far
        text = page.inner_text('[data-testid="overview-robustness-errors"]')
        closer = "closer to right than" if adv["errors"]["median"] < adv["median"] else "no closer to right than"
        assert closer in text and f"{adv['errors']['mended']} of {adv['errors']['n']} are made right" in text
    page.click('[data-testid="to-robustness"]')
    page.wait_for_selector('main[data-view="robustness"] [data-testid="robustness-families"]')


def test_the_pictures_a_change_flips_list_in_the_predictions(tab, expected, analyzed_run):
    """The Robustness view's list link filters the predictions to the right answers its change flips up to the
    headline size (the filter in the address, a chip to clear it); the chart's points list theirs."""
    from deepdive.analysis.results import AnalysisResult

    table = AnalysisResult.load(analyzed_run.run_dir, "test").robustness()
    fam = expected["summary"]["robustness"]["families"][-1]            # the invisible change: it flips most
    page = tab.view("robustness")
    page.click(f'[data-testid="robustness-family"][data-family="{fam["id"]}"]')

    def flipped(size):
        part = table[(table["family"] == fam["id"]) & ~table["mending"]]
        return set(part[part["size"].astype(float).round(6) <= size]["row"].tolist())

    page.click('[data-testid="robustness-list"]')
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-fooled"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(flipped(fam["headline"])) > 0
    assert "fooled=" in page.evaluate("location.hash")
    page.click('[data-testid="filter-fooled-clear"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(expected["frame"])
    page = tab.view("robustness")
    page.click(f'[data-testid="robustness-family"][data-family="{fam["id"]}"]')
    page.wait_for_selector('[data-testid="robustness-chart"] .main-svg')
    size = fam["sizes"][len(fam["sizes"]) // 2]
    page.evaluate("x => document.querySelector('[data-testid=\"robustness-chart\"]')"
                  ".emit('plotly_click', {points: [{x}]})", size)
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-fooled"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(flipped(size))


def test_advice_and_slices_point_at_each_other(tab, expected):
    """Each suggestion says which listed slices its augmentation trains toward; each such slice links to it."""
    from deepdive.analysis.slices import AUGMENT_FOR, backing, describe

    summary = expected["summary"]
    advice, listed = summary["advice"] or [], summary["slices"]["listed"]
    names = XSS_CLASSES + summary["class_names"][len(XSS_CLASSES):]
    if not advice:
        pytest.skip("the tiny run's analysis made no suggestion")
    page = tab.view("advice")
    page.wait_for_selector('[data-testid="advice-slices"]')
    notes = page.eval_on_selector_all('[data-testid="advice-slices"]', "ns => ns.map(n => n.textContent)")
    assert len(notes) == len(advice)
    for note, s in zip(notes, advice):
        agree = backing(summary["slices"], s)
        assert note.startswith("No listed slice") if not agree else describe(agree[0], names) in note
    page = tab.view("slices")
    page.wait_for_selector('[data-testid="slices-table"]')
    keys = {k for s in advice for k in s["overrides"]["augment"]}
    assert tab.count('[data-testid="slice-augment"]') == sum(
        AUGMENT_FOR.get((i["property"], i["side"])) in keys for i in listed)


def test_a_box_in_the_embedding_selects_the_images_inside_it_and_lists_them(tab, expected):
    frame = expected["frame"]
    page = tab.view("embedding")
    page.wait_for_selector('[data-testid="embedding-plot"] .nsewdrag')
    page.click('[data-testid="embedding-drag"] button[data-value="select"]')
    area = page.locator('[data-testid="embedding-plot"] .nsewdrag').bounding_box()
    x0, y0 = area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.3
    x1, y1 = area["x"] + area["width"] * 0.7, area["y"] + area["height"] * 0.7
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=10)
    page.mouse.up()
    page.wait_for_selector('[data-testid="selection-count"]')
    count = int(page.get_attribute('[data-testid="selection-count"]', "data-count"))
    # the box in data units, by plotly's own axes; points within a hair of its edges may fall either way
    lo_x, hi_x, lo_y, hi_y = page.evaluate("""([x0, y0, x1, y1]) => {
        const gd = document.querySelector('[data-testid="embedding-plot"]'), L = gd._fullLayout;
        const area = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return [L.xaxis.p2d(x0 - area.left), L.xaxis.p2d(x1 - area.left),
                L.yaxis.p2d(y1 - area.top), L.yaxis.p2d(y0 - area.top)]; }""", [x0, y0, x1, y1])
    ex, ey = frame["emb_x"].to_numpy(), frame["emb_y"].to_numpy()
    hair = 0.01 * max(hi_x - lo_x, hi_y - lo_y)

    def inside(m):
        return int(((ex > lo_x + m) & (ex < hi_x - m) & (ey > lo_y + m) & (ey < hi_y - m)).sum())
    assert 0 < inside(hair) <= count <= inside(-hair)
    page.click('[data-testid="selection-list"]')
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-rows"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == count
    page.click('[data-testid="filter-rows-clear"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(frame)
    # a selection of a few (as plotly reports one): their thumbnails and nothing else below the plot
    page = tab.view("embedding")
    page.wait_for_selector('[data-testid="embedding-plot"] .nsewdrag')
    page.evaluate("""() => document.querySelector('[data-testid="embedding-plot"]')
        .emit('plotly_selected', {points: [{customdata: 0}, {customdata: 1}, {customdata: 1}]})""")
    assert page.get_attribute('[data-testid="selection-count"]', "data-count") == "2"
    assert tab.count('[data-testid="embedding-selection"] .thumb') == 2
    assert "null" not in page.inner_text('[data-testid="embedding-selection"]')


@pytest.fixture(scope="module")
def plain_urls(analyzed_run, copy_workspace, tmp_path_factory):
    """{mode: URL} of the analysed run served from a plain copy of its workspace and of its report."""
    from deepdive.web.report import build_report

    ws = copy_workspace(analyzed_run.workspace, tmp_path_factory.mktemp("plain") / "ws")
    out = ws.parent / "report.html"
    build_report(ws, analyzed_run.run_id, "test", out)
    with serving(ws) as url:
        yield {"served": url, "report": out.as_uri()}


@pytest.mark.parametrize("mode", MODES)
def test_training_dynamics_show_an_images_answers_and_take_a_verdict(browser, plain_urls, expected, mode):
    """A click on the data map shows that training image's answers (served: any image; a report: the listed ones);
    a selection lists its pictures; served, a verdict on a likely label error is kept in the workspace."""
    tab = Tab(browser, plain_urls[mode], expected["run_id"])
    tab.mode = mode
    d = expected["summary"]["dynamics"]
    page = tab.view("dynamics")
    page.wait_for_selector('[data-testid="dynamics-map"] .nsewdrag')
    page.wait_for_selector('[data-testid="dynamics-flagged"] img.dyn-img')   # the first page, with pictures
    assert tab.images_loaded('[data-testid="dynamics-flagged"] img.dyn-img') == min(30, d["negative_aum"])
    first = d["flagged"][0]
    k = expected["dynamics_idx"].index(first)
    page.evaluate("k => document.querySelector('[data-testid=\"dynamics-map\"]').emit('plotly_click', "
                  "{points: [{customdata: k}]})", k)
    page.wait_for_selector(f'[data-testid="dynamics-inspect"] [data-idx="{first}"] svg.spark')
    assert tab.images_loaded('[data-testid="dynamics-inspect"] img.dyn-img') == 1
    dots = '[data-testid="dynamics-inspect"] svg.spark circle'
    # the one epoch of the tiny run: a negative margin is a wrong answer, a red dot
    assert page.eval_on_selector_all(dots, "cs => cs.map(c => c.getAttribute('fill'))") == ["#dc2626"]
    easy = expected["dynamics_idx"].index(expected["dynamics_easy"][0])   # listed nowhere: a report has no picture
    page.evaluate("ks => document.querySelector('[data-testid=\"dynamics-map\"]').emit('plotly_selected', "
                  "{points: ks.map(k => ({customdata: k}))})", [k, easy])
    assert page.get_attribute('[data-testid="dynamics-selection-count"]', "data-count") == "2"
    shown = 2 if tab.mode == "served" else 1      # a report holds the pictures of the listed images only
    page.wait_for_function("n => document.querySelectorAll('[data-testid=\"dynamics-selection\"] img').length == n",
                           arg=shown)
    if tab.mode != "served":
        assert "not in this report" in page.inner_text('[data-testid="dynamics-selection"]')
        return
    # served: any training image's answers, here one answered right (a green dot)
    page.evaluate("k => document.querySelector('[data-testid=\"dynamics-map\"]').emit('plotly_click', "
                  "{points: [{customdata: k}]})", easy)
    page.wait_for_selector(f'[data-testid="dynamics-inspect"] [data-idx="{expected["dynamics_easy"][0]}"] svg.spark')
    assert page.eval_on_selector_all(dots, "cs => cs.map(c => c.getAttribute('fill'))") == ["#16a34a"]
    card = f'[data-testid="dynamics-flagged"] [data-idx="{first}"]'
    page.click(f'{card} button[data-verdict="ambiguous"]')
    page.wait_for_selector(f'{card} button[data-verdict="ambiguous"].active')
    url = f"/api/runs/{expected['run_id']}/splits/test/dynamics/reviews"
    stored = page.evaluate("u => fetch(u).then(r => r.json())", url)["reviews"]
    assert stored[str(first)]["verdict"] == "ambiguous" and stored[str(first)]["source"] == "train"
    page.click(f'{card} button[data-verdict="ambiguous"]')    # again: forgotten
    page.wait_for_selector(f'{card} .review:has-text("forgotten")')
    assert str(first) not in page.evaluate("u => fetch(u).then(r => r.json())", url)["reviews"]
    # a test image's nearest training images mark the ones whose label the training doubted
    row, doubted = next(iter(expected["doubted_neighbours"].items()))
    page.evaluate("""r => { const t = document.createElement('span'); t.className = 'thumb'; t.dataset.row = r;
                            document.querySelector('main').appendChild(t); t.click(); }""", row)
    page.wait_for_selector('#detail [data-testid="neighbours-doubted"]')
    assert tab.count("#detail .nb-doubt") == doubted
    assert page.inner_text('#detail [data-testid="neighbours-doubted"]').startswith(f"{doubted} of them")
    assert not tab.errors and not tab.dialogs
    page.close()


@pytest.mark.parametrize("mode", MODES)
def test_the_training_images_behind_an_error_and_behind_the_most_errors(browser, plain_urls, expected, analyzed_run,
                                                                        mode):
    """(A plain copy of the workspace: the hostile one's renamed classes keep its training images from loading.)"""
    from deepdive.analysis.results import AnalysisResult

    tab = Tab(browser, plain_urls[mode], expected["run_id"])
    inf = AnalysisResult.load(analyzed_run.run_dir, "test").influence()
    entry, k = expected["summary"]["influence"], expected["summary"]["influence"]["k"]
    row = int(inf["rows"][0])       # the most confident error: its training images are in the report too
    page = tab.view("overview")
    page.wait_for_selector('[data-testid="influence-behind"]')
    shown = page.eval_on_selector_all('[data-testid="influence-behind"] figure', "fs => fs.map(f => Number(f.dataset.idx))")
    assert shown == [b[0] for b in entry["behind"]]
    assert tab.images_loaded('[data-testid="influence-behind"] img') == len(shown)
    assert tab.count('[data-testid="influence-behind"] .nb-doubt') == sum(b[4] for b in entry["behind"])
    # a click shows the errors the training image is behind, takes a verdict on its label (served), and lists them
    page.click(f'[data-testid="influence-behind"] figure[data-idx="{shown[0]}"]')
    behind = [int(r) for r, against in zip(inf["rows"], inf["against_index"]) if shown[0] in against.tolist()]
    page.wait_for_selector('[data-testid="behind-errors"]')
    thumbs = page.eval_on_selector_all('[data-testid="behind-errors"] .thumb', "ts => ts.map(t => Number(t.dataset.row))")
    assert thumbs == behind and len(behind) == entry["behind"][0][2]
    if mode == "served":
        url = f"/api/runs/{expected['run_id']}/splits/test/dynamics/reviews"
        page.click('[data-testid="behind-panel"] button[data-verdict="ambiguous"]')
        page.wait_for_selector('[data-testid="behind-panel"] button[data-verdict="ambiguous"].active')
        stored = page.evaluate("u => fetch(u).then(r => r.json())", url)["reviews"]
        assert stored[str(shown[0])]["verdict"] == "ambiguous"
        page.click('[data-testid="behind-panel"] button[data-verdict="ambiguous"]')    # again: forgotten
        page.wait_for_selector('[data-testid="behind-panel"] .review:has-text("forgotten")')
        assert str(shown[0]) not in page.evaluate("u => fetch(u).then(r => r.json())", url)["reviews"]
    page.click('[data-testid="behind-list"]')
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-rows"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(behind)
    assert f"behind which training image #{shown[0]} is" in page.inner_text('[data-testid="filter-rows"]')
    # an error's detail: the K against its label, then the K for it, as stored
    page.evaluate("""r => { const t = document.createElement('span'); t.className = 'thumb'; t.dataset.row = r;
                            document.querySelector('main').appendChild(t); t.click(); }""", row)
    page.wait_for_selector('#detail [data-testid="influence-reading"]')
    strips = page.eval_on_selector_all('#detail [data-testid="influence"] .nb-row',
                                       "rs => rs.map(r => [...r.querySelectorAll('figure')].map(f => Number(f.dataset.idx)))")
    assert strips == [inf["against_index"][0].tolist(), inf["for_index"][0].tolist()] and len(strips[0]) == k
    assert tab.images_loaded('#detail [data-testid="influence"] img') == 2 * k
    assert not tab.errors and not tab.dialogs
    page.close()


def test_clicking_a_thumbnail_opens_its_detail(tab, expected):
    frame, c = expected["frame"], len(expected["summary"]["class_names"])
    # The most confident error: first in the table below, and first in the focus set, so its activations are in
    # the report too.
    row = int(frame.loc[~frame["correct"], "confidence"].idxmax())
    assert row == expected["focus"][0]
    page = tab.view("predictions")
    page.select_option('[data-testid="filter-correct"]', "wrong")
    page.select_option('[data-testid="sort"]', "conf-desc")
    page.click(f'.vrow .thumb[data-row="{row}"]')
    detail = page.wait_for_selector("#detail:not([hidden])")
    text = detail.inner_text()
    assert f"Image #{frame['idx'][row]}" in text
    assert tab.count("#detail .plist-row") == c
    # its probability after the temperature the analysis fitted on the other half of the images
    shown = page.inner_text('[data-testid="calibrated"]')
    assert shown == f"{100 * frame['calibrated_confidence'][row]:.2f}% after temperature scaling"
    assert tab.images_loaded("#detail img.sal") == 2  # predicted-class and true-class maps
    # the channels that weigh most in its answer, each with its top images (and, served, where it fires on it)
    page.wait_for_selector('[data-testid="channels-reading"]')
    weighed = expected["channels"][row]
    assert tab.count("#detail .ch-item") == len(weighed["toward"]) + len(weighed["against"]) > 0
    assert tab.count("#detail .ch-item .thumb") == tab.count("#detail .ch-item") * expected["summary"]["channels"]["top"]
    assert tab.count("#detail .ch-map") == (tab.count("#detail .ch-item") if tab.mode == "served" else 0)
    page.wait_for_selector("#detail .layer")
    assert tab.count("#detail .layer") == len(expected["layers"])
    page.click('[data-testid="detail-close"]')
    assert page.is_hidden("#detail")


def shown_probabilities(page) -> list[float]:
    """The Try view's probability column, in %."""
    return [float(v.rstrip("%")) for v in page.eval_on_selector_all(
        '[data-testid="try-probs"] .plist-val', "vs => vs.map(v => v.textContent)")]


def test_try_an_image_answers_a_drawing_and_an_edited_error(browser, analyzed_run, expected, mnist):
    """Served only: strokes drawn on the canvas get the model's answer; an error opened from its detail starts
    with exactly its analysed probabilities (the canvas sends its pixels back unchanged), and erasing moves them.
    (The run's own workspace: the hostile copy's class names no longer match MNIST's, which the training images'
    search checks.)"""
    with serving(analyzed_run.workspace) as url:
        try_an_image(Tab(browser, url, expected["run_id"]), expected, mnist)


def try_an_image(t, expected, mnist):
    frame, c = expected["frame"], len(expected["summary"]["class_names"])
    page = t.view("try")
    page.wait_for_selector('[data-testid="try-status"]:has-text("Draw a digit")')   # MNIST: prepared as a digit
    assert page.is_checked('[data-testid="try-digit"]')
    box = page.locator('[data-testid="try-canvas"]').bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 230, steps=8)
    page.mouse.up()
    # the answer to the whole stroke (the moves before it sent pictures of their own)
    page.wait_for_selector('[data-testid="try-status"][data-settled="true"]:has-text("answered in")')
    probs = shown_probabilities(page)
    assert len(probs) == c and sum(probs) == pytest.approx(100, abs=0.05 * c)
    assert page.get_attribute(".try-row.pred", "data-cls") == str(int(np.argmax(probs)))
    assert page.inner_text('[data-testid="try-prediction"]') == f"{int(np.argmax(probs))} {max(probs):.2f}%"
    assert t.count('[data-testid="try-layers"] .layer') == len(expected["layers"])
    assert t.images_loaded(".detail-sal img.sal") == 1       # toward the prediction only: no class expected yet
    assert t.count('[data-testid="try-channels"] .ch-item') == t.count('[data-testid="try-channels"] .ch-map') > 0
    page.keyboard.press("Control+z")                          # the stroke undone: a blank canvas again
    page.wait_for_selector('[data-testid="try-status"]:has-text("Draw a digit")')

    row = int(frame.loc[~frame["correct"], "confidence"].idxmax())
    page = t.view("predictions")
    page.select_option('[data-testid="filter-correct"]', "wrong")
    page.select_option('[data-testid="sort"]', "conf-desc")
    page.click(f'.vrow .thumb[data-row="{row}"]')
    page.click('[data-testid="try-this-image"]')
    page.wait_for_selector(f'[data-testid="try-origin"]:has-text("Started from image #{frame["idx"][row]}")')
    page.wait_for_selector('[data-testid="try-status"]:has-text("answered in")')
    page.wait_for_function("() => document.querySelectorAll('.detail-sal img.sal').length === 2")
    stored = [100 * frame[f"p{k}"][row] for k in range(c)]
    assert shown_probabilities(page) == pytest.approx(stored, abs=0.006)   # shown to 2 decimals
    assert not page.is_checked('[data-testid="try-digit"]')
    assert page.input_value('[data-testid="try-expected"]') == str(frame["true"][row])
    assert set(page.eval_on_selector_all(".plist-delta", "ds => ds.map(d => d.textContent)")) == {"·"}
    # the advice's probes of it, each answered; a click on one puts it on the canvas: the model then sees exactly
    # that picture (here the image shifted right by 2 px)
    from deepdive.analysis.advice import PERTURBATIONS
    from deepdive.analysis.robustness import FAMILY_IDS

    assert t.count('[data-testid="try-perturbed"] figure') == len(PERTURBATIONS) - 1 == 14
    page.click('[data-testid="try-perturbed"] figure[data-id="shift+x"]')
    original = mnist.test_images[frame["idx"][row]]
    shifted = np.zeros_like(original)
    shifted[:, 2:] = original[:, :-2]
    page.wait_for_function("() => [...document.querySelectorAll('.plist-delta')].some(d => d.textContent !== '·')")
    seen = page.get_attribute(".try-seen-img", "src")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(seen.split(",", 1)[1])))),
                                  shifted)
    page.click('[data-testid="try-reset"]')
    page.wait_for_function("() => [...document.querySelectorAll('.plist-delta')].every(d => d.textContent === '·')")

    page.click('[data-testid="try-mode"] button[data-value="erase"]')
    page.mouse.move(box["x"] + 20, box["y"] + 140)
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 140, steps=8)
    page.mouse.up()
    page.wait_for_function("() => [...document.querySelectorAll('.plist-delta')].some(d => d.textContent !== '·')")
    page.click('[data-testid="try-find-neighbours"]')
    page.wait_for_selector('[data-testid="try-neighbours"] .nb-row')
    assert t.count('[data-testid="try-neighbours"] .nb-fig') == 8
    # the training images behind the edited picture's answer (or the class it should be), on request
    page.click('[data-testid="try-find-influence"]')
    page.wait_for_selector('[data-testid="try-influence-reading"]', timeout=60_000)
    k = expected["summary"]["influence"]["k"]
    assert t.count('[data-testid="try-influence"] .nb-row') == 2
    assert t.count('[data-testid="try-influence"] .nb-fig') == 2 * k
    # what fools the edited picture: one picture per kind of change, each decoded
    page.click('[data-testid="try-find-robustness"]')
    page.wait_for_selector('[data-testid="try-robustness-reading"]', timeout=60_000)
    assert t.images_loaded('[data-testid="try-robustness"] img.rob-img') == len(FAMILY_IDS)
    assert page.eval_on_selector_all('[data-testid="try-robustness"] figure', "fs => fs.map(f => f.dataset.family)") \
        == ["turn", "shift", "zoom", "slant", "thickness", "adversarial"] == list(FAMILY_IDS)
    assert not t.errors, t.errors
    t.page.close()


def test_confidence_view_switches_to_the_scaled_bins_and_lists_the_least_confident(tab, expected):
    frame, c = expected["frame"], expected["summary"]["confidence"]
    page = tab.view("overview")     # the overview's card and link lead here
    card = page.inner_text('[data-testid="overview-cards"]')
    assert f"{100 * c['ece']:.1f}%" in card and f"{100 * c['temperature']['ece']:.2f}% at temperature" in card
    page.click('[data-testid="to-confidence"]')
    page.wait_for_selector('main[data-view="confidence"]')
    plot = '[data-testid="reliability-plot"]'
    page.wait_for_selector(f"{plot} .scatterlayer .trace")
    page.click('[data-testid="reliability-mode"] button[data-value="scaled"]')
    scaled = [b["accuracy"] for b in c["temperature"]["reliability"] if b["count"]]
    page.wait_for_function(f"n => document.querySelector('{plot}').data[0].x.length === n", arg=len(scaled))
    bars = page.evaluate(f"() => document.querySelector('{plot}').data[0]")
    assert bars["y"] == pytest.approx(scaled) and bars["name"] == "accuracy (scaled)"
    k = math.ceil(0.01 * c["n"])
    rest = (c["n"] - k - c["errors"] + c["signals"]["confidence"]["caught"]["0.01"]) / (c["n"] - k)
    assert f"the other {c['n'] - k:,} are {100 * rest:.2f}% right" in \
        page.inner_text('[data-testid="least-confident-note"]')
    page.click('[data-testid="least-confident"]')
    page.wait_for_selector('main[data-view="predictions"] .vrow')
    assert page.input_value('[data-testid="sort"]') == "conf-asc"
    first = int(page.get_attribute(".vrow", "data-row"))
    assert frame["confidence"][first] == frame["confidence"].min()


def test_a_click_on_a_reliability_bar_lists_its_images(tab, expected):
    frame, c = expected["frame"], expected["summary"]["confidence"]
    for mode, bins in (("raw", c["reliability"]), ("scaled", c["temperature"]["reliability"])):
        page = tab.view("confidence")
        plot = '[data-testid="reliability-plot"]'
        page.wait_for_selector(f"{plot} .barlayer .point path", state="attached")   # (a bar at 0% has no height)
        if mode == "scaled":
            page.click('[data-testid="reliability-mode"] button[data-value="scaled"]')
            page.wait_for_function(f"() => document.querySelector('{plot}').data[0].name === 'accuracy (scaled)'")
        full = [b for b in bins if b["count"]]
        pick = max(range(len(full)), key=lambda i: full[i]["count"])     # the tallest bar is easy to hit
        box = page.locator(f"{plot} .barlayer .point path").nth(pick).bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-bin"]')
        assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == full[pick]["count"], mode
        column = frame["confidence"] if mode == "raw" else frame["calibrated_confidence"]
        lo, hi = full[pick]["lo"], full[pick]["hi"]
        first = int(page.get_attribute(".vrow", "data-row"))
        assert lo < column[first] <= hi or (lo == 0 and column[first] <= hi)
    page.click('[data-testid="filter-bin-clear"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(frame)


def test_the_threshold_says_what_it_buys_and_lists_what_it_defers(tab, expected):
    frame = expected["frame"]
    conf, wrong = frame["confidence"].to_numpy(), ~frame["correct"].to_numpy()
    page = tab.view("confidence")
    start = expected["summary"]["confidence"]["confidence_thresholds"]["0.01"]
    assert float(page.input_value('[data-testid="threshold"]')) == pytest.approx(start, abs=1e-6)
    assert f"to a person: {math.ceil(0.01 * len(frame)):,} images" in page.inner_text('[data-testid="threshold-readout"]')
    # a threshold with no confidence within 1e-5 of it (the bundle's rounding cannot move one across)
    t = next(v for v in np.round(np.arange(0.8, 0.85, 0.001), 3) if np.abs(conf - v).min() > 1e-5)
    page.eval_on_selector('[data-testid="threshold"]', "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }",
                          str(t))
    low = conf <= t
    kept, left = int((~low).sum()), int((wrong & ~low).sum())
    text = page.inner_text('[data-testid="threshold-readout"]')
    assert text.startswith(f"Confidence ≤ {t:.4f} to a person: {int(low.sum()):,} images")
    assert f"holding {int((wrong & low).sum())} of the {int(wrong.sum())} errors" in text
    assert f"The other {kept:,} answered automatically: {100 * (kept - left) / kept:.2f}% right, {left} error" in text
    page.click('[data-testid="threshold-list"]')
    page.wait_for_selector('[data-testid="filter-conf-max"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == int(low.sum())
    page.click('[data-testid="filter-conf-max-clear"]')
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == len(frame)


def test_each_trust_score_lists_the_images_in_its_order(tab, expected):
    """The signals table's "list" links open the predictions table in that score's order: its first 1% holds the
    errors the table counts there."""
    frame, c = expected["frame"], expected["summary"]["confidence"]
    k = math.ceil(0.01 * len(frame))
    for key, sort in [("margin", "margin-asc"), ("entropy", "entropy-desc"), ("neighbours", "agree-asc")]:
        page = tab.view("confidence")
        page.click(f'[data-testid="signal-list-{key}"]')
        page.wait_for_selector('main[data-view="predictions"] .vrow')
        assert page.input_value('[data-testid="sort"]') == sort
        rows = page.evaluate("""() => [...document.querySelectorAll('.vrow')]
            .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top)).map((r) => Number(r.dataset.row))""")
        assert len(rows) > k
        assert int((~frame["correct"].to_numpy()[rows[:k]]).sum()) == c["signals"][key]["caught"]["0.01"], key


def test_the_saliency_sanity_check_shows_each_methods_pairs_and_correlation(tab, expected):
    sanity = expected["summary"]["saliency"]["sanity"]
    page = tab.view("saliency")
    rows = page.eval_on_selector_all('[data-testid="sanity-table"] tbody tr',
                                     "rs => rs.map(r => [r.dataset.method, r.children[1].textContent])")
    assert [m for m, _ in rows] == expected["summary"]["saliency"]["methods"]
    # (compared as numbers: JavaScript's toFixed rounds an exact tie such as 0.125 up, Python's format to even)
    assert all(abs(float(text) - sanity["rank_correlation"][m]) <= 0.005 + 1e-9 for m, text in rows)
    page.click('[data-testid="class-map-kind"] button:has-text("Trained vs weights shuffled")')
    reps = sanity["n"]   # classes with a correctly classified image to draw
    # two maps per class with a correct image: the trained one and the shuffled one, both decoded
    assert tab.images_loaded('[data-testid="class-maps"] img.sal') == 2 * reps
    srcs = page.eval_on_selector_all('[data-testid="class-maps"] img.sal', "is => is.map(i => i.src)")
    assert len(set(srcs)) == len(srcs)


def test_the_class_table_sorts_by_a_column_and_each_class_gets_a_pr_curve(tab, expected):
    s = expected["summary"]
    rows, c = s["per_class"], len(s["class_names"])
    page = tab.view("classes")
    top = {t["k"]: t["accuracy"] for t in s["ranking"]["top_k"]}
    assert f"top-1 {100 * top[1]:.2f}% · top-2 {100 * top[2]:.2f}%" in page.inner_text('[data-testid="top-k"]')
    order = lambda: page.eval_on_selector_all('[data-testid="class-table"] tbody tr',  # noqa: E731
                                              "rs => rs.map(r => Number(r.dataset.cls))")
    assert order() == list(range(c))
    page.click('th[data-sort="errors"]')            # most errors first, ties in class order
    assert order() == sorted(range(c), key=lambda k: (-rows[k]["errors"], k))
    page.click('th[data-sort="errors"]')            # again: fewest first
    assert order() == sorted(range(c), key=lambda k: (rows[k]["errors"], k))
    page.click('th[data-sort="ap"]')                # lowest AP first
    by_ap = sorted(range(c), key=lambda k: (rows[k]["ap"], k))
    assert order() == by_ap
    tab.view("overview")
    assert tab.view("classes") and order() == by_ap   # the order stays while the page does
    page.wait_for_function("n => document.querySelectorAll('[data-testid=\"pr-plot\"] .scatterlayer .trace').length === n",
                           arg=sum(1 for cv in s["ranking"]["pr_curves"] if cv["points"]))
    assert tab.count("main img[src='x'], main script") == 0   # hostile class names in the legend stay text
    # a click on a point lists what its threshold flags: every image whose probability for that class is at or
    # above it, as the table holds the probabilities (4 decimals), the threshold rounded down to them
    cv = next(cv for cv in s["ranking"]["pr_curves"] if cv["points"])
    k = [c["class"] for c in s["ranking"]["pr_curves"] if c["points"]].index(cv["class"])
    t = cv["points"][-1][2]                      # the last point: every image of the class flagged
    page.evaluate("""([k, t]) => document.querySelector('[data-testid="pr-plot"]')
        .emit('plotly_click', {points: [{curveNumber: k, customdata: t}]})""", [k, t])
    page.wait_for_selector('main[data-view="predictions"] [data-testid="filter-pmin"]')
    p = np.round(expected["frame"][f"p{cv['class']}"].to_numpy(dtype=np.float64), 4)
    flagged = p >= math.floor(t * 1e4 + 1e-9) / 1e4
    assert int(page.get_attribute('[data-testid="row-count"]', "data-count")) == flagged.sum()
    assert flagged[(expected["frame"]["true"] == cv["class"]).to_numpy()].all()    # recall 1 at the last point


def test_hostile_names_render_as_text(tab):
    page = tab.view("confusion")
    assert page.inner_text('[data-testid="run-name"]') == XSS_RUN
    headers = page.eval_on_selector_all("th.cm-col", "hs => hs.map(h => h.textContent)")
    assert headers[:3] == XSS_CLASSES
    assert page.evaluate("document.title").startswith(XSS_RUN)
    assert tab.count("main img[src='x'], main script") == 0


def test_report_makes_no_network_requests(browser, report_url, expected):
    t = Tab(browser, report_url, expected["run_id"])
    for name in VIEWS:
        t.view(name)
    t.page.wait_for_timeout(300)
    outside = [u for u in t.requests if not u.startswith(("file:", "data:", "blob:"))]
    assert outside == [] and not t.dialogs and not t.errors
    t.page.close()


def test_an_ensembles_curves_and_hint_are_per_member(browser, analyzed_run, copy_workspace, tmp_path, test_output_dir):
    """An ensemble's members train one after another: the curves break between members, and the early-stopping
    hint judges each member on its own curve (the report reads the stored epochs and summary)."""
    from deepdive.analysis import insight
    from deepdive.store import DB_NAME, Store
    from deepdive.web.report import build_report

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    rid = analyzed_run.run_id
    vals = [0.90, 0.95, 0.951, 0.91, 0.96, 0.962]              # member 0 is within 0.1 pp at its epoch 2
    with closing(sqlite3.connect(ws / DB_NAME)) as conn, conn:
        conn.execute("DELETE FROM epochs WHERE run_id = ?", (rid,))
        conn.execute("DELETE FROM step_metrics WHERE run_id = ?", (rid,))
    with Store.open(ws) as store:
        for i, v in enumerate(vals):        # two points per epoch: steps 10i+5 and 10i+10, at epochs i+0.5 and i+1
            store.log_epoch(rid, i + 1, 1 - v, v, 1.05 - v, v, 0.1, 2.0, member=i // 3,
                            steps=[(10 * i + 5 * h, {"train_loss": 1 - v, "epoch": i + h / 2}) for h in (1, 2)],
                            histograms=[{"name": "w", "kind": "weight", "lo": -v, "hi": v, "mean": 0.0, "std": v / 2,
                                         "counts": [1, 2, 1]}])
        hint = insight.early_stop(store.epochs(rid))
    summary_path = ws / rid / "analysis" / "test" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "insight": hint}))
    out = tmp_path / "report.html"
    build_report(ws, rid, "test", out)
    t = Tab(browser, out.as_uri(), rid)
    page = t.view("overview")
    text = page.inner_text('[data-testid="insight"]')
    assert "ensemble of 2 members" in text and "epochs 2 of 3, 3 of 3" in text and "saved 1 of 6 epochs" in text
    page.wait_for_selector('[data-testid="acc-chart"] .scatterlayer .trace')
    val = page.evaluate("() => document.querySelector('[data-testid=\"acc-chart\"]').data[1].y")
    assert val == vals[:3] + [None] + vals[3:]               # no line from member 1's last epoch to member 2's first
    notes = page.eval_on_selector_all('[data-testid="acc-chart"] .annotation-text', "as => as.map(a => a.textContent)")
    assert notes.count("member 1") == 1 and notes.count("member 2") == 1
    # per step likewise: a gap between the members (the smoothing starts afresh after it), a line at each epoch's end
    page.wait_for_selector('[data-testid="step-charts"] .chart .scatterlayer .trace')
    chart = page.evaluate("() => { const c = document.querySelector('[data-testid=\"step-charts\"] .chart');"
                          " return [c.data[0].x, c.data[0].y, c.data[1].y, c.layout.shapes.map(s => s.x0)]; }")
    x, raw, smoothed, lines = chart
    assert x == [5, 10, 15, 20, 25, 30, 35, 35, 40, 45, 50, 55, 60] and raw[6] is None and smoothed[6] is None
    assert smoothed[7] == pytest.approx(raw[7]) and lines == [10, 20, 30, 40, 50, 60]
    # the weights likewise: each member's epochs drawn apart
    page.wait_for_selector('[data-testid="hist-weight"] .scatterlayer .trace')
    medians = page.evaluate("() => document.querySelector('[data-testid=\"hist-weight\"]').data"
                            ".filter(t => t.name === 'median').map(t => t.x)")
    assert medians == [[1, 2, 3], [4, 5, 6]]
    page.screenshot(path=str(test_output_dir / "web-report-overview-ensemble.png"))
    assert not t.dialogs and not t.errors
    t.page.close()


def test_the_gradcam_note_shows_with_gradcam_only(browser, analyzed_run, copy_workspace, tmp_path, test_output_dir):
    """A net with unpadded convs has Grad-CAM maps that cover only the input's centre: the saliency view says so
    under the legend while Grad-CAM is the chosen method, and says nothing for the other methods."""
    from deepdive.web.report import build_report

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    rid = analyzed_run.run_id
    summary_path = ws / rid / "analysis" / "test" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["saliency"]["settings"]["gradcam"]["margin"] = 2       # as for ConvNet(stem_padding="valid")
    sanity = summary["saliency"]["sanity"]                          # and only integrated gradients stays alike
    sanity["rank_correlation"] = {m: (0.9 if m == "integrated_gradients" else 0.1) for m in sanity["rank_correlation"]}
    summary_path.write_text(json.dumps(summary))
    out = tmp_path / "report.html"
    build_report(ws, rid, "test", out)
    t = Tab(browser, out.as_uri(), rid)
    page = t.view("saliency")
    note = page.locator('[data-testid="method-note"]')
    switcher = '[data-testid="method-switcher"]'
    assert page.locator(f"{switcher} button.active").get_attribute("data-value") != "gradcam"
    assert not note.is_visible()
    page.click(f'{switcher} button[data-value="gradcam"]')
    assert note.is_visible() and "central 24×24 pixels" in note.inner_text()
    page.screenshot(path=str(test_output_dir / "web-report-saliency-gradcam-note.png"))
    page.click(f'{switcher} button[data-value="integrated_gradients"]')   # the sanity check's warning
    assert note.is_visible() and "shuffled these maps stay alike (ρ 0.90" in note.inner_text()
    page.click(f'{switcher} button[data-value="gradient"]')
    assert not note.is_visible() and not t.dialogs and not t.errors
    t.page.close()


def test_the_runs_page_overlays_the_ticked_runs_curves(browser, analyzed_run, tmp_path, test_output_dir):
    """The runs page lists each run's recipe and overlays the training curves of the ticked runs (the newest
    ones start ticked), one colour per run; unticking a run takes its lines away."""
    import deepdive

    ws = hostile_copy(analyzed_run, tmp_path)                   # the trained run is named XSS_RUN
    run = deepdive.init(name="my-net", workspace=ws)             # a run logged through the Python API
    logged = [0.8, 0.9, 0.95, 0.97]
    for acc in logged:
        run.log_step(loss=1 - acc)
        run.log(train_loss=1.2 - acc, train_acc=acc, val_loss=1.1 - acc, val_acc=acc, grad_norm=2 * acc)
    run.finish()
    with serving(ws) as url:
        t = Tab(browser, url, analyzed_run.run_id)
        page = t.page
        page.wait_for_selector('[data-testid="runs-table"]')
        recipes = page.eval_on_selector_all('[data-testid="runs-table"] tbody tr td:nth-child(5)',
                                            "tds => tds.map(td => td.textContent)")
        assert recipes == ["–", "fast · 1 ep · seed 0 · 3,000 images"]             # newest first; the API run has no recipe
        page.wait_for_selector('[data-testid="compare-acc"] .scatterlayer .trace')
        acc = page.evaluate("() => document.querySelector('[data-testid=\"compare-acc\"]').data")
        assert [tr["y"] for tr in acc] == [logged, [e["val_acc"] for e in analyzed_run.store.epochs(analyzed_run.run_id)]]
        assert acc[0]["name"].startswith("my-net") and acc[1]["name"].startswith(XSS_RUN)
        legend = page.eval_on_selector_all('[data-testid="compare-acc"] .legendtext', "ts => ts.map(t => t.textContent)")
        assert legend[0].startswith("my-net") and legend[1].startswith(XSS_RUN)   # markup in a name shows as text
        loss = page.evaluate("() => document.querySelector('[data-testid=\"compare-loss\"]').data.length")
        assert loss == 4                                              # validation and train loss per run
        # any metric either run logged: first the API run's own, then the recipe's system readings for both
        any_data = "() => document.querySelector('[data-testid=\"compare-any\"]').data"
        page.wait_for_selector('[data-testid="compare-any"] .scatterlayer .trace')
        options = page.eval_on_selector_all('[data-testid="compare-metric"] option', "os => os.map(o => o.value)")
        assert options[:4] == ["val_acc", "train_acc", "val_loss", "train_loss"]
        assert {"grad_norm", "system/cpu_percent", "system/peak_rss_mb"} <= set(options)
        assert page.input_value('[data-testid="compare-metric"]') == "grad_norm"
        assert [tr["y"] for tr in page.evaluate(any_data)] == [pytest.approx([2 * a for a in logged])]
        page.select_option('[data-testid="compare-metric"]', "system/cpu_percent")
        page.wait_for_function(f"() => ({any_data})().length === 2")
        cpu = [e["metrics"]["system/cpu_percent"] for e in analyzed_run.store.epochs(analyzed_run.run_id)]
        assert page.evaluate(any_data)[1]["y"] == pytest.approx(cpu)
        # per step: both runs' train loss against the step, smoothed (the API run logged only its own "loss")
        assert {"step:train_loss", "step:lr", "step:loss"} <= set(options)
        assert not {"step:epoch", "step:train_seconds"} & set(options)     # axes, not charts
        assert not page.is_visible('[data-testid="step-smoothing"]')
        page.select_option('[data-testid="compare-metric"]', "step:train_loss")
        page.wait_for_function(f"() => ({any_data})().length === 1")
        steps = analyzed_run.store.steps(analyzed_run.run_id)["train_loss"]
        curve = page.evaluate(any_data)[0]
        assert curve["x"] == steps["step"] and curve["y"][0] == pytest.approx(steps["value"][0])
        assert curve["y"] != pytest.approx(steps["value"]) and page.is_visible('[data-testid="step-smoothing"]')
        page.eval_on_selector('[data-testid="step-smoothing"]',
                              "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
        page.wait_for_function(f"() => ({any_data})()[0].y[1] === {steps['value'][1]}")
        page.click('[data-testid="step-axis"] button[data-value="epoch"]')     # where in training, as the epochs
        epochs_at = analyzed_run.store.steps(analyzed_run.run_id)["epoch"]["value"]
        page.wait_for_function(f"() => ({any_data})()[0].x[0] === {epochs_at[0]}")
        assert page.evaluate(any_data)[0]["x"] == pytest.approx(epochs_at)
        page.click('[data-testid="step-axis"] button[data-value="step"]')
        page.select_option('[data-testid="compare-metric"]', "step:loss")
        page.wait_for_function(f"() => ({any_data})().length === 1 && ({any_data})()[0].x.length === 4")
        assert page.evaluate(any_data)[0]["y"] == pytest.approx([1 - a for a in logged])
        page.select_option('[data-testid="compare-metric"]', "system/cpu_percent")
        page.wait_for_function(f"() => ({any_data})().length === 2")
        page.screenshot(path=str(test_output_dir / "web-runs-compare.png"))
        page.locator('[data-testid="compare-tick"]').first.uncheck()
        page.wait_for_function("() => document.querySelector('[data-testid=\"compare-acc\"]').data.length === 1")
        assert page.input_value('[data-testid="compare-metric"]') == "system/cpu_percent"   # kept across redraws
        assert "grad_norm" not in page.eval_on_selector_all('[data-testid="compare-metric"] option',
                                                             "os => os.map(o => o.value)")
        page.locator('[data-testid="compare-tick"]').last.uncheck()
        page.wait_for_selector('[data-testid="compare"] .note')
        assert "Tick runs" in page.inner_text('[data-testid="compare"]')
        assert not t.dialogs and not t.errors
        t.page.close()


def test_the_runs_page_groups_the_seeds_of_a_recipe(browser, tmp_path):
    """Grouped by recipe, the ticked runs' curves become one per group: the mean of its runs at each epoch, shaded
    between the least and the greatest; the group table has each group's test accuracy over its seeds. Grouped by
    name, runs of two recipes under one name go together."""
    from deepdive.store import Store

    ws = tmp_path / "ws"
    runs = [("a", "fast", 0, [0.80, 0.90, 0.95], 0.9950), ("a", "fast", 1, [0.82, 0.92, 0.97], 0.9960),
            ("a", "fast", 2, [0.78, 0.88], 0.9940), ("b", "default", 0, [0.70, 0.80, 0.85], 0.9970),
            ("a", "default", 1, [0.72, 0.84, 0.86], 0.9972)]
    with Store.open(ws) as store:
        for name, preset, seed, accs, test_acc in runs:
            rid = store.create_run(name, "mnist", {"preset": preset, "seed": seed, "epochs": 3}, {},
                                   [str(c) for c in range(10)], "cpu").id
            for e, a in enumerate(accs, 1):
                store.log_epoch(rid, e, 1 - a, a, 1.1 - a, a, 0.1, 1.0)
            if preset == "fast" and seed < 2:      # per step: the train loss and the training clock
                store.log_steps(rid, [(st, {"train_loss": 1.0 - st / 100 - seed / 10, "train_seconds": st * (seed + 1)})
                                      for st in (10, 20, 30)])
            store.finish_run(rid, test_acc, 10.0 * (seed + 1), 1000, "cnn")
    with serving(ws) as url:
        t = Tab(browser, url, None)
        page = t.page
        page.wait_for_selector('[data-testid="compare-acc"] .scatterlayer .trace')
        acc = "() => document.querySelector('[data-testid=\"compare-acc\"]').data"
        assert len(page.evaluate(acc)) == 5 and not page.is_visible('[data-testid="group-table"]')
        page.select_option('[data-testid="group-by"]', "recipe")
        page.wait_for_function(f"() => ({acc})().length === 6")
        traces = page.evaluate(acc)
        means = {tr["name"]: tr for tr in traces if tr.get("showlegend") is not False}
        assert set(means) == {"mnist · fast · 3 ep · 3 runs", "mnist · default · 3 ep · 2 runs"}
        fast = means["mnist · fast · 3 ep · 3 runs"]
        assert fast["x"] == [1, 2, 3] and fast["y"] == pytest.approx([0.80, 0.90, 0.96])   # epoch 3: two runs
        lo, hi = [tr["y"] for tr in traces if tr.get("legendgroup") == fast["name"] and tr is not fast][:2]
        assert lo == pytest.approx([0.78, 0.88, 0.95]) and hi == pytest.approx([0.82, 0.92, 0.97])
        rows = page.eval_on_selector_all('[data-testid="group-table"] tbody tr',
                                         "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        assert ["mnist · fast · 3 ep", "3", "99.50%", "99.50%", "99.40%–99.60%", "0.100 pp", "20.0 s"] in rows, rows
        assert ["mnist · default · 3 ep", "2", "99.71%", "99.71%", "99.70%–99.72%", "0.014 pp", "15.0 s"] in rows, rows
        assert "shaded between the least and the greatest" in page.inner_text('[data-testid="compare"] .note')
        # any metric, per step: the group's mean at each step (unsmoothed here); against the clock, each run alone
        anyd = "() => document.querySelector('[data-testid=\"compare-any\"]').data"
        page.select_option('[data-testid="compare-metric"]', "step:train_loss")
        page.eval_on_selector('[data-testid="step-smoothing"]',
                              "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
        page.wait_for_function(f"() => ({anyd})().length === 3 && ({anyd})()[2].y[0] < 0.9")
        band = page.evaluate(anyd)
        assert band[2]["x"] == [10, 20, 30] and band[2]["y"] == pytest.approx([0.85, 0.75, 0.65])
        assert band[0]["y"] == pytest.approx([0.8, 0.7, 0.6]) and band[1]["y"] == pytest.approx([0.9, 0.8, 0.7])
        page.click('[data-testid="step-axis"] button[data-value="train_seconds"]')
        page.wait_for_function(f"() => ({anyd})().length === 3 && ({anyd})()[2].x.length === 5")
        timed = page.evaluate(anyd)        # resampled: seed 0 at 10-30 s, seed 1 at 20-60 s (twice as slow)
        assert timed[2]["x"] == [10, 20, 30, 40, 60]
        assert timed[2]["y"] == pytest.approx([0.9, 0.8, 0.725, 0.7, 0.6])
        assert timed[2]["customdata"][0][2] == 1 and timed[2]["customdata"][2][2] == 2     # how many runs at each
        page.click('[data-testid="step-axis"] button[data-value="step"]')
        page.select_option('[data-testid="group-by"]', "name")
        page.wait_for_function(f"() => ({acc})().filter(t => t.showlegend !== false).length === 2")
        names = [tr["name"] for tr in page.evaluate(acc) if tr.get("showlegend") is not False]
        assert sorted(names) == ["a · 4 runs", "b · 1 run"]
        page.select_option('[data-testid="group-by"]', "none")
        page.wait_for_function(f"() => ({acc})().length === 5")
        assert not page.is_visible('[data-testid="group-table"]')
        assert not t.dialogs and not t.errors
        t.page.close()


def test_a_runs_own_page_follows_its_training(browser, tmp_path):
    """A click on a run's name opens its own page (W&B's run page), analysed or not: its record, curves, per-step
    charts and weights; while it trains, the page follows it epoch by epoch, and says when it stops."""
    import torch

    import deepdive

    ws = tmp_path / "ws"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    run = deepdive.init(name="live-net", workspace=ws)
    run.watch(model)

    def epoch(k):
        model(torch.randn(4, 3)).sum().backward()
        run.log_step(loss=1.0 - k / 10)
        run.log(train_loss=1 - k / 10, val_loss=1.1 - k / 10, train_acc=0.5 + k / 10, val_acc=0.5 + k / 10)

    epoch(0)
    epoch(1)
    acc = "() => document.querySelector('[data-testid=\"acc-chart\"]').data[1].y"
    with serving(ws) as url:
        t = Tab(browser, url, None)
        page = t.page
        page.click('[data-testid="run-link"]')
        page.wait_for_selector('[data-testid="loss-chart"] .scatterlayer .trace')
        assert page.url.endswith(f"#/run/{run.id}") and page.inner_text("h1.view-title") == "live-net"
        assert "training… this page follows it" in page.inner_text('[data-testid="run-next"]')
        assert page.evaluate(acc) == pytest.approx([0.5, 0.6])
        assert "No validation accuracy was logged" not in page.inner_text('[data-testid="insight"]')   # the hint
        page.wait_for_selector('[data-testid="hist-weight"] .scatterlayer .trace')
        page.wait_for_selector('[data-testid="step-charts"] .chart .scatterlayer .trace')
        epoch(2)                                                        # the page follows
        page.wait_for_function(f"() => ({acc})().length === 3", timeout=20_000)
        run.finish()
        page.wait_for_function("() => !document.querySelector('[data-testid=\"run-facts\"] .status.running')",
                               timeout=20_000)
        assert "training…" not in page.inner_text('[data-testid="run-facts"]')
        assert not t.dialogs and not t.errors
        t.page.close()


def test_a_run_is_deleted_from_the_runs_page_once_confirmed(browser, analyzed_run, copy_workspace, tmp_path):
    """Each finished or stopped run has a delete button; nothing goes until the person confirms, then the run's
    row, rows in the store and folder go, and the page lists the runs left. A running run has no button."""
    import deepdive
    from deepdive.store import Store

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    gone = deepdive.init(name="scratch", workspace=ws)
    gone.log(val_acc=0.5)
    gone.finish()                                                   # interrupted: no model
    with Store.open(ws) as store, serving(ws) as url:
        busy = store.create_run("busy", "mnist", {}, {}, [str(c) for c in range(10)], "cpu").id
        t = Tab(browser, url, analyzed_run.run_id)
        page = t.page
        page.wait_for_selector('[data-testid="runs-table"]')
        assert page.locator(f'tr[data-run="{busy}"] [data-testid="delete-run"]').count() == 0
        button = f'tr[data-run="{gone.id}"] [data-testid="delete-run"]'
        page.click(button)                                          # the Tab dismisses the confirm: nothing goes
        assert len(t.dialogs) == 1 and f"Delete run scratch ({gone.id})?" in t.dialogs[0]
        assert store.get_run(gone.id).status == "interrupted" and gone.run_dir.is_dir()
        page.evaluate("() => { window.confirm = () => true; }")
        page.click(button)
        page.wait_for_function(f"() => !document.querySelector('tr[data-run=\"{gone.id}\"]') && "
                               "document.querySelector('[data-testid=\"runs-table\"]')")
        rows = page.eval_on_selector_all('[data-testid="runs-table"] tbody tr', "trs => trs.map(t => t.dataset.run)")
        assert rows == [busy, analyzed_run.run_id]
        assert [r.id for r in store.list_runs()] == [busy, analyzed_run.run_id] and not gone.run_dir.exists()
        assert not t.errors
        t.page.close()


def test_a_run_is_renamed_and_annotated_from_the_runs_page(browser, analyzed_run, copy_workspace, tmp_path):
    """The pencil beside a run's name opens its name and notes; saved, the table and the run's Overview show them;
    a refused name says why and keeps the form."""
    from deepdive.store import Store

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    rid = analyzed_run.run_id
    with serving(ws) as url:
        t = Tab(browser, url, rid)
        page = t.page
        row = f'tr[data-run="{rid}"]'
        page.click(f'{row} [data-testid="edit-run"]')
        page.fill('[data-testid="edit-name"]', "latest")
        page.click('[data-testid="edit-save"]')
        page.wait_for_selector(f"{row} .bad")
        assert "invalid run name" in page.inner_text(f"{row} .bad")
        page.fill('[data-testid="edit-name"]', "<b>first</b> net")
        page.fill('[data-testid="edit-notes"]', "stroke thinning on\nnext: try rotate ±20°")
        page.click('[data-testid="edit-save"]')
        page.wait_for_selector(f'{row} [data-testid="run-notes"]')
        assert page.inner_text(f"{row} td:nth-child(2) .strong") == "<b>first</b> net"    # text, not markup
        assert "stroke thinning on" in page.inner_text(f'{row} [data-testid="run-notes"]')
        t.view("overview").wait_for_selector('[data-testid="overview-notes"]')
        assert "next: try rotate ±20°" in page.inner_text('[data-testid="overview-notes"]')
        assert page.locator("b", has_text="first").count() == 0 and not t.dialogs and not t.errors
        t.page.close()
    with Store.open(ws) as store:
        run = store.get_run(rid)
        assert (run.name, run.notes) == ("<b>first</b> net", "stroke thinning on\nnext: try rotate ±20°")


def test_the_runs_page_sets_a_setting_against_test_accuracy(browser, analyzed_run, copy_workspace, tmp_path):
    """The settings that differ between runs with an accuracy are offered; the chart has one point per run, on a
    linear axis for numbers, categories for the rest."""
    from deepdive.store import Store

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    with Store.open(ws) as store:
        trained = store.get_run(analyzed_run.run_id)
        for name, lr, acc in (("lr-low", 0.01, 0.95), ("lr-high", 0.5, 0.97)):
            rid = store.create_run(name, "mnist", {"preset": "sweep", "resolved": {"lr": lr, "arch": "cnn"},
                                                   "reviewed_labels": {"relabel": {str(i): 1 for i in range(60)}}},
                                   {}, [str(c) for c in range(10)], "cpu").id
            store.finish_run(rid, acc, 2.0, 100, "cnn")
        store.create_run("unfinished", "mnist", {"resolved": {"lr": 9.0}}, {}, [str(c) for c in range(10)], "cpu")
    with serving(ws) as url:
        t = Tab(browser, url, analyzed_run.run_id)
        page = t.page
        page.wait_for_selector('[data-testid="params-chart"][data-key="resolved.lr"] .scatterlayer .trace')
        keys = page.eval_on_selector_all('[data-testid="params-key"] option', "os => os.map(o => o.value)")
        assert "resolved.lr" in keys and "preset" in keys and not any(k.startswith("reviewed_labels") for k in keys)
        assert "resolved.arch" not in keys                           # the same for all three
        data = page.evaluate("() => document.querySelector('[data-testid=\"params-chart\"]').data[0]")
        lr = trained.config["resolved"]["lr"]
        assert sorted(zip(data["x"], data["y"])) == sorted([(0.01, 0.95), (0.5, 0.97), (lr, trained.test_accuracy)])
        page.select_option('[data-testid="params-key"]', "preset")
        page.wait_for_selector('[data-testid="params-chart"][data-key="preset"]')
        data = page.evaluate("() => document.querySelector('[data-testid=\"params-chart\"]').data[0]")
        assert sorted(data["x"]) == sorted(["sweep", "sweep", trained.config["preset"]]) and not t.errors
        t.page.close()


def test_the_overview_draws_the_curves_per_step_smoothed(tab, analyzed_run):
    """The recipe's train loss, accuracy and learning rate every few steps: one chart each, the points as logged
    (faint) under a smoothed line; the smoothing slider redraws it, and at 0 the line is the points."""
    steps = analyzed_run.store.steps(analyzed_run.run_id)
    page = tab.view("overview")
    page.wait_for_selector('[data-testid="step-charts"] .chart:last-child .scatterlayer .trace')
    read = "cs => cs.map(c => [c.dataset.metric, c.data[0].x, c.data[0].y, c.data[1].y])"
    charts = page.eval_on_selector_all('[data-testid="step-charts"] .chart', read)
    assert [c[0] for c in charts] == ["train_loss", "train_acc", "lr"]
    for name, x, raw, smoothed in charts:
        assert x == steps[name]["step"] and raw == pytest.approx(steps[name]["value"])
    assert charts[0][3] != pytest.approx(charts[0][2]) and charts[0][3][0] == pytest.approx(charts[0][2][0])
    assert charts[2][3] == pytest.approx(charts[2][2])             # the learning rate is a schedule: not smoothed
    page.eval_on_selector('[data-testid="step-smoothing"]',
                          "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
    charts = page.eval_on_selector_all('[data-testid="step-charts"] .chart', read)
    assert all(c[3] == pytest.approx(c[2]) for c in charts)
    assert "0.00" in page.inner_text('[data-testid="step-charts"]')
    # against the epoch the recipe logged at each point: the same points, where in training they are
    page.click('[data-testid="step-axis"] button[data-value="epoch"]')
    page.wait_for_function("() => document.querySelector('[data-testid=\"step-charts\"] .chart').layout.xaxis"
                           ".title.text === 'epoch'")
    charts = page.eval_on_selector_all('[data-testid="step-charts"] .chart', read)
    assert all(c[1] == pytest.approx(steps["epoch"]["value"]) for c in charts)
    page.click('[data-testid="step-axis"] button[data-value="train_seconds"]')     # and when: seconds of training
    page.wait_for_function("() => document.querySelector('[data-testid=\"step-charts\"] .chart').layout.xaxis"
                           ".title.text === 'training seconds'")
    charts = page.eval_on_selector_all('[data-testid="step-charts"] .chart', read)
    assert all(c[1] == pytest.approx(steps["train_seconds"]["value"]) for c in charts)
    page.click('[data-testid="step-axis"] button[data-value="step"]')       # kept across views: put back
    assert not tab.errors


def test_a_custom_runs_overview_draws_what_its_loop_logged(browser, tmp_path):
    """A run of your own that logged only its training loss: the loss chart has it, the accuracy chart says how to
    log accuracy instead of drawing empty axes, and the training time reads "in your own loop"."""
    import torch

    import deepdive

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    images, labels = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    run = deepdive.log_evaluation(model, (images, labels), workspace=tmp_path, name="mine", progress=False,
                                  history=[{"train_loss": 2.3, "grad_norm": 4.0, "val/top2_acc": 0.5},
                                           {"train_loss": 1.9, "grad_norm": 3.0, "val/top2_acc": 0.75}])
    with serving(tmp_path) as url:
        t = Tab(browser, url, run.id)
        page = t.view("overview")
        page.wait_for_selector('[data-testid="loss-chart"] .scatterlayer .trace')
        assert "No accuracy was logged per epoch" in page.inner_text('[data-testid="acc-chart"]')
        assert "2 epochs in your own loop" in page.inner_text('[data-testid="overview-cards"]')
        # its own metrics, one chart each by name, then the process's readings
        page.wait_for_selector('[data-testid="other-metrics"] .chart:last-child .scatterlayer .trace')
        charts = page.eval_on_selector_all('[data-testid="other-metrics"] .chart',
                                           "cs => cs.map(c => [c.dataset.metric, c.data[0].y, c.layout.yaxis.tickformat])")
        assert [c[0] for c in charts] == ["grad_norm", "val/top2_acc", "system/cpu_percent", "system/peak_rss_mb"]
        assert charts[0][1] == [4.0, 3.0] and charts[1][1:] == [[0.5, 0.75], ".2%"]    # an accuracy as one
        assert "% of one core" in page.inner_text('[data-testid="other-metrics"]')
        assert not t.errors
        t.page.close()


def test_pictures_wider_than_tall_and_long_class_names(browser, tmp_path):
    """A model of your own on 12x20 pictures with 12 long class names. Each thumbnail shows its own picture (the
    sprite sheet's cells are 20 wide and 12 high: a square cut drifts down a row at a time), drawn at the picture's
    shape; a class name too long for its column in the predictions is cut short with the whole of it on hover; the
    class table's errors cell is as tall as its row and each class its own colour; the robustness curves' legend
    goes down the chart's side."""
    import torch

    import deepdive

    n, classes = 300, 12
    levels = (40 + (np.arange(n) * 37) % 200).astype(np.float32) / 255      # picture i is one grey, its own
    images = torch.from_numpy(np.broadcast_to(levels[:, None, None, None], (n, 1, 12, 20)).copy())
    labels = torch.from_numpy(np.arange(n) % classes)
    names = [f"a rather long name for class {c} of the set" for c in range(classes)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12 * 20, classes))
    run = deepdive.log_evaluation(model, (images, labels), class_names=names, workspace=tmp_path, name="wide",
                                  progress=False)
    with serving(tmp_path) as url:
        t = Tab(browser, url, run.id)
        page = t.view("predictions")
        page.wait_for_selector(".vrow .thumb")
        thumbs = page.locator(".vrow .thumb")
        checked = []
        for i in range(thumbs.count()):
            thumb = thumbs.nth(i)
            row = int(thumb.get_attribute("data-row"))
            box = thumb.bounding_box()
            assert box["width"] == pytest.approx(36, abs=0.1) and box["height"] == pytest.approx(36 * 12 / 20, abs=0.1)
            shot = np.asarray(Image.open(io.BytesIO(thumb.screenshot())).convert("L"), np.float32)
            centre = shot[shot.shape[0] // 2 - 2:shot.shape[0] // 2 + 2, shot.shape[1] // 2 - 2:shot.shape[1] // 2 + 2]
            assert np.abs(centre - levels[row] * 255).max() <= 2, f"thumbnail of row {row}"
            checked.append(row)
        assert len(checked) >= 10 and max(checked) >= 100      # some from the sheet's second row of cells on
        cut = page.eval_on_selector(".vrow .cname", "c => [c.scrollWidth > c.clientWidth, c.title, c.textContent]")
        assert cut[0] and cut[1] == cut[2] and cut[1] in names
        page = t.view("classes")
        page.wait_for_selector('[data-testid="class-errors"] .thumb')
        heights = page.eval_on_selector_all('[data-testid="class-errors"]',
                                            "cs => cs.map(c => [c.offsetHeight, c.parentElement.offsetHeight])")
        assert heights and all(cell == row for cell, row in heights)
        swatches = page.eval_on_selector_all('[data-testid="class-table"] .swatch',
                                             "ss => ss.map(s => s.style.background)")
        assert len(swatches) == len(set(swatches)) == classes            # twelve classes, twelve colours
        page = t.view("robustness")
        page.wait_for_selector('[data-testid="robustness-chart"] .scatterlayer .trace', state="attached")
        legend = page.evaluate("() => document.querySelector('[data-testid=\"robustness-chart\"]').layout.legend")
        assert legend["orientation"] == "v"
        assert not t.errors and not t.dialogs
        t.page.close()


def test_many_classes_draw_the_robustness_curves_of_those_that_hold_least(browser, tmp_path):
    """24 classes, classes 22 and 23 drawn like class 0 (so at most one of the three is ever right): past 20 classes
    the curves drawn at first are 10 classes with right answers tried, the least held first; a class with none
    (its shares null) is not among them."""
    import torch

    import deepdive

    classes, per = 24, 6
    labels = torch.arange(classes).repeat_interleave(per)
    looks = torch.where(labels >= 22, 0, labels)                        # what each picture shows
    images = torch.zeros(len(labels), 1, 28, 28)
    for i, c in enumerate(looks.tolist()):
        images[i, 0, 2 + c, 4:24] = 1.0                                  # a bar at the class's row
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, classes))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = deepdive.log_evaluation(model, (images, labels), workspace=tmp_path, name="many", progress=False)
    family = next(f for f in run.summary["robustness"]["families"] if f["id"] == "turn")
    empty = {c for c, shares in enumerate(family["per_class"]) if shares[-1] is None}
    assert empty and len(empty) <= classes - 10
    with serving(tmp_path) as url:
        t = Tab(browser, url, run.id)
        page = t.view("robustness")
        page.wait_for_selector('[data-testid="robustness-chart"] .scatterlayer .trace', state="attached")
        traces = page.evaluate("() => document.querySelector('[data-testid=\"robustness-chart\"]').data"
                               ".map(t => [t.name, t.visible])")
        drawn = [int(name) for name, visible in traces[:-1] if visible is True]
        assert len(drawn) == 10 and not set(drawn) & empty and traces[-1] == ["all", None]
        last = {c: family["per_class"][c][-1] for c in range(classes) if c not in empty}
        assert max(last[c] for c in drawn) <= min(v for c, v in last.items() if c not in drawn)
        assert "the 10 with the least still right" in page.inner_text('main')
        assert not t.errors
        t.page.close()


def test_runs_that_logged_no_epochs_draw_no_empty_curves(browser, tmp_path):
    """Two models logged with log_evaluation alone: the runs page draws no empty axes for their curves (the note
    names them) and offers no metric to pick; their training time reads "–", not "0.0 s"."""
    import torch

    import deepdive

    torch.manual_seed(0)
    images, labels = torch.rand(24, 1, 28, 28), torch.randint(0, 10, (24,))
    for name in ("first", "second"):
        deepdive.log_evaluation(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)),
                                (images, labels), workspace=tmp_path, name=name, progress=False)
    with serving(tmp_path) as url:
        t = Tab(browser, url, "")
        page = t.page
        page.wait_for_function("() => /No epochs logged yet for: second, first/.test(document.body.innerText)")
        assert "Solid: validation" not in page.inner_text("body")          # no curves to read
        assert not page.is_visible('[data-testid="compare-acc"]')
        assert not page.is_visible('[data-testid="compare-loss"]')
        assert not page.is_visible('[data-testid="compare-metric"]')
        times = page.eval_on_selector_all('[data-testid="runs-table"] tbody tr td:nth-child(9)',
                                          "tds => tds.map(td => td.textContent)")
        assert times == ["–", "–"]
        assert not t.errors
        t.page.close()


def test_the_runs_table_sorts_and_filters(browser, analyzed_run, copy_workspace, tmp_path):
    """A click on a header sorts the runs by that column (again: the other way), the filter keeps the runs whose
    name, id, dataset, recipe or status hold every word typed; each row keeps its curve colour."""
    from deepdive.store import Store

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    with Store.open(ws) as store:
        for name, acc in (("low", 0.91), ("high", 0.999)):
            rid = store.create_run(name, "fashion-mnist", {}, {}, [str(c) for c in range(10)], "cpu").id
            store.finish_run(rid, acc, 2.0, 100, "cnn")
        first = store.get_run(analyzed_run.run_id)
    trained, store_acc = first.name, first.test_accuracy
    with serving(ws) as url:
        t = Tab(browser, url, analyzed_run.run_id)
        page = t.page
        page.wait_for_selector('[data-testid="runs-table"]')
        names = 'trs => trs.map(t => t.children[1].querySelector(".strong").textContent)'
        rows = '[data-testid="runs-table"] tbody tr'
        assert page.eval_on_selector_all(rows, names) == ["high", "low", trained]           # newest first
        colours = page.eval_on_selector_all(f"{rows} input", "xs => xs.map(x => x.style.accentColor)")
        page.click('th[data-sort="test_accuracy"]')                                          # best first
        expected = [n for n, _ in sorted([("high", 0.999), ("low", 0.91), (trained, store_acc)], key=lambda p: -p[1])]
        assert page.eval_on_selector_all(rows, names) == expected
        assert page.get_attribute('th[data-sort="test_accuracy"]', "aria-sort") == "descending"
        page.click('th[data-sort="test_accuracy"]')
        assert page.eval_on_selector_all(rows, names) == expected[::-1]
        by_name = dict(zip(page.eval_on_selector_all(rows, names),
                           page.eval_on_selector_all(f"{rows} input", "xs => xs.map(x => x.style.accentColor)")))
        assert [by_name[n] for n in ("high", "low", trained)] == colours
        page.fill('[data-testid="runs-filter"]', "fashion FINISHED")
        assert sorted(page.eval_on_selector_all(rows, names)) == ["high", "low"]
        assert page.inner_text('[data-testid="runs-shown"]') == "2 of 3 runs"
        page.fill('[data-testid="runs-filter"]', "")
        assert page.inner_text('[data-testid="runs-shown"]') == "3 runs" and not t.errors
        t.page.close()


def test_overview_says_which_epochs_a_run_pruned(browser, analyzed_run, copy_workspace, tmp_path):
    """A run whose recipe pruned data (fast on the CPU) says so on its recipe card and in the curves' note, which
    explains why its train line steps up in those epochs; the 1-epoch test run pruned nothing and says nothing."""
    from deepdive.store import Store

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    rid = analyzed_run.run_id

    def overview():
        with serving(ws) as url:    # a fresh server: it caches a run's bundle until its analysis changes
            t = Tab(browser, url, rid)
            t.view("overview").wait_for_selector('[data-testid="curves-note"]')
            texts = (t.page.inner_text('[data-testid="overview-cards"]'),
                     t.page.inner_text('[data-testid="curves-note"]'))
            assert not t.dialogs and not t.errors
            t.page.close()
            return texts

    cards, note = overview()
    assert "pruned" not in cards and "InfoBatch" not in note
    with Store.open(ws) as store:
        config = store.get_run(rid).config
        assert config["resolved"]["prune"] == 0.5 and config["resolved"]["epochs"] == 1
        store.set_config(rid, {**config, "resolved": {**config["resolved"], "epochs": 4, "prune_until": 0.75}})
    cards, note = overview()
    assert "epochs 2-3 pruned" in cards and "member" not in cards
    assert "pruned epochs 2-3 (InfoBatch)" in note and "a random 50% of the images" in note
    with Store.open(ws) as store:     # an ensemble's members each prune their own epochs
        store.set_config(rid, {**store.get_run(rid).config, "ensemble": 2})
    cards, note = overview()
    assert "each member's epochs 2-3 pruned" in cards and "pruned each member's epochs 2-3" in note
    assert "reviewed labels" not in cards
    with Store.open(ws) as store:     # trained with people's reviews of its labels (train --reviewed-labels)
        store.set_config(rid, {**store.get_run(rid).config,
                               "reviewed_labels": {"relabel": {"12": 3, "40": 1}, "leave_out": [7]}})
    cards, note = overview()
    assert "reviewed labels: 2 relabelled, 1 left out" in cards


def test_the_runs_page_follows_a_run_while_it_trains(browser, analyzed_run, copy_workspace, tmp_path):
    """A run still training: its curves grow as it logs epochs and its row turns finished, without a reload."""
    from deepdive.store import Store

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    with Store.open(ws) as store, serving(ws) as url:
        rid = store.create_run("live", "mnist", {"preset": "fast", "seed": 3}, {}, [str(c) for c in range(10)],
                               "cpu").id
        for epoch, acc in ((1, 0.9), (2, 0.95)):
            store.log_epoch(rid, epoch, 0.5, acc, 0.4, acc, 0.1, 1.0)
        t = Tab(browser, url, rid)
        page = t.page
        page.wait_for_selector('[data-testid="compare-acc"] .scatterlayer .trace')
        live_y = "document.querySelector('[data-testid=\"compare-acc\"]').data[0].y"
        assert page.evaluate(f"() => {live_y}") == [0.9, 0.95]
        assert page.inner_text(f'tr[data-run="{rid}"] .status') == "running"
        row = f'tr[data-run="{rid}"]'
        page.eval_on_selector(row, "tr => { tr.dataset.mark = 'kept'; }")
        store.log_epoch(rid, 3, 0.3, 0.97, 0.3, 0.97, 0.1, 1.0)
        page.wait_for_function(f"() => {live_y}.length === 3", timeout=20_000)
        assert page.get_attribute(row, "data-mark") == "kept"     # a new epoch redraws the curves, not the rows
        store.finish_run(rid, 0.96, 3.0, 1000, "cnn")
        page.wait_for_function(f"() => document.querySelector('tr[data-run=\"{rid}\"] .status').textContent === 'finished'",
                               timeout=20_000)
        assert page.evaluate(f"() => {live_y}") == [0.9, 0.95, 0.97]
        assert "96.00%" in page.inner_text(f'tr[data-run="{rid}"]')
        assert not t.dialogs and not t.errors
        t.page.close()
