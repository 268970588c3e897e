"""The run "bundle": everything the front end shows for one analysed split, as one JSON-able dict.

Both modes build it here. Served mode points its image fields at /api URLs and computes saliency and
activations on demand; report mode fills them with data: URIs (see report.py). Shape:

    {version, generated_at, split, splits, class_names,
     run: {id, name, dataset, status, model_arch, num_params, ...},   epochs: [store.epochs rows],
     steps: {name: {step, value, every}} (store.steps: what was logged per step, at most STEP_POINTS a name),
     histograms: [histogram_series: one per (parameter, kind), its histogram per epoch],
     summary: summary.json,
     examples: {n, columns: {idx, true, pred, confidence, margin, loss, correct, entropy, label_issue,
                             label_quality, suggested_label, category (codes), emb_x, emb_y,
                             neighbours (codes of analysis.neighbours.READINGS, -1: none), neighbour_agreement,
                             calibrated_confidence, conf_bin, cal_bin (reliability bins, -1: none),
                             knn_distance, atypicality, atypical (0/1; analysis.atypical),
                             img_<measure> (each picture's measures, analysis.slices; absent before them)},
                probs: [C lists], prob_decimals (their rounding), categories: [code -> name]},
     label_issues: [{row, rank}] most suspicious first,   advice, verification,
     advice_pictures: [data URI] (the perturbed images the advice's examples index),
     images: {n, height, width, channels, cols, per_sheet, sheet_sizes, sheets: [url]},
     saliency: {methods, errors_rows, errors_count: {method: n (its maps cover errors_rows[:n])},
                class_rep_rows, legend (data URI), notes: {method: reading note, e.g. where Grad-CAM sits}},
     activations: {mode, rows, layers},
     dynamics (added by RunMaps.bundle): {summary.dynamics' entries, map: {idx, label, confidence, variability,
                correctness: packed()}, flagged / ambiguous / hard: [dynamics_item], pictures: {idx: data URI},
                reviews: {idx: review}, tags: {idx: [tag]} (a report's)} or {available: false, reason},
     duplicates (added by RunMaps.bundle): {pictures: {idx: data URI}} of the first DUPLICATE_PICTURES training
                twins summary.duplicates.train.listed names},
     influence (added by RunMaps.bundle): {available, rows (the errors weighed), against ([[training idx] x K] per
                row), pictures ({idx: data URI} of summary.influence.behind), data ({row: RunMaps.influence(row)},
                a report's)} or {available: false, reason}
     robustness (added by RunMaps.bundle): {available, rows (the pictures tried: right answers, then errors),
                mending, size / variant / into ({family: [per row]}), pictures ({row: [data URI per family]}, the
                most easily fooled and the first errors)} or {available: false, reason}
"""
import base64
import io
from datetime import datetime, timezone

import numpy as np
import pandas as pd

SPRITE_COLS = 100          # thumbnails per sprite-sheet row
SPRITE_PER_SHEET = 10_000  # thumbnails per sheet (MNIST test = one 2800×2800 PNG)
CATEGORY_ORDER = ("correct", "model-fixable", "ambiguous", "likely label error")

# Rounding of the float columns: enough for display and sorting, and it keeps the JSON small. The trust scores
# (confidence, margin, entropy) keep 6 decimals: the predictions table sorts by them as the analysis ranks them, and
# coarser values would tie rows that the Confidence view's counts tell apart.
_DECIMALS = {"confidence": 6, "margin": 6, "loss": 4, "entropy": 6, "label_quality": 4, "emb_x": 3, "emb_y": 3,
             "neighbour_agreement": 4, "calibrated_confidence": 5, "knn_distance": 6, "atypicality": 4}
PROB_DECIMALS = 4   # the class probabilities' (in the bundle as prob_decimals: the views filter on these values)
DYNAMICS_LISTS = ("flagged", "ambiguous", "hard")   # the training images the Training dynamics view lists
STEP_POINTS = 2000   # points per step metric the charts get: longer series are averaged over runs of steps
DYNAMICS_LISTED = 24   # images in each list but the flagged one (analysis.dynamics.FLAGGED)
DUPLICATE_PICTURES = 48   # training twins of listed near-duplicates whose pictures the bundle carries


def histogram_series(rows) -> list[dict]:
    """Store.histograms' rows as one series per (parameter, kind), in their order: {name, kind, epoch: [...], lo,
    hi, mean, std: [...] (6 significant digits), counts: [[...] per epoch]}."""
    out, at = [], {}
    for r in rows:
        key = (r["name"], r["kind"])
        if key not in at:
            at[key] = {"name": r["name"], "kind": r["kind"], "epoch": [], "lo": [], "hi": [], "mean": [], "std": [],
                       "counts": []}
            out.append(at[key])
        series = at[key]
        series["epoch"].append(r["epoch"])
        for k in ("lo", "hi", "mean", "std"):
            series[k].append(float(f"{r[k]:.6g}"))
        series["counts"].append(r["counts"])
    return out


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 (H, W) grey or (H, W, 3|4) colour array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _as_display(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 → (N, H, W) grey or (N, H, W, 3) colour."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.asarray(images, dtype=np.float32) * (255.0 if images.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images


def sprite_layout(n: int, height: int, width: int) -> dict:
    """Where thumbnail i lies: sheet i // per_sheet, cell i % per_sheet in a grid `cols` wide."""
    sheets = max(1, -(-n // SPRITE_PER_SHEET))
    sizes = []
    for s in range(sheets):
        count = min(SPRITE_PER_SHEET, n - s * SPRITE_PER_SHEET)
        rows = max(1, -(-count // SPRITE_COLS))
        sizes.append([SPRITE_COLS * width, rows * height])
    return {"n": n, "height": height, "width": width, "cols": SPRITE_COLS,
            "per_sheet": SPRITE_PER_SHEET, "sheet_sizes": sizes}


def sprite_sheet(images: np.ndarray, sheet: int) -> bytes:
    """PNG of sprite sheet `sheet`: thumbnails laid out row-major, SPRITE_COLS per row, at native resolution."""
    images = _as_display(images)
    n, h, w = images.shape[:3]
    start = sheet * SPRITE_PER_SHEET
    if not 0 <= start < max(n, 1):
        raise IndexError(f"sprite sheet {sheet} out of range")
    chunk = images[start:start + SPRITE_PER_SHEET]
    rows = -(-len(chunk) // SPRITE_COLS)
    canvas = np.zeros((rows * SPRITE_COLS, *chunk.shape[1:]), dtype=np.uint8)
    canvas[:len(chunk)] = chunk
    # (rows, cols, h, w[, c]) → (rows*h, cols*w[, c])
    grid = canvas.reshape(rows, SPRITE_COLS, h, w, *chunk.shape[3:]).swapaxes(1, 2)
    return png_bytes(grid.reshape(rows * h, SPRITE_COLS * w, *chunk.shape[3:]))


def _column(values, name):
    a = np.asarray(values)
    if a.dtype == bool:
        return a.astype(np.int8).tolist()
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64).tolist()
    a = a.astype(np.float64)
    rounded = np.round(a, _DECIMALS.get(name, 4))
    return [None if not np.isfinite(v) else v for v in rounded.tolist()]


def examples_block(frame, num_classes: int) -> dict:
    """The examples frame as columns (row order = images order); category dictionary-encoded."""
    n = len(frame)
    # A column an older or partial analysis lacks: no label issue, the given label as suggestion, else unknown.
    missing = {"label_issue": [0] * n, "suggested_label": frame["true"].tolist()}
    cols = {name: _column(frame[name].to_numpy(), name) if name in frame else missing.get(name, [None] * n)
            for name in ("idx", "true", "pred", "confidence", "margin", "loss", "correct", "entropy", "label_issue",
                         "label_quality", "suggested_label", "emb_x", "emb_y", "neighbour_agreement",
                         "calibrated_confidence", "knn_distance", "atypicality")}
    # each picture's measures (analysis.slices), as stored: already rounded, so the page's tails and tenths cut
    # where the analysis cut
    from deepdive.analysis.slices import COLUMNS, PROPERTIES

    for column, prop in zip(COLUMNS, PROPERTIES):
        if column in frame:
            values = frame[column].to_numpy(np.float64)
            cols[column] = (values.astype(np.int64).tolist() if prop[3] == 0 and np.isfinite(values).all()
                            else [None if not np.isfinite(v) else v for v in values.tolist()])
    # beyond the training images' outlier fence (analysis.atypical): 1, else 0 (also without the stage)
    cols["atypical"] = frame["atypical"].astype(int).tolist() if "atypical" in frame else [0] * n
    raw = frame["category"].astype(str).to_numpy() if "category" in frame else \
        np.where(frame["correct"].to_numpy(), "correct", "model-fixable")
    categories = [c for c in CATEGORY_ORDER if c in set(raw)] + sorted(set(raw) - set(CATEGORY_ORDER))
    code = {c: i for i, c in enumerate(categories)}
    cols["category"] = [code[c] for c in raw]
    # what each image's nearest training images back (analysis.neighbours.READINGS order), -1 without them
    from deepdive.analysis.neighbours import READINGS

    nb_code = {name: i for i, name in enumerate(READINGS)}
    cols["neighbours"] = ([nb_code.get(v, -1) for v in frame["neighbours"].astype(str)] if "neighbours" in frame
                          else [-1] * n)
    # each row's reliability bin (analysis.confidence), raw and after the temperature (-1: none), from the exact
    # float32 values: bins of the rounded ones would move rows that sit on a bin edge
    from deepdive.analysis.confidence import bin_of

    cols["conf_bin"] = bin_of(frame["confidence"].to_numpy()).tolist()
    cal = frame["calibrated_confidence"].to_numpy() if "calibrated_confidence" in frame else np.full(n, np.nan)
    cols["cal_bin"] = np.where(np.isfinite(cal), bin_of(np.nan_to_num(cal)), -1).tolist()
    probs = [np.round(frame[f"p{c}"].to_numpy(dtype=np.float64), PROB_DECIMALS).tolist() for c in range(num_classes)]
    return {"n": n, "columns": cols, "probs": probs, "prob_decimals": PROB_DECIMALS, "categories": categories}


def run_block(record) -> dict:
    keys = ("id", "name", "dataset", "status", "model_arch", "num_params", "test_accuracy", "train_seconds",
            "device", "created_at", "started_at", "finished_at", "code_version", "error", "notes")
    return {**{k: getattr(record, k) for k in keys}, "config": record.config, "data_source": record.data_source}


def label_issue_rows(res) -> list[dict]:
    """[{row, rank}] of the flagged examples, most suspicious first."""
    if not res.has("label_issues"):
        return []
    table = res.label_issues
    return [{"row": int(r), "rank": int(k)} for r, k in zip(table["row"], table["rank"])]


def method_notes(res) -> dict:
    """Per saliency method, what a reader must know to read its maps right (shown under the colour legend): where
    Grad-CAM's map sits on an unpadded net, and which maps the sanity check found alike with shuffled weights."""
    saliency = res.summary.get("saliency") or {}
    notes = {}
    gradcam = (saliency.get("settings") or {}).get("gradcam") or {}
    margin = int(gradcam.get("margin") or 0)
    if margin:
        h, w = res.images.shape[1:3]
        notes["gradcam"] = (f"Grad-CAM's layer ({gradcam.get('layer', 'the last conv block')}) has its cells centred "
                            f"on the central {h - 2 * margin}×{w - 2 * margin} pixels only (unpadded convolutions), "
                            f"so the map covers those; the {margin}-pixel border is left blank, which does not mean "
                            "no effect.")
    sanity = saliency.get("sanity") or {}
    alike_at = sanity.get("alike_at")   # absent from analyses made between the check and its reading line
    for method, rho in (sanity.get("rank_correlation") or {}).items():
        if rho is not None and alike_at is not None and rho >= alike_at:
            inside = (sanity.get("rank_correlation_nonzero") or {}).get(method)
            where = f", {inside:.2f} where the input is not 0" if inside is not None else ""
            warning = (f"Sanity check: with the model's weights shuffled these maps stay alike (ρ {rho:.2f}{where}), "
                       "so much of what they draw is the image, not what the model learnt.")
            notes[method] = f"{notes[method]} {warning}" if method in notes else warning
    return notes


def build(store, record, res, *, sheets: list[str], legend: str, activation_rows: list[int],
          activation_mode: str) -> dict:
    """The bundle of `record`'s analysed split `res`. Image fields come from the caller (URLs or data URIs)."""
    from deepdive.analysis.results import AnalysisResult

    frame = res.examples
    images = res.images
    methods = res.saliency_methods
    # Each method covers the first n of the same error rows (the costly ones fewer): the longest list is all.
    error_rows = {m: np.asarray(res.saliency(m)["errors_index"]).tolist() for m in methods}
    all_errors = max(error_rows.values(), key=len, default=[])
    rep_rows = np.asarray(res.saliency(methods[0])["class_rep_index"]).tolist() if methods else []
    layers = res.activations()["layers"] if res.has("activations") else []
    return {
        "version": 1,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": res.split,
        "splits": AnalysisResult.splits(record.run_dir),
        "class_names": res.class_names,
        "run": run_block(record),
        "epochs": store.epochs(record.id),
        "steps": store.steps(record.id, max_points=STEP_POINTS),
        "histograms": histogram_series(store.histograms(record.id)),
        "summary": res.summary,
        "examples": examples_block(frame, res.num_classes),
        "label_issues": label_issue_rows(res),
        "advice": res.advice if res.has("advice") else None,
        # what each suggestion's probes do to the images they break, as the model saw them (small: a few dozen)
        "advice_pictures": [data_uri(png_bytes(_as_display(p[None])[0])) for p in res.advice_pictures]
                           if res.has("advice_images") else [],
        "verification": res.verification,
        "images": {**sprite_layout(len(images), images.shape[1], images.shape[2]),
                   "channels": 1 if images.ndim == 3 else images.shape[3], "sheets": sheets},
        "saliency": {"methods": methods, "errors_rows": all_errors,
                     "errors_count": {m: len(rows) for m, rows in error_rows.items()},
                     "class_rep_rows": rep_rows, "legend": legend, "notes": method_notes(res)},
        "activations": {"mode": activation_mode, "rows": activation_rows, "layers": layers},
        "channels": channels_block(res),
    }


def packed(values, dtype, scale=1, delta=False) -> dict:
    """A numeric column as little-endian integers in base64, for DD.unpack: each value is stored / scale (a running
    sum of them with delta). The data map's 55,000 points take ~0.5 MB so, against ~1.4 MB as JSON numbers. A
    column that does not fit `dtype` goes as int32 (stored) or float64 (scale ignored)."""
    v = np.asarray(values, np.float64)
    if delta:
        v = np.diff(v, prepend=0.0)
    q = np.rint(v * scale)
    for kind in (np.dtype(dtype), np.dtype(np.int32)):
        info = np.iinfo(kind)
        if not len(q) or (q.min() >= info.min and q.max() <= info.max):
            data = q.astype(kind.newbyteorder("<"))
            break
    else:
        data, scale = v.astype("<f8"), 1
    return {"dtype": data.dtype.name, "scale": scale, "delta": delta,
            "data": base64.b64encode(data.tobytes()).decode("ascii")}


def dynamics_item(row, raw, pos) -> dict:
    """One training image's dynamics for the page: its row of the per-image table and its per-epoch answers
    (p_true, margin, pred: None in an epoch that did not train on it)."""
    seen = raw["pred"][:, pos] >= 0

    def per_epoch(values, decimals=None):
        return [None if not s else (int(v) if decimals is None else round(float(v), decimals))
                for v, s in zip(values, seen)]

    learned = float(row["learned"])
    return {"idx": int(row["idx"]), "label": int(row["label"]), "given": int(row["given"]),
            "leaning": int(row["leaning"]), "aum": round(float(row["aum"]), 3),
            "confidence": round(float(row["confidence"]), 4), "variability": round(float(row["variability"]), 4),
            "correctness": round(float(row["correctness"]), 4), "forgets": int(row["forgets"]),
            "learned": None if np.isnan(learned) else int(learned), "epochs": int(row["epochs"]),
            "region": str(row["region"]),
            "trajectory": {"epoch": raw["epoch"].tolist(), "member": raw["member"].tolist(),
                           "p_true": per_epoch(raw["p_true"][:, pos], 3),
                           "margin": per_epoch(raw["margin"][:, pos], 2), "pred": per_epoch(raw["pred"][:, pos])}}


def dynamics_block(info: dict, table: pd.DataFrame, raw: dict) -> dict:
    """The run's training dynamics (deepdive.analysis.dynamics) from its summary entry `info`, its per-image table
    and the per-epoch arrays behind it (RunMaps.dynamics_data): every training image as a point of the data map
    (packed columns: idx, label, confidence, variability, correctness), and the images worth a look with their
    per-epoch answers: the labels in doubt (negative AUM), the most ambiguous, the hardest."""
    from deepdive.analysis import dynamics

    flagged = dynamics.flagged(table)
    rest = table[~table["idx"].isin(flagged["idx"])]
    lists = {"flagged": flagged,
             "ambiguous": rest[rest["region"] == "ambiguous"].sort_values("variability", ascending=False,
                                                                           kind="stable").head(DYNAMICS_LISTED),
             "hard": rest[rest["region"] == "hard"].sort_values("confidence", kind="stable").head(DYNAMICS_LISTED)}
    # a row's label in the table (a RangeIndex, as read) is its column in raw: load_for checked their idx agree
    return {**{k: v for k, v in info.items() if k != "flagged"},
            "map": {"idx": packed(table["idx"], np.uint16, delta=True), "label": packed(table["label"], np.uint8),
                    # a probability to 1/65535; a standard deviation of values in [0, 1] is at most 0.5
                    "confidence": packed(table["confidence"], np.uint16, 65535),
                    "variability": packed(table["variability"], np.uint8, 510),
                    "correctness": packed(table["correctness"], np.uint8, 255)},
            **{key: [dynamics_item(row, raw, int(pos)) for pos, row in frame.iterrows()]
               for key, frame in lists.items()}}


def channels_block(res) -> dict:
    """The last feature map's channels (deepdive.analysis.channels): each one's top rows and the class it fires for
    most, and for each stored error the channels that weigh most in its answer."""
    from deepdive.analysis.channels import strongest

    info = (res.summary.get("channels") or {})
    if not res.has("channels"):
        return {"available": False, "reason": info.get("reason") or "this analysis predates the channels (re-run: "
                                                                    "deepdive analyze)"}
    ch = res.channels()
    share = np.asarray(ch["class_share"])
    true = res.examples["true"].to_numpy()
    return {"available": True, "layer": info.get("layer"), "top_rows": np.asarray(ch["top_rows"]).tolist(),
            "top_class": share.argmax(1).tolist(), "share": np.round(share.max(1), 4).tolist(),
            "errors": {str(int(r)): {"other": int(true[r]), **strongest(c)}
                       for r, c in zip(ch["errors_index"], ch["errors"])}}
