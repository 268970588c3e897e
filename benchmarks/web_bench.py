"""Dashboard performance on a real run (prints numbers; not a test).

    python benchmarks/web_bench.py [RUN] [--workspace runs] [--split test] [--repeat 5] [--screenshots docs]

Serves the workspace from a local uvicorn (127.0.0.1, free port), drives Debian's Chromium through Playwright
and reads the performance marks the front end sets:
  first meaningful paint   navigation start → overview cards and insight painted                 (target ≤ 1 s)
                           (the training charts follow once plotly.js is loaded; printed too)
  confusion-cell hover     mouseover → that cell's thumbnails painted                            (target ≤ 100 ms)
  predictions filter       select change → the filtered table painted                            (target ≤ 200 ms)
  static export size       `deepdive report` file size                                          (target ≤ 15 MB)
  try an image             a stroke on its canvas → the model's answer painted (probabilities,
                           saliency, every layer; served)                                        (target ≤ 250 ms)
                           and its nearest training images, the first search and later ones (printed)
Each browser number is the median over --repeat tries (a fresh browser context, so a cold cache, for the paint).
With --screenshots DIR it also saves the README's screenshots of the main views (DIR/dashboard-<view>.png).
"""
import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TARGETS = {"first meaningful paint (ms)": 1000, "confusion hover (ms)": 100, "predictions filter (ms)": 200,
           "try an image: stroke → answer (ms)": 250, "static export (MB)": 15}


def start_server(workspace):
    import uvicorn

    from deepdive.web.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(workspace), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"


def last_measure(page, name):
    """Duration (ms) of the newest performance measure `name`, waiting for it to appear."""
    page.wait_for_function("n => performance.getEntriesByName(n).length > 0", arg=name)
    value = page.evaluate("n => { const m = performance.getEntriesByName(n); return m[m.length - 1].duration; }", name)
    page.evaluate("n => performance.clearMeasures(n)", name)
    return value


def paint_times(page):
    """(overview painted, charts painted) in ms since navigation start."""
    page.wait_for_function("() => performance.getEntriesByName('dd-charts-painted').length > 0", timeout=60_000)
    return tuple(page.evaluate(f"performance.getEntriesByName('{m}')[0].startTime")
                 for m in ("dd-overview-painted", "dd-charts-painted"))


def first_paint(browser, url):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(url)
    times = paint_times(page)
    context.close()
    return times


def hover_times(page, counts, repeat):
    """Hover the biggest off-diagonal cell and the biggest diagonal cell (the worst case: ~1000 thumbnails)."""
    c = len(counts)
    off = max(((t, p) for t in range(c) for p in range(c) if t != p), key=lambda tp: counts[tp[0]][tp[1]])
    diag = max(((t, t) for t in range(c)), key=lambda tp: counts[tp[0]][tp[1]])
    times = {}
    for t, p in (off, diag):
        values = []
        for _ in range(repeat):
            page.mouse.move(2, 2)
            page.wait_for_selector("#tooltip", state="hidden")
            page.hover(f'td.cm-cell[data-t="{t}"][data-p="{p}"]')
            values.append(last_measure(page, "dd-hover"))
        times[f"{t}→{p} ({counts[t][p]} images)"] = statistics.median(values)
    return times


def filter_times(page, repeat):
    steps = [("filter-correct", "wrong"), ("filter-correct", "all"), ("filter-true", "3"), ("filter-true", "all"),
             ("sort", "conf-asc"), ("sort", "group")]
    values = []
    for _ in range(repeat):
        for testid, value in steps:
            page.select_option(f'[data-testid="{testid}"]', value)
            values.append(last_measure(page, "dd-filter"))
    return statistics.median(values), max(values)


def try_times(page, repeat):
    """Try an image: (median ms from a stroke to its answer painted, the first search of the training images,
    the median of later ones). Each click on the canvas is one stroke (a dot), answered before the next."""
    box = page.locator('[data-testid="try-canvas"]').bounding_box()
    page.mouse.click(box["x"] + 140, box["y"] + 40)     # loads the model on the server: not counted
    last_measure(page, "dd-try-answer")
    page.wait_for_timeout(500)
    page.evaluate("performance.clearMeasures('dd-try-answer')")
    answers = []
    for k in range(repeat):
        page.mouse.click(box["x"] + 100 + 15 * k, box["y"] + 60 + 30 * k)
        answers.append(last_measure(page, "dd-try-answer"))
    page.click('[data-testid="try-find-neighbours"]')   # scrolls the page down to the button
    first = last_measure(page, "dd-try-neighbours")
    page.evaluate("document.querySelector('.main').scrollTop = 0")
    box = page.locator('[data-testid="try-canvas"]').bounding_box()
    later = []
    for k in range(repeat):
        page.mouse.click(box["x"] + 180 - 15 * k, box["y"] + 60 + 30 * k)
        later.append(last_measure(page, "dd-try-neighbours"))
    return statistics.median(answers), first, statistics.median(later)


SHOTS = ("overview", "classes", "confusion", "saliency", "activations", "predictions", "confidence", "issues", "dynamics",
         "embedding", "advice")


def screenshots(browser, base, run_id, split, folder):
    """One PNG per main view (the confusion matrix's cells show their images), plus the runs page, an image's
    detail panel and, where the workspace has another analysed run, the Compare view."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(base)
    page.wait_for_selector('[data-testid="compare-acc"] .scatterlayer .trace')
    page.wait_for_timeout(800)
    page.screenshot(path=str(folder / "dashboard-runs.png"))
    for view in SHOTS:
        page.goto(f"{base}#/r/{run_id}/{split}/{view}")
        page.wait_for_selector(f'main[data-view="{view}"]')
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(800)  # plotly transitions, lazy images
        page.screenshot(path=str(folder / f"dashboard-{view}.png"))
        if view == "dynamics":   # and its likely label errors among the training images
            page.wait_for_selector('[data-testid="dynamics-flagged"] img.dyn-img')
            page.evaluate("document.querySelector('[data-testid=\"dynamics-flagged\"]').parentElement"
                          ".scrollIntoView()")
            page.wait_for_timeout(500)
            page.screenshot(path=str(folder / "dashboard-dynamics-flagged.png"))
    # Compare: only where the workspace has another run with this split analysed (the view picks the newest).
    page.goto(f"{base}#/r/{run_id}/{split}/compare")
    page.wait_for_function("""() => document.querySelector('[data-testid="compare-with"]') ||
                                    document.querySelector('main').innerText.includes('No other run')""")
    if page.locator('[data-testid="compare-with"]').count():
        page.wait_for_selector('[data-testid="compare-verdict"]')
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(800)
        page.screenshot(path=str(folder / "dashboard-compare.png"))
    page.mouse.move(2, 2)
    page.goto(f"{base}#/r/{run_id}/{split}/predictions")
    page.wait_for_selector(".vrow")
    page.select_option('[data-testid="filter-correct"]', "wrong")
    page.click(".vrow .thumb >> nth=0")
    page.wait_for_selector("#detail .layer")
    page.wait_for_selector('[data-testid="neighbours-reading"], [data-testid="neighbours"] .note')
    page.wait_for_timeout(500)
    page.screenshot(path=str(folder / "dashboard-detail.png"))
    page.wait_for_selector('[data-testid="channels-reading"]')   # the channels behind its answer
    page.evaluate("document.querySelector('[data-testid=\"channels\"]').previousElementSibling.scrollIntoView()")
    page.wait_for_timeout(500)
    page.screenshot(path=str(folder / "dashboard-channels.png"))
    # Try an image: that error, opened from its detail, one stroke erased across its upper left, with its nearest
    # training images
    page.click('[data-testid="try-this-image"]')
    page.wait_for_selector('[data-testid="try-status"]:has-text("answered in")')
    page.click('[data-testid="try-find-neighbours"]')
    page.wait_for_selector('[data-testid="try-neighbours"] .nb-row', timeout=300_000)
    page.click('[data-testid="try-mode"] button[data-value="erase"]')
    box = page.locator('[data-testid="try-canvas"]').bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.45 * box["width"], box["y"] + 0.3 * box["height"], steps=6)
    page.mouse.up()
    page.wait_for_load_state("networkidle")
    page.set_viewport_size({"width": 1440, "height": 1300})
    page.evaluate("document.querySelector('.main').scrollTop = 0")
    page.wait_for_timeout(800)
    page.screenshot(path=str(folder / "dashboard-try.png"))
    page.close()
    return sorted(folder.glob("dashboard-*.png"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", default="latest")
    ap.add_argument("--workspace", default="runs")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--screenshots", metavar="DIR", help="also save screenshots of the views into DIR")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from deepdive.analysis.results import AnalysisResult
    from deepdive.store import Store
    from deepdive.web.report import build_report

    with Store.open(args.workspace, create=False) as store:
        rec = store.get_run(args.run)
    summary = AnalysisResult.load(rec.run_dir, args.split).summary
    print(f"run {rec.id} ({rec.name}), {args.split} split: {summary['n']} images, {summary['error_count']} errors")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        info = build_report(args.workspace, rec.id, args.split, Path(tmp) / "report.html")
        results["static export (MB)"] = info["bytes"] / 1e6
        print(f"report built in {time.perf_counter() - start:.1f} s: {info['bytes'] / 1e6:.2f} MB, saliency maps for "
              f"{info['saliency_errors']} of {info['errors']} errors, activations for {info['activation_images']} images")

        server, thread, base = start_server(args.workspace)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                url = f"{base}#/r/{rec.id}/{args.split}/overview"
                first_paint(browser, url)  # warm the server's bundle and sprite caches; not counted
                paints = [first_paint(browser, url) for _ in range(args.repeat)]
                results["first meaningful paint (ms)"] = statistics.median(p[0] for p in paints)
                charts = statistics.median(p[1] for p in paints)

                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(f"{base}#/r/{rec.id}/{args.split}/confusion")
                page.wait_for_selector("td.cm-cell")
                hovers = hover_times(page, summary["confusion"]["counts"], args.repeat)
                results["confusion hover (ms)"] = max(hovers.values())
                page.goto(f"{base}#/r/{rec.id}/{args.split}/predictions")
                page.wait_for_selector(".vrow")
                median, worst = filter_times(page, args.repeat)
                results["predictions filter (ms)"] = worst
                page.goto(f"{base}#/r/{rec.id}/{args.split}/try")
                page.wait_for_selector('[data-testid="try-canvas"]')
                try_answer, search_first, search_later = try_times(page, args.repeat)
                results["try an image: stroke → answer (ms)"] = try_answer

                report_page = browser.new_page(viewport={"width": 1440, "height": 900})
                report_page.goto((Path(tmp) / "report.html").as_uri())
                report_paint, report_charts = paint_times(report_page)
                if args.screenshots:
                    for path in screenshots(browser, base, rec.id, args.split, args.screenshots):
                        print(f"screenshot {path} ({path.stat().st_size / 1e3:.0f} kB)")
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    print(f"first meaningful paint (served, cold cache): median {results['first meaningful paint (ms)']:.0f} ms of "
          f"{', '.join(f'{v[0]:.0f}' for v in paints)}; training charts painted: median {charts:.0f} ms")
    print(f"report from file://: overview painted {report_paint:.0f} ms, charts {report_charts:.0f} ms")
    for cell, value in hovers.items():
        print(f"hover {cell}: {value:.1f} ms")
    print(f"filter/sort: median {median:.1f} ms, worst {worst:.1f} ms")
    print(f"try an image: a stroke answered and painted in {try_answer:.0f} ms (median of {args.repeat}); nearest "
          f"training images {search_first / 1000:.1f} s the first time (their features), then {search_later:.0f} ms")
    print()
    failed = False
    for name, target in TARGETS.items():
        value = results[name]
        ok = value <= target
        failed |= not ok
        print(f"{name:32s} {value:10.2f}   target ≤ {target:<6} {'ok' if ok else 'OVER'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
