"""`deepdive report`: one run's deep dive as a single self-contained HTML file.

The page is the served front end with everything inlined: scripts, styles and plotly.js as <script>/<style>
text, the bundle as a <script type="application/json"> block, thumbnails as sprite-sheet data: URIs, and the
saliency and activation images the analysis precomputed (errors, class maps, the activation focus set) and the
focus set's nearest training images as PNG data: URIs. A Content-Security-Policy in the page forbids every
network request.
"""
from pathlib import Path

import numpy as np

from deepdive.atomic import atomic_write_text
from deepdive.web import page
from deepdive.web.bundle import data_uri
from deepdive.web.maps import NotFound, RunMaps

SAL_SIZE = 56                         # px of the inlined saliency overlays (shown at 96-140 px, pixelated)
SALIENCY_BUDGET = 3 * 1024 * 1024     # bytes of inlined per-error saliency maps (most confident errors first)
MAX_BYTES = 14_500_000                # the whole file stays under this (15 MB target, some margin)
ACTIVATION_BUDGET = 4 * 1024 * 1024   # at most this many bytes of inlined activation images
ACTIVATION_FLOOR = 512 * 1024         # ...and at least this many, past MAX_BYTES if need be: the view is never empty
NEIGHBOUR_BUDGET = 1024 * 1024        # bytes of inlined nearest training images (~40 KB per 100 MNIST images)
INFLUENCE_BUDGET = 1024 * 1024        # bytes of inlined training images behind the errors (16 per error)


def saliency_assets(maps: RunMaps, errors_rows: list[int], errors_count: dict) -> dict:
    """{errors: {method: [[pred uri, true uri] or None per error row]}, class_mean/class_rep/class_random: {method:
    [uri per class]}} (class_random: the sanity check's maps with the weights shuffled, where the analysis drew them).

    Only maps the analysis stored go in (a method covers errors_rows[:errors_count[method]]); an error's maps
    of every method go in together, and errors that do not fit SALIENCY_BUDGET get None (the page says so)."""
    conf = maps.res.examples["confidence"].to_numpy()
    out = {"errors": {m: [None] * len(errors_rows) for m in maps.methods}, "class_mean": {}, "class_rep": {},
           "class_random": {}}
    used = 0
    for k in sorted(range(len(errors_rows)), key=lambda k: -conf[errors_rows[k]]):
        r = errors_rows[k]
        pairs = {m: [data_uri(maps.saliency_png(m, r, int(maps.pred[r]), SAL_SIZE)),
                     data_uri(maps.saliency_png(m, r, int(maps.true[r]), SAL_SIZE))]
                 for m in maps.methods if k < errors_count[m]}
        size = sum(len(u) for pair in pairs.values() for u in pair)
        if used + size > SALIENCY_BUDGET:
            break
        used += size
        for m, pair in pairs.items():
            out["errors"][m][k] = pair
    for method in maps.methods:
        kinds = ("mean", "rep", "random") if maps.res.has(f"saliency_random:{method}") else ("mean", "rep")
        for kind in kinds:
            out["class_" + kind][method] = [data_uri(maps.class_png(method, c, kind, SAL_SIZE))
                                            for c in range(maps.num_classes)]
    return out


def focus_assets(maps: RunMaps, fetch, parts, budget: int, rows=None) -> dict:
    """{row: fetch(row)} for `rows` (default: the precomputed focus set, errors first, then class representatives
    and top label issues) until the inlined images would pass `budget` bytes (the first always goes in); each
    result's list(s) `parts` (a key or a tuple of keys) carry the images."""
    data, used = {}, 0
    keys = (parts,) if isinstance(parts, str) else parts
    for row in np.asarray(maps.res.focus_indices if rows is None else rows).tolist():
        result = fetch(int(row))
        size = sum(len(part["image"]) for key in keys for part in result[key])
        if data and used + size > budget:
            break
        data[str(row)], used = result, used + size
    return data


def build_report(workspace, run_ref, split="test", out="report.html") -> dict:
    """Write the report of run `run_ref`'s analysed `split` to `out`; returns {path, bytes, run_id, ...counts}.

    Activations fill what is left of MAX_BYTES once everything else is in (up to ACTIVATION_BUDGET, and at least
    ACTIVATION_FLOOR where the rest alone passes MAX_BYTES: many classes, large pictures)."""
    from deepdive.analysis.results import AnalysisResult
    from deepdive.analysis.reviews import reviews_by_row, training_reviews
    from deepdive.analysis.tags import tags_by_row, training_tags
    from deepdive.store import Store

    with Store.open(workspace, create=False) as store:
        rec = store.get_run(run_ref)
        maps = RunMaps(rec, AnalysisResult.load(rec.run_dir, split))
        sheets = [data_uri(maps.sprite(k)) for k in range(maps.sheet_count)]
        b = maps.bundle(store, sheets=sheets, activation_rows=[], activation_mode="precomputed")
        # the reviews as they stand when the report is written, shown read-only
        b["reviews"] = {str(r): v for r, v in reviews_by_row(store, rec, split, maps.res.examples).items()}
        b["tags"] = {str(r): t for r, t in tags_by_row(store, rec, split, maps.res.examples).items()}   # likewise
        if b["dynamics"].get("available"):    # and those of the training images the Training dynamics view lists
            shown = set(b["dynamics"]["pictures"]) | set(b["influence"].get("pictures", {}))   # or the Overview
            b["dynamics"]["reviews"] = {str(i): v for i, v in training_reviews(store, rec).items() if str(i) in shown}
            b["dynamics"]["tags"] = {str(i): t for i, t in training_tags(store, rec).items()
                                     if str(i) in b["dynamics"]["pictures"]}
    if maps.methods:
        b["saliency"].update(saliency_assets(maps, b["saliency"]["errors_rows"], b["saliency"]["errors_count"]))
    b["neighbours"] = {"data": {}}
    if maps.res.has("neighbours"):
        try:
            b["neighbours"]["data"] = focus_assets(maps, maps.neighbours, "items", NEIGHBOUR_BUDGET)
        except NotFound as e:   # the training images cannot be loaded here: the report says so instead
            b["neighbours"]["note"] = str(e)
    if b["influence"].get("available"):    # the errors' training images, most confident errors first
        try:
            b["influence"]["data"] = focus_assets(maps, maps.influence, ("against", "for"), INFLUENCE_BUDGET,
                                                  rows=maps.res.influence()["rows"])
        except NotFound as e:
            b["influence"]["note"] = str(e)
    config = {"mode": "report", "run_id": rec.id, "split": split}
    title = f"{rec.name} · deepdive report"

    def render():
        return page.render("report", title, {"dd-config": config, "dd-bundle": b}, inline=True)

    b["activations"]["data"] = {}
    budget = max(ACTIVATION_FLOOR, min(ACTIVATION_BUDGET, MAX_BYTES - len(render().encode("utf-8"))))
    acts = focus_assets(maps, lambda row: maps.activations(row, on_demand=False), "layers", budget) \
        if maps.res.has("activations") else {}
    b["activations"].update(rows=[int(r) for r in acts], data=acts)
    out = Path(out)
    atomic_write_text(out, render())
    saliency_errors = sum(pair is not None for pair in b["saliency"].get("errors", {}).get(maps.methods[0], [])) \
        if maps.methods else 0
    return {"path": str(out), "bytes": out.stat().st_size, "run_id": rec.id, "activation_images": len(acts),
            "neighbour_rows": len(b["neighbours"]["data"]), "influence_rows": len(b["influence"].get("data", {})),
            "saliency_errors": saliency_errors, "errors": len(b["saliency"]["errors_rows"])}
