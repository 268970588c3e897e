"""Slices: which kinds of picture the model gets wrong, by what can be measured on the pictures themselves.

Every analysed image is measured on its picture as shown (PROPERTIES: brightness, contrast, ink, thickness, height,
width, slant, off-centre, pieces; colour pictures as their luminance). A measure is read against the image's own
class, as its percentile among the images of its label, because the classes differ by themselves (a 1 is narrow,
an 8 inky) and errors gather in some classes: "the thickest 10% of the 9s", not "thick images", which would be the
8s. Two readings:

- per measure, whether errors sit higher or lower in their class than right answers (AUROC of the within-class
  percentile, errors against the rest, with the Mann-Whitney p), or at its ends either way (AUROC of the distance
  from the class's median), and the error rate in each tenth of every class;
- the slices: every tail of every measure (its lowest or highest 5, 10 or 25%) within one class, and within every
  class at once, tested for more errors than the rest of its class(es) (one-sided Fisher exact test, the
  hypergeometric tail), the p-values corrected for the number of slices tried (Benjamini-Hochberg, scipy's
  false_discovery_control). This is SliceFinder's question (Chung et al. 2019) asked of interpretable properties
  rather than of metadata the data does not carry. A slice below FDR 5% has more errors than chance explains; the
  others are listed by p as leads, labelled so.

    slices_stage(images, frame, class_names) -> (summary entry, slices table); frame gains the img_<key> columns

Measured (2026-12-06, Zen 5 host, `deepdive analyze RUN`): see the README's Slices entry.
"""
import numpy as np
import pandas as pd

QUANTILES = (0.05, 0.1, 0.25)   # the tails tried: each class's lowest / highest 5, 10 and 25%
FDR = 0.05                      # Benjamini-Hochberg level a slice must pass to count as found
LISTED = 30                     # slices kept in the summary (the dashboard's table); every one: slices.parquet
MIN_ERRORS = 2                  # a slice listed as a lead has at least this many errors
BINS = 10                       # each class's tenths, for the charts
CHUNK_PIXELS = 1 << 22          # pixels measured at once (5,350 MNIST pictures, 83 of 224 x 224): bounded memory
FILE = "slices.parquet"
ALL = -1                        # the group of a slice cut from every class at once

# key, label, unit, decimals, the words for its low and high tail, what it measures
PROPERTIES = (
    ("brightness", "brightness", "", 3, "darkest", "brightest", "the mean pixel, 0 black to 1 white"),
    ("contrast", "contrast", "", 3, "flattest", "most contrasted", "the standard deviation of the pixels"),
    ("ink", "ink", "", 3, "with least ink", "with most ink", "the share of pixels at half the brightest one or more"),
    ("thickness", "thickness", "px", 2, "thinnest", "thickest",
     "the width of the strip with the ink's area and outline (pixel edges): a stroke's width, a solid shape's breadth"),
    ("height", "height", "px", 0, "shortest", "tallest", "rows from the ink's top to its bottom"),
    ("width", "width", "px", 0, "narrowest", "widest", "columns from the ink's left to its right"),
    ("slant", "slant", "°", 1, "leaning most left", "leaning most right",
     "the lean of the ink's principal axis from the vertical (second moments), > 0 leaning right like italics"),
    ("offset", "off-centre", "px", 2, "most centred", "furthest off-centre",
     "the distance of the ink's centre of mass from the picture's centre"),
    ("pieces", "pieces", "", 0, "in fewest pieces", "in most pieces", "the ink's separate parts (8-connected)"),
)
KEYS = tuple(p[0] for p in PROPERTIES)
# The augmentation (a key of an advice suggestion's overrides["augment"], deepdive.analysis.advice) that trains on
# more pictures like a slice's: thicker strokes for the thickest or inkiest, thinner for the thinnest, slants for the
# most slanted, scaling for the widest, narrowest, tallest or shortest, shifts for the furthest off-centre. Tone and
# pieces have none among the advice's probes.
AUGMENT_FOR = {("thickness", "high"): "thicken", ("thickness", "low"): "thin", ("ink", "high"): "thicken",
               ("ink", "low"): "thin", ("slant", "low"): "shear", ("slant", "high"): "shear",
               ("width", "low"): "scale", ("width", "high"): "scale", ("height", "low"): "scale",
               ("height", "high"): "scale", ("offset", "high"): "shift"}
COLUMNS = tuple(f"img_{k}" for k in KEYS)
SLICE_COLUMNS = ["group", "group_name", "property", "side", "tail", "share", "threshold", "images", "errors", "rate",
                 "rest_images", "rest_errors", "rest_rate", "lift", "p", "q", "description"]


def measure(images: np.ndarray) -> tuple[dict, bool]:
    """({key: float64 (N,) rounded to its decimals, NaN where a picture has no ink}, inverted): the PROPERTIES of
    uint8 pictures (N, H, W) or (N, H, W, C). inverted: the pictures are dark on light (their median pixel is over
    half), so the shape measures read the darkness as the ink."""
    images = np.asarray(images)
    n = len(images)
    chunk = max(1, CHUNK_PIXELS // max(1, images.shape[1] * images.shape[2])) if n else 1
    inverted = bool(n and np.median(_grey(images[:chunk])) > 0.5)
    parts = [_measure_chunk(_grey(images[s:s + chunk]), inverted) for s in range(0, n, chunk)]
    out = {}
    for key, _, _, decimals, *_ in PROPERTIES:
        values = np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
        out[key] = np.round(values.astype(np.float64), decimals)
    return out, inverted


def _grey(images) -> np.ndarray:
    g = np.asarray(images, np.float32) / 255.0
    if g.ndim == 4:    # colour: luminance (ITU-R BT.601), a single channel as itself
        g = g[..., 0] if g.shape[-1] == 1 else g[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return g


def _measure_chunk(g: np.ndarray, inverted: bool) -> dict:
    from scipy import ndimage

    n, h, w = g.shape
    out = {"brightness": g.mean((1, 2)), "contrast": g.std((1, 2))}
    s = 1.0 - g if inverted else g
    peak = s.max((1, 2), keepdims=True)
    mask = (s >= 0.5 * peak) & (peak > 0)
    area = mask.sum((1, 2)).astype(np.float64)
    has = area > 0
    out["ink"] = area / (h * w)
    # the outline: ink-to-background edges, the picture's border counting as background
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    edges = (np.count_nonzero(padded[:, 1:, :] != padded[:, :-1, :], axis=(1, 2))
             + np.count_nonzero(padded[:, :, 1:] != padded[:, :, :-1], axis=(1, 2)))
    # the width w of the strip with the ink's area A = w L and outline P = 2 (w + L): the smaller root of
    # w^2 - (P/2) w + A; a blob rounder than any strip (no real root) counts as a square, P/4
    half = edges / 2.0
    out["thickness"] = np.where(has, (half - np.sqrt(np.maximum(half * half - 4.0 * area, 0.0))) / 2.0, np.nan)
    rows, cols = mask.any(2), mask.any(1)
    out["height"] = np.where(has, h - rows[:, ::-1].argmax(1) - rows.argmax(1), 0).astype(np.float64)
    out["width"] = np.where(has, w - cols[:, ::-1].argmax(1) - cols.argmax(1), 0).astype(np.float64)
    # moments of the ink's intensity: centre of mass and lean (x moves by mu11 / mu02 per row; rows grow downward,
    # so a top leaning right has mu11 < 0)
    weight = np.where(mask, s, 0.0).astype(np.float64)
    total = weight.sum((1, 2))
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (weight.sum(2) * ys).sum(1) / total
        cx = (weight.sum(1) * xs).sum(1) / total
        dy, dx = ys[None, :, None] - cy[:, None, None], xs[None, None, :] - cx[:, None, None]
        mu11 = (weight * dy * dx).sum((1, 2))
        mu02 = (weight * dy * dy).sum((1, 2))
        out["slant"] = np.where(has, np.degrees(np.arctan2(-mu11, mu02)), np.nan)
        out["offset"] = np.where(has, np.hypot(cx - (w - 1) / 2, cy - (h - 1) / 2), np.nan)
    # connected parts, all pictures at once: the structure links pixels within a picture, never across two
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    labels, _ = ndimage.label(mask, structure=structure)
    top = labels.reshape(n, -1).max(1)     # labels run in scan order, picture after picture
    before = np.concatenate([[0], np.maximum.accumulate(top)[:-1]])
    out["pieces"] = np.where(top > 0, top - before, 0).astype(np.float64)
    return out


def _within_class(values: np.ndarray, labels: np.ndarray, classes: int):
    """(below, at_or_below, at_or_above) shares of each row's class, ties counted; NaN for NaN values."""
    below, le, ge = (np.full(len(values), np.nan) for _ in range(3))
    for c in range(classes):
        rows = np.flatnonzero((labels == c) & np.isfinite(values))
        if not len(rows):
            continue
        v = values[rows]
        ordered = np.sort(v)
        left, right = np.searchsorted(ordered, v, "left"), np.searchsorted(ordered, v, "right")
        below[rows], le[rows], ge[rows] = left / len(v), right / len(v), (len(v) - left) / len(v)
    return below, le, ge


def _auroc(score, wrong) -> tuple[float | None, float | None]:
    """(AUROC of score for wrong against right, two-sided Mann-Whitney p); None where one side is empty."""
    from scipy.stats import mannwhitneyu

    ok = np.isfinite(score)
    a, b = score[ok & wrong], score[ok & ~wrong]
    if not len(a) or not len(b):
        return None, None
    test = mannwhitneyu(a, b, alternative="two-sided")
    return float(test.statistic / (len(a) * len(b))), float(test.pvalue)


def slices_stage(images, frame, class_names) -> tuple[dict, pd.DataFrame]:
    """Measure every picture, add frame["img_<key>"] and return (summary entry, every slice tried as a table of
    SLICE_COLUMNS, lowest p first). See the module docstring."""
    from scipy.stats import false_discovery_control, hypergeom

    names = list(class_names)
    k_classes = len(names)
    values, inverted = measure(images)
    for key, col in zip(KEYS, COLUMNS):
        frame[col] = values[key]
    labels = frame["true"].to_numpy()
    wrong = ~frame["correct"].to_numpy(bool)
    n = len(frame)
    properties, candidates = [], []
    for key, label, unit, decimals, low_word, high_word, about in PROPERTIES:
        v = values[key]
        below, le, ge = _within_class(v, labels, k_classes)
        mid = (below + le) / 2           # the row's percentile in its class, ties at their middle
        auroc, p = _auroc(mid, wrong)
        extreme, p_extreme = _auroc(np.abs(mid - 0.5), wrong)
        properties.append({"key": key, "label": label, "unit": unit, "decimals": decimals, "about": about,
                           "low": low_word, "high": high_word, "auroc": auroc, "p": p,
                           "extreme_auroc": extreme, "extreme_p": p_extreme,
                           "bins": _bins(v, mid, labels, wrong, k_classes)})
        for side, share in (("low", le), ("high", ge)):
            for tail in QUANTILES:
                member = np.nan_to_num(share, nan=2.0) <= tail + 1e-12
                for group in (ALL, *range(k_classes)):
                    inside = member if group == ALL else member & (labels == group)
                    pool = np.isfinite(v) if group == ALL else np.isfinite(v) & (labels == group)
                    candidates.append((group, key, side, tail, inside, pool))
    rows, seen = [], set()
    for group, key, side, tail, inside, pool in candidates:
        size, pool_n = int(inside.sum()), int(pool.sum())
        if not size or size == pool_n:
            continue
        ident = (group, key, side, np.flatnonzero(inside).tobytes())
        if ident in seen:      # a wider tail that holds the same images (ties): the narrowest one stands for it
            continue
        seen.add(ident)
        errs, pool_err = int((inside & wrong).sum()), int((pool & wrong).sum())
        limits = _thresholds(values[key], inside, labels, side, k_classes)
        rows.append({"group": group, "property": key, "side": side, "tail": tail, "thresholds": limits,
                     "threshold": np.nan if group == ALL else limits[group], "share": size / pool_n,
                     "images": size, "errors": errs, "rest_images": pool_n - size, "rest_errors": pool_err - errs,
                     "pool_images": pool_n, "pool_errors": pool_err})
    table = pd.DataFrame(rows)
    if not len(table):
        return ({"available": False, "reason": "no slice to test: too few images or no ink in any picture",
                 "inverted": inverted, "properties": properties}, pd.DataFrame(columns=SLICE_COLUMNS))
    table["p"] = hypergeom.sf(table["errors"] - 1, table["pool_images"], table["pool_errors"], table["images"])
    table["p"] = table["p"].clip(0.0, 1.0)
    table["q"] = false_discovery_control(table["p"].to_numpy(), method="bh")
    table["rate"] = table["errors"] / table["images"]
    table["rest_rate"] = table["rest_errors"] / table["rest_images"]
    with np.errstate(divide="ignore", invalid="ignore"):
        table["lift"] = np.where(table["rest_rate"] > 0, table["rate"] / table["rest_rate"], np.inf)
    table["group_name"] = [("every class" if g == ALL else names[g]) for g in table["group"]]
    table["description"] = [describe(r, names) for r in table.to_dict("records")]
    table = table.sort_values(["p", "images"], kind="stable").reset_index(drop=True)
    found = table[table["q"] <= FDR]
    # the leads: one slice per (group, measure, side), its most telling tail (the other tails of it are the same
    # finding, cut wider or narrower)
    leads = table[(table["errors"] >= MIN_ERRORS) & (table["lift"] > 1)]
    leads = leads.drop_duplicates(["group", "property", "side"])
    listed = [_listed(r) for r in leads.head(LISTED).to_dict("records")]
    preds = frame["pred"].to_numpy()
    for item in listed:     # what the slice's errors were taken for, most often first
        rows = np.flatnonzero(members(values[item["property"]], labels, item) & wrong)
        taken, counts = np.unique(preds[rows], return_counts=True)
        item["taken_for"] = [[int(c), int(k)] for k, c in sorted(zip(counts, taken), key=lambda t: (-t[0], t[1]))]
    _correct_properties(properties)
    table = table[SLICE_COLUMNS]
    entry = {"available": True, "inverted": inverted, "images": n, "errors": int(wrong.sum()),
             "quantiles": list(QUANTILES), "fdr": FDR, "tested": int(len(table)), "found": int(len(found)),
             "properties": properties, "listed": listed,
             "method": "within-class tails of each measure, one-sided Fisher exact test against the rest of the "
                       "class(es), Benjamini-Hochberg over every slice tried"}
    return entry, table


def measure_findings(entry: dict) -> list[str]:
    """How errors differ from right answers of their class, by the measures' tests at FDR (q <= FDR), strongest
    first: ["at the ends of their class by width (AUROC 0.58), pieces (0.57)", "lower in their class by width
    (AUROC 0.36)"]."""
    kinds = {"at the ends of their class": [], "higher in their class": [], "lower in their class": []}
    for p in entry.get("properties", []):
        if p.get("q") is not None and p["q"] <= FDR:
            kinds["higher in their class" if p["auroc"] > 0.5 else "lower in their class"].append(
                (abs(p["auroc"] - 0.5), p["label"], p["auroc"]))
        if p.get("extreme_q") is not None and p["extreme_q"] <= FDR and p["extreme_auroc"] > 0.5:
            kinds["at the ends of their class"].append((p["extreme_auroc"] - 0.5, p["label"], p["extreme_auroc"]))
    out = []
    for kind, found in kinds.items():
        found.sort(key=lambda t: -t[0])
        if found:
            out.append(f"{kind} by " + ", ".join(f"{label} ({'AUROC ' if not i else ''}{auroc:.2f})"
                                                 for i, (_, label, auroc) in enumerate(found)))
    return out


def backing(entry: dict, suggestion: dict) -> list[dict]:
    """The listed slices whose augmentation (AUGMENT_FOR) an advice suggestion applies, found ones first."""
    keys = set(((suggestion or {}).get("overrides") or {}).get("augment") or {})
    agree = [item for item in (entry or {}).get("listed", [])     # (an analysis before "augment": by its measure)
             if item.get("augment", AUGMENT_FOR.get((item["property"], item["side"]))) in keys]
    return [item for item in agree if item["found"]] + [item for item in agree if not item["found"]]


def members(values: np.ndarray, labels: np.ndarray, item: dict) -> np.ndarray:
    """The rows in a listed slice (bool (N,)), from its per-class thresholds: what the dashboard computes too."""
    limits = np.array([np.nan if t is None else t for t in item["thresholds"]], np.float64)
    at = limits[labels]
    inside = (values <= at) if item["side"] == "low" else (values >= at)
    inside &= np.isfinite(at) & np.isfinite(values)
    return inside if item["group"] == ALL else inside & (labels == item["group"])


def _correct_properties(properties):
    """Add q and extreme_q to each measure's two tests: Benjamini-Hochberg over all of them."""
    from scipy.stats import false_discovery_control

    tests = [(p, k) for p in properties for k in ("p", "extreme_p") if p[k] is not None]
    if not tests:
        return
    qs = false_discovery_control([p[k] for p, k in tests], method="bh")
    for (p, k), q in zip(tests, qs):
        p["q" if k == "p" else "extreme_q"] = float(q)


def _listed(r: dict) -> dict:
    out = {k: r[k] for k in ("group", "property", "side", "tail", "images", "errors", "rest_images", "rest_errors",
                             "description")}
    out["share"] = float(r["share"])
    out["augment"] = AUGMENT_FOR.get((r["property"], r["side"]))
    out.update(rate=float(r["rate"]), rest_rate=float(r["rest_rate"]), p=float(r["p"]), q=float(r["q"]),
               lift=None if not np.isfinite(r["lift"]) else float(r["lift"]), thresholds=r["thresholds"],
               found=bool(r["q"] <= FDR))
    return out


def _thresholds(v, inside, labels, side, classes) -> list:
    """Per class, the value the tail starts at (its largest value for the low tail, smallest for the high one),
    None for a class without images in it. A row of class c is in the slice iff its value is at or beyond it."""
    out = []
    for c in range(classes):
        sel = v[inside & (labels == c)]
        out.append(None if not len(sel) else float(sel.max() if side == "low" else sel.min()))
    return out


def _bins(v, mid, labels, wrong, classes) -> dict:
    """The error rate by tenths of each class: {"all": [[images, errors] x BINS] (each image in its own class's
    tenth), "<c>": [[images, errors, lowest value, highest value] x BINS]}."""
    tenth = np.minimum((np.nan_to_num(mid, nan=-1.0) * BINS).astype(np.int64), BINS - 1)
    ok = np.isfinite(mid)
    out = {"all": [[int((ok & (tenth == b)).sum()), int((ok & (tenth == b) & wrong).sum())] for b in range(BINS)]}
    for c in range(classes):
        cells = []
        for b in range(BINS):
            sel = ok & (tenth == b) & (labels == c)
            vals = v[sel]
            cells.append([int(sel.sum()), int((sel & wrong).sum()),
                          float(vals.min()) if len(vals) else None, float(vals.max()) if len(vals) else None])
        out[str(c)] = cells
    return out


def _value(v: float, key: str) -> str:
    prop = PROPERTIES[KEYS.index(key)]
    unit = prop[2]
    text = f"{v:.{prop[3]}f}"
    return f"{text}{unit}" if unit == "°" else f"{text} {unit}".rstrip()


def describe(r: dict, class_names) -> str:
    """A slice (a table row before SLICE_COLUMNS drops its thresholds, or a listed one) in words: "9: the 10%
    thickest (thickness ≥ 3.40 px)", "every class: the 10% thickest of each".
    Where ties make the tail smaller than its nominal share (pieces: most pictures have one), the real share."""
    prop = PROPERTIES[KEYS.index(r["property"])]
    word = prop[4] if r["side"] == "low" else prop[5]
    share = r["share"] if r["share"] < 0.8 * r["tail"] else r["tail"]
    tail = f"{share * 100:.2g}%" if share < 0.1 else f"{share * 100:.0f}%"
    if r["group"] == ALL:
        return f"every class: the {tail} {word} of each ({prop[1]})"
    sign = "≤" if r["side"] == "low" else "≥"
    at = r["thresholds"][r["group"]]       # a table row's and a listed slice's alike
    return f"{class_names[r['group']]}: the {tail} {word} ({prop[1]} {sign} {_value(at, r['property'])})"
