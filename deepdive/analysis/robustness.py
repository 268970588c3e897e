"""What still fools the model: for each picture, the smallest turn, shift, zoom, slant, change of thickness and
invisible (adversarial) change that flips its answer; for each error, the smallest that makes it right.

Test accuracy counts the pictures the model reads right as they are. This stage asks how far each right answer is
from a wrong one: the pictures the model reads right among a class-stratified sample of SAMPLE (the same pictures
for every run on the same images, so runs compare picture by picture) are turned, shifted, zoomed, slanted,
thickened and thinned by growing amounts (deepdive.train.augment's transformations, the ones the recipe trains
with) until the answer changes, and attacked with Captum's FGSM and PGD (Linf) for the smallest change of each
pixel that changes it. The errors go the other way: the smallest change that makes the model give the label
(targeted attacks). What a picture turns into says where the model's boundaries lie close; set against the real
errors' confusions, it says whether the test errors sit along the model's weakest directions.

    robustness_stage(model, inputs, labels, correct, error_rows, out_dir) -> summary entry

Sizes: turn in degrees (3..45, either way), shift in pixels (1..5, four ways), zoom in percent (5..40, larger or
smaller), slant in degrees (5..45, a shear either way), thickness in pixels (1..3 steps of a 2x2 grey-scale
dilation, or one of erosion), the invisible change as epsilon, the most any pixel moves, as a share of the pixel range
(0.01..0.30; 0.3 is the usual MNIST budget). The adversarial size comes from a walk of FGSM steps of 0.01,
stopped when the answer changes, then refined by two rounds of bisection with 10-step PGD between half and all of
it (from 0 when the first step flipped it): an upper bound on the smallest change, within a quarter of that
interval of what PGD finds (the walk alone overshoots: on the demo PGD at 0.6 of the walk's size still flipped 3%
of its pictures, at 0.8 of it 88%). A picture that nothing in range flips has size NaN.

Writes out_dir/robustness.parquet (TABLE_COLUMNS: one row per picture and family) and robustness_images.npy
(uint8 (rows, families, H, W[, 3]): each picture as changed at its size, the picture itself where nothing flipped).
"""
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from deepdive.analysis.activations import _device, evaluating
from deepdive.train import augment

SAMPLE = 500          # pictures drawn, class-stratified; the right answers among them are tried
BATCH = 250
ADV_STEP = 0.01       # the walk's FGSM step, a share of the pixel range
ADV_MAX = 0.30
PGD_STEPS = 10
BISECTIONS = 2
TABLE_COLUMNS = ("row", "mending", "family", "size", "variant", "into")


@dataclass(frozen=True)
class Family:
    id: str
    label: str
    unit: str
    sizes: tuple
    headline: float         # the size the one-line summaries quote
    variants: Callable      # size -> [(variant label, fn(x) -> x changed)]; None: the adversarial search
    augments: tuple = ()    # the recipe's augmentation keys that train against it (advice.CANDIDATES)
    holds: str = ""         # what nothing flipping means, where "holds to" the largest size would say too much

    @property
    def holds_text(self) -> str:
        return self.holds or f"holds to {size_text(self.unit, self.sizes[-1])}"


def _turns(s):
    return [(f"turned {s}° anticlockwise", lambda x: augment.rotate(x, s)),
            (f"turned {s}° clockwise", lambda x: augment.rotate(x, -s))]


def _shifts(s):
    return [(f"moved {s} px left", lambda x: augment.shift(x, -s, 0)),
            (f"moved {s} px right", lambda x: augment.shift(x, s, 0)),
            (f"moved {s} px up", lambda x: augment.shift(x, 0, -s)),
            (f"moved {s} px down", lambda x: augment.shift(x, 0, s))]


def _zooms(s):
    return [(f"{s}% smaller", lambda x: augment.scale(x, 1 - s / 100)),
            (f"{s}% larger", lambda x: augment.scale(x, 1 + s / 100))]


def _slants(s):
    return [(f"slanted {s}° to the right", lambda x: augment.shear(x, s)),
            (f"slanted {s}° to the left", lambda x: augment.shear(x, -s))]


def _repeated(fn, times):
    def apply(x):
        for _ in range(times):
            x = fn(x)
        return x
    return apply


def _thickness(s):
    # One pixel per step: the 2x2 grey-scale dilation / erosion the recipe's thicken / thin augmentations apply.
    # Thinner by one step only: it keeps a median 47% of an MNIST digit's ink, a second step 11% (the demo's test
    # images), which erases the digit rather than thinning it.
    return [(f"{s} px thicker", _repeated(augment.thicken, s))] + ([("1 px thinner", augment.thin)] if s == 1 else [])


# Turn, shift, zoom and slant (the writer's hand) and thickness (the pen) are how handwriting varies (Morpho-MNIST
# measures the last two: deepdive.analysis.slices); the invisible change is what no writer makes.
FAMILIES = (
    Family("turn", "turn", "°", tuple(range(3, 46, 3)), 15, _turns, ("rotate",)),
    Family("shift", "shift", "px", (1, 2, 3, 4, 5), 2, _shifts, ("shift",)),
    Family("zoom", "zoom", "%", tuple(range(5, 41, 5)), 20, _zooms, ("scale",)),
    Family("slant", "slant", "°", tuple(range(5, 46, 5)), 15, _slants, ("shear",)),
    Family("thickness", "thickness change", "px", (1, 2, 3), 1, _thickness, ("thicken", "thin"),
           "holds 3 px thicker and 1 px thinner"),
    Family("adversarial", "invisible change", "ε∞", tuple(round(ADV_STEP * k, 2) for k in range(1, 31)), 0.05,
           None),
)
FAMILY_IDS = tuple(f.id for f in FAMILIES)


def robustness_stage(model: nn.Module, inputs, labels, preds, error_rows, num_classes: int, out_dir,
                     progress=False, sample=SAMPLE, seed=0) -> dict:
    """Search every family's smallest flipping change for the right answers among a stratified sample of `sample`
    pictures and (toward their label) for `error_rows`; write the table and pictures under out_dir; return the
    summary entry."""
    from deepdive.analysis import display_scale
    from deepdive.analysis.advice import stratified_sample
    from deepdive.atomic import atomic_save_npy, atomic_write_bytes

    if not sample:
        return {"available": False, "reason": "not searched (deepdive analyze --robustness-sample 0)"}
    start = time.perf_counter()
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    # drawn from every picture, then the right answers kept: the same pictures for every run on these images, so
    # two runs' searches pair up (analysis.compare)
    drawn = stratified_sample(labels, sample, seed)
    fool_rows = drawn[labels[drawn] == preds[drawn]]
    mend_rows = np.asarray(error_rows, np.int64)
    rows = np.concatenate([fool_rows, mend_rows])
    mending = np.r_[np.zeros(len(fool_rows), bool), np.ones(len(mend_rows), bool)]
    x_all = np.asarray(inputs, np.float32)
    low, span = display_scale(x_all)
    found = search(model, x_all[rows], labels[rows], mending, low, span, progress)
    table = _table(rows, mending, found)
    atomic_write_bytes(Path(out_dir) / "robustness.parquet", table.to_parquet(index=False))
    atomic_save_npy(Path(out_dir) / "robustness_images.npy", _pictures(found["pictures"], low, span))
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    in_unit = bool(np.all(low == 0) and np.all(span == 1))
    entry = summarize(table, labels, num_classes, time.perf_counter() - start, confusion,
                      note=None if in_unit else "inputs are not in [0, 1]: turns, shifts and zooms fill with 0")
    return {**entry, "drawn": int(len(drawn))}


def search(model, x, y, mending, low, span, progress=False, families=FAMILIES) -> dict:
    """For pictures x (N, C, H, W) with labels y: per family, the smallest size that changes the answer away from
    y (mending False) or to y (mending True). Returns {family: (size (N,) float, variant (N,) object, into (N,)
    int)} and pictures: float (N, families, C, H, W), each picture as changed at its size."""
    n = len(y)
    out = {"pictures": np.repeat(x[:, None], len(families), axis=1)}
    device = _device(model)
    lo = torch.as_tensor(low, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    sp = torch.as_tensor(span, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    # right answers and errors in separate batches: one searches away from the label, the other toward it
    batches = [(s, min(s + BATCH, stop), towards) for towards, (begin, stop) in
               ((False, (0, int((~mending).sum()))), (True, (int((~mending).sum()), n)))
               for s in range(begin, stop, BATCH)]
    if np.any(mending[:int((~mending).sum())]):
        raise ValueError("search expects the right answers first, then the errors")
    bar = tqdm(total=len(batches) * len(families), desc="robustness", unit="step", disable=not progress,
               leave=False)
    for k, family in enumerate(families):
        size = np.full(n, np.nan, np.float32)
        variant = np.full(n, "", object)
        into = np.full(n, -1, np.int64)
        for s, e, towards in batches:
            xb = torch.as_tensor(x[s:e], device=device)
            yb = torch.as_tensor(y[s:e], device=device)
            part = (_attack(model, xb, yb, towards, lo, sp) if family.variants is None
                    else _transform(model, family, xb, yb, towards))
            size[s:e], variant[s:e], into[s:e], out["pictures"][s:e, k] = part
            bar.update(1)
        out[family.id] = (size, variant, into)
    bar.close()
    return out


def trained_against(augment: dict) -> tuple:
    """The families an augmentation config (a recipe's or a suggestion's "augment") trains against."""
    return tuple(f for f in FAMILIES if any((augment or {}).get(key) for key in f.augments))


def paired_flips(model_before, model_after, inputs, labels, right_before, right_after, families,
                 sample=SAMPLE, seed=0) -> list[dict]:
    """Two models on the same pictures (verify-advice: a recipe with and without an augmentation): per family, on
    the right answers of both among the sample robustness_stage draws, the smallest flipping size under each model.
    inputs: the split's float (N, C, H, W). Returns [{id, before, after}] with the sizes (NaN: held)."""
    from deepdive.analysis import display_scale
    from deepdive.analysis.advice import stratified_sample

    labels, inputs = np.asarray(labels, np.int64), np.asarray(inputs, np.float32)
    drawn = stratified_sample(labels, sample, seed)
    rows = drawn[np.asarray(right_before, bool)[drawn] & np.asarray(right_after, bool)[drawn]]
    low, span = display_scale(inputs)
    found = [search(m, inputs[rows], labels[rows], np.zeros(len(rows), bool), low, span, families=families)
             for m in (model_before, model_after)]
    return [{"id": f.id, "before": found[0][f.id][0], "after": found[1][f.id][0]} for f in families]


def paired_summary(parts: list[list[dict]]) -> list[dict]:
    """paired_flips of several seeds pooled, per family (paired: fixed = flipped before, held after)."""
    out = []
    for k, entry in enumerate(parts[0] if parts else []):
        family = next(f for f in FAMILIES if f.id == entry["id"])
        before, after = (np.concatenate([p[k][side] for p in parts]) for side in ("before", "after"))
        out.append(paired_sizes(family, before, after, ("before", "after")))
    return out


def paired_sizes(family: Family, first, second, names=("a", "b")) -> dict:
    """One family's sizes on the same pictures under two models: the pictures, how many its headline size flips
    under each, the split of those only one flips (fixed: flipped by the first, held by the second; exact McNemar)
    and both medians; keys flipped_<name> and median_<name>."""
    from deepdive.analysis.advice import split_counts

    f1, f2 = flipped_by(first, family.headline), flipped_by(second, family.headline)
    return {"id": family.id, "label": family.label, "unit": family.unit, "headline": family.headline,
            "pictures": int(len(f1)), f"flipped_{names[0]}": int(f1.sum()), f"flipped_{names[1]}": int(f2.sum()),
            "paired": split_counts(int((f1 & ~f2).sum()), int((~f1 & f2).sum())),
            f"median_{names[0]}": median_size(first), f"median_{names[1]}": median_size(second)}


def _done(pred, y, towards: bool):
    """Whether each answer is what the search looks for: the label (towards), else anything but the label."""
    return pred == y if towards else pred != y


def _transform(model, family, x, y, towards):
    """The smallest size of a transformation family (first variant first at equal size) that decides each picture."""
    n = len(y)
    size = np.full(n, np.nan, np.float32)
    variant = np.full(n, "", object)
    into = np.full(n, -1, np.int64)
    changed = x.clone()
    open_ = torch.ones(n, dtype=torch.bool, device=x.device)
    with evaluating(model):
        for s in family.sizes:
            for name, fn in family.variants(s):
                idx = torch.nonzero(open_).flatten()
                if not len(idx):
                    break
                moved = fn(x[idx])
                pred = model(moved).argmax(1)
                hit = _done(pred, y[idx], towards)
                where = idx[hit].cpu().numpy()
                size[where], variant[where], into[where] = s, name, pred[hit].cpu().numpy()
                changed[idx[hit]] = moved[hit]
                open_[idx[hit]] = False
    return size, variant, into, changed.cpu().numpy()


def _loss(logits, target):
    """Cross-entropy of each picture: the attacks step along its gradient (Captum's default, -log of the
    output, expects probabilities; our models give logits)."""
    return torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")


def _attack(model, x, y, towards, lo, span):
    """The smallest Linf change (share of the pixel range) that decides each picture: a walk of Captum FGSM steps
    of ADV_STEP up to ADV_MAX (targeted at the label when `towards`), then BISECTIONS rounds of Captum PGD between
    half the walk's size (0 after one step) and all of it."""
    from captum.robust import FGSM, PGD

    n = len(y)
    eps = torch.full((n,), float("nan"), device=x.device)
    adv, found = x.clone(), x.clone()
    with evaluating(model, grad=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
        fgsm = FGSM(model, _loss, lower_bound=lo, upper_bound=lo + span)
        open_ = torch.arange(n, device=x.device)
        for k in range(1, round(ADV_MAX / ADV_STEP) + 1):
            adv[open_] = fgsm.perturb(adv[open_], epsilon=ADV_STEP * span, target=y[open_],
                                      targeted=towards).detach()
            with torch.no_grad():
                hit = _done(model(adv[open_]).argmax(1), y[open_], towards)
            eps[open_[hit]] = k * ADV_STEP
            found[open_[hit]] = adv[open_[hit]]
            open_ = open_[~hit]
            if not len(open_):
                break
        # The walk overshoots (each step follows the gradient's sign at every pixel, useful or not): PGD within a
        # smaller ball often decides the picture too.
        hit = torch.nonzero(~torch.isnan(eps)).flatten()
        if len(hit):
            pgd = PGD(model, _loss, lower_bound=lo, upper_bound=lo + span)
            upper = eps[hit].clone()
            lower = torch.where(upper <= ADV_STEP, 0.0, upper / 2)     # flipped by the first step: from 0
            for _ in range(BISECTIONS):
                mid = (upper + lower) / 2
                radius = mid.view(-1, 1, 1, 1) * span
                tried = pgd.perturb(x[hit], radius=radius, step_size=radius / 4, step_num=PGD_STEPS,
                                    target=y[hit], targeted=towards).detach()
                with torch.no_grad():
                    ok = _done(model(tried).argmax(1), y[hit], towards)
                found[hit[ok]] = tried[ok]
                upper, lower = torch.where(ok, mid, upper), torch.where(ok, lower, mid)
            eps[hit] = upper
        with torch.no_grad():
            pred = model(found).argmax(1)
    size = eps.cpu().numpy().astype(np.float32)
    decided = ~np.isnan(size)
    into = np.where(decided, pred.cpu().numpy(), -1)
    variant = np.array([f"every pixel within {v:.3f}" if d else "" for v, d in zip(size, decided)], object)
    return size, variant, into, found.cpu().numpy()


def _table(rows, mending, found):
    """The long table (TABLE_COLUMNS): one line per picture and family, families in FAMILIES' order."""
    import pandas as pd

    parts = []
    for family in FAMILIES:
        size, variant, into = found[family.id]
        parts.append(pd.DataFrame({"row": rows.astype(np.int64), "mending": mending, "family": family.id,
                                   "size": size.astype(np.float32), "variant": variant.astype(str),
                                   "into": into.astype(np.int16)}))
    return pd.concat(parts, ignore_index=True)[list(TABLE_COLUMNS)]


def _pictures(changed, low, span) -> np.ndarray:
    """uint8 (N, families, H, W[, 3]) of float (N, families, C, H, W), on the split's display scale."""
    from deepdive.analysis import display_images

    n, f = changed.shape[:2]
    shown = display_images(changed.reshape(n * f, *changed.shape[2:]), scale=(low, span))
    return shown.reshape(n, f, *shown.shape[1:])


def summarize(table, labels, num_classes: int, seconds: float, confusion=None, note=None) -> dict:
    """The summary entry: per family its sizes, how much of the sample each size leaves right (all and per
    class), the median size per class, where the flips go and, for the errors, how near they are to right."""
    labels = np.asarray(labels, np.int64)
    families = []
    for family in FAMILIES:
        part = table[table["family"] == family.id]
        fool, mend = part[~part["mending"]], part[part["mending"]]
        size = fool["size"].to_numpy(np.float64)
        cls = labels[fool["row"].to_numpy()]
        grid = np.asarray(family.sizes, np.float64)
        curve = [_share(~flipped_by(size, s)) for s in grid]
        per_class = [[_share(~flipped_by(size[cls == c], s)) for s in grid] for c in range(num_classes)]
        into = np.zeros((num_classes, num_classes), np.int64)
        flipped = ~np.isnan(size)
        np.add.at(into, (cls[flipped], fool["into"].to_numpy()[flipped].astype(np.int64)), 1)
        entry = {"id": family.id, "label": family.label, "unit": family.unit, "sizes": list(family.sizes),
                 "holds": family.holds_text, "headline": family.headline,
                 "headline_flipped": _share(flipped_by(size, family.headline)),
                 "n": int(len(fool)), "flipped": int(flipped.sum()), "curve": curve, "per_class": per_class,
                 "median": median_size(size),
                 "per_class_median": [median_size(size[cls == c]) for c in range(num_classes)],
                 "into": [[int(t), int(q), int(into[t, q])] for t, q in zip(*np.nonzero(into))]}
        if confusion is not None:
            on = np.asarray(confusion) > 0
            np.fill_diagonal(on, False)
            entry["error_pairs"] = int(on.sum())
            entry["into_error_pairs"] = int(into[on].sum())
            # what would land there if each flip went to any other class alike: the baseline for the count above
            entry["into_error_pairs_chance"] = round(float(into.sum(1) @ on.sum(1)) / max(1, num_classes - 1), 1)
        m = mend["size"].to_numpy(np.float64)
        entry["errors"] = {"n": int(len(mend)), "mended": int((~np.isnan(m)).sum()), "median": median_size(m)}
        families.append(entry)
    return {"available": True, "n": int((~table["mending"]).sum() // len(FAMILIES)),
            "errors": int(table["mending"].sum() // len(FAMILIES)), "families": families,
            "seconds": round(seconds, 3), "note": note}


def size_text(unit: str, size: float) -> str:
    """A size as the pages say it: "ε∞ 0.05", "15°", "2 px", "20%"."""
    if unit == "ε∞":
        return f"ε∞ {size:.3g}"
    return f"{size:g}{' ' * (unit == 'px')}{unit}"


def flipped_by(size, limit) -> np.ndarray:
    """Whether each size is at most `limit` (NaN: held through every size, never). The sizes are stored as float32:
    0.05 there reads 0.0500000007 as a float64, so the comparison allows for that."""
    size = np.asarray(size, np.float64)
    return ~np.isnan(size) & (size <= limit + 1e-6)


def _share(mask) -> float | None:
    return round(float(np.mean(mask)), 4) if len(mask) else None


def median_size(size) -> float | None:
    """The median of sizes (NaN: held through every size, so beyond the largest); None when that is the median or
    there are none."""
    size = np.asarray(size, np.float64)
    if not len(size):
        return None
    m = float(np.median(np.where(np.isnan(size), np.inf, size)))
    return round(m, 4) if np.isfinite(m) else None
