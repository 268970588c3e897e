"""Augmentation advice: probe the model with small deterministic perturbations, find the ones that hurt its most
confused class pairs, suggest the matching training augmentation, and check a suggestion by retraining.

    robustness_probes(model, inputs, labels, num_classes) -> probes          # per-class accuracy per perturbation
    recommend(probes, top_confusions) -> [suggestion, ...]                    # ranked, with evidence
    broken_examples(inputs, labels, probes, suggestions) -> pictures          # what each suggestion's probes break
    verify_advice(store, run_id, suggestion=None) -> report                   # retrain + compare, verify_advice.json
    paired_changes(before, after, pairs) -> {...}; verdict(changes) -> str    # the comparison, with its p-values

The perturbations are deepdive.train.augment's (rotate, shift, scale, shear, thicken, thin), so a suggestion's
training override switches on exactly the transformation that was probed. Probes run on a class-stratified sample
of at most PROBE_EXAMPLES images (15 forward passes over it), so they take seconds on a CPU; evidence counts refer to
that sample and say so.
"""
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from deepdive.analysis import _load_model, robustness
from deepdive.analysis.activations import _device, evaluating
from deepdive.errors import DeepdiveError, RunError
from deepdive.train import augment

PROBE_EXAMPLES = 3000
BROKEN_LISTED = 1000        # images listed per perturbation as broken by it (the count beside them is exact)
EXAMPLES_PER_SUGGESTION = 8


@dataclass(frozen=True)
class Perturbation:
    id: str
    label: str
    apply: Callable[[torch.Tensor], torch.Tensor]


PERTURBATIONS = (
    Perturbation("none", "unchanged", lambda x: x),
    Perturbation("rotate-20", "rotate -20°", lambda x: augment.rotate(x, -20)),
    Perturbation("rotate-10", "rotate -10°", lambda x: augment.rotate(x, -10)),
    Perturbation("rotate+10", "rotate +10°", lambda x: augment.rotate(x, 10)),
    Perturbation("rotate+20", "rotate +20°", lambda x: augment.rotate(x, 20)),
    Perturbation("shift-x", "shift left 2 px", lambda x: augment.shift(x, -2, 0)),
    Perturbation("shift+x", "shift right 2 px", lambda x: augment.shift(x, 2, 0)),
    Perturbation("shift-y", "shift up 2 px", lambda x: augment.shift(x, 0, -2)),
    Perturbation("shift+y", "shift down 2 px", lambda x: augment.shift(x, 0, 2)),
    Perturbation("scale0.85", "scale ×0.85", lambda x: augment.scale(x, 0.85)),
    Perturbation("scale1.15", "scale ×1.15", lambda x: augment.scale(x, 1.15)),
    Perturbation("slant-15", "slant 15° left", lambda x: augment.shear(x, -15)),
    Perturbation("slant+15", "slant 15° right", lambda x: augment.shear(x, 15)),
    Perturbation("thicken", "thicker strokes", augment.thicken),
    Perturbation("thin", "thinner strokes", augment.thin),
)


@dataclass(frozen=True)
class Candidate:
    """A training augmentation and the probes that stand for the variation it teaches."""
    id: str
    title: str
    probes: tuple
    augment: dict  # merged into the recipe's preset["augment"]


CANDIDATES = (
    Candidate("rotate-10", "rotate ±10°", ("rotate-10", "rotate+10"), {"rotate": 10}),
    Candidate("rotate-20", "rotate ±20°", ("rotate-20", "rotate+20"), {"rotate": 20}),
    Candidate("shift-2", "shift ±2 px", ("shift-x", "shift+x", "shift-y", "shift+y"), {"shift": 2}),
    Candidate("scale-0.15", "scale ×0.85–1.15", ("scale0.85", "scale1.15"), {"scale": 0.15}),
    Candidate("shear-15", "slant ±15° (shear)", ("slant-15", "slant+15"), {"shear": 15}),
    Candidate("thicken", "thicker strokes (dilate 20% of images)", ("thicken",), {"thicken": 0.2}),
    Candidate("thin", "thinner strokes (erode 20% of images)", ("thin",), {"thin": 0.2}),
)


# ---- probes ------------------------------------------------------------------------------------------------
def robustness_probes(model: nn.Module, inputs, labels, num_classes: int, max_examples: int = PROBE_EXAMPLES,
                      batch_size: int = 128, seed: int = 0, progress: bool = False) -> dict:
    """Accuracy, per-class accuracy and off-diagonal confusions under each perturbation in PERTURBATIONS.

    inputs: float (N, C, H, W) in [0, 1] with 0 = background (what augment's functions expect). Returns
    {n, n_total, sampled, class_counts, seconds, note, perturbations: [{id, label, accuracy, per_class_accuracy,
    confusions: [[true, pred, count], ...], broken_count, broken: [[row, pred], ...]}]}; "none" (first) is the
    unperturbed baseline. `broken` lists (the first BROKEN_LISTED of) the images the model gets right unchanged and
    wrong under the perturbation, by their row in `inputs`, with the class it then predicts."""
    start = time.perf_counter()
    x = torch.as_tensor(inputs)
    y = np.asarray(labels, np.int64).reshape(-1)
    n_total = len(y)
    if x.dim() != 4 or len(x) != len(y) or not len(y):
        raise DeepdiveError(f"robustness probes need inputs (N, C, H, W) and N labels, got {tuple(x.shape)} and "
                            f"{len(y)}")
    rows = stratified_sample(y, max_examples, seed)
    x, y = x[torch.as_tensor(rows)], y[rows]
    lo, hi = float(x.min()), float(x.max())
    note = None if lo >= -1e-6 and hi <= 1 + 1e-6 else (
        f"inputs span [{lo:.3g}, {hi:.3g}], not [0, 1]: perturbations fill with 0, which may not be background")

    device = _device(model)
    preds = np.zeros((len(PERTURBATIONS), len(y)), np.int64)
    starts = range(0, len(y), batch_size)
    with evaluating(model):
        for s in tqdm(starts, desc="robustness probes", unit="batch", disable=not progress or len(starts) < 2,
                      leave=False):
            xb = x[s:s + batch_size].float().to(device)
            for k, p in enumerate(PERTURBATIONS):
                preds[k, s:s + len(xb)] = model(p.apply(xb)).argmax(1).cpu().numpy()

    counts = np.bincount(y, minlength=num_classes)
    right = preds[0] == y
    results = []
    for p, pred in zip(PERTURBATIONS, preds):
        confusion = np.zeros((num_classes, num_classes), np.int64)
        np.add.at(confusion, (y, pred), 1)
        off = [[int(t), int(q), int(confusion[t, q])] for t, q in zip(*np.nonzero(confusion)) if t != q]
        per_class = [float(confusion[c, c] / counts[c]) if counts[c] else None for c in range(num_classes)]
        broken = np.flatnonzero(right & (pred != y))
        results.append({"id": p.id, "label": p.label, "accuracy": float((pred == y).mean()),
                        "per_class_accuracy": per_class, "confusions": off, "broken_count": int(len(broken)),
                        "broken": [[int(rows[i]), int(pred[i])] for i in broken[:BROKEN_LISTED]]})
    return {"n": int(len(y)), "n_total": int(n_total), "sampled": bool(len(y) < n_total),
            "class_counts": counts.tolist(), "seconds": round(time.perf_counter() - start, 3), "note": note,
            "perturbations": results}


def stratified_sample(labels: np.ndarray, max_examples: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_examples` rows keeping each class's share (all rows when there are few)."""
    n = len(labels)
    if n <= max_examples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, round(len(members) * max_examples / n))
        chosen.append(rng.choice(members, min(k, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def broken_examples(inputs, labels, probes: dict, suggestions: list[dict],
                    per_suggestion: int = EXAMPLES_PER_SUGGESTION) -> np.ndarray | None:
    """What each suggestion's probes do to the images they break (right unchanged, wrong perturbed): adds to each
    suggestion `broken` (how many distinct probed images its probes break; a lower bound where a probe broke
    more than BROKEN_LISTED) and `examples` [{row, probe, label, pred, image}], up to `per_suggestion` of them:
    one from each of the suggestion's rising confusions in its evidence's order, then one from the images broken
    otherwise, then a second from each, and so on, each group by row. Returns the
    perturbed pictures as display images (uint8 (M, H, W) or (M, H, W, 3)) that `image` indexes, or None."""
    from deepdive.analysis import display_images

    by_id = {p["id"]: p for p in probes["perturbations"]}
    perturbations = {p.id: p for p in PERTURBATIONS}
    labels = np.asarray(labels).reshape(-1)
    pictures = []
    for s in suggestions:
        rising = [(e["true"], e["pred"]) for e in s["evidence"]["pairs"] if e["after"] > e["before"]]
        first = {pair: i for i, pair in enumerate(rising)}
        broken = {}   # row -> (probe, prediction), the first of its probes that breaks it
        for probe in s["evidence"]["probes"]:
            for row, pred in by_id[probe].get("broken", []):
                broken.setdefault(row, (probe, pred))
        # round robin over the rising confusions in the evidence's order (then the rest), each by row: one
        # example of each way the probes break images before a second of any
        groups = {}
        for row in sorted(broken):
            groups.setdefault(first.get((int(labels[row]), broken[row][1]), len(rising)), []).append(row)
        queues = [groups[g] for g in sorted(groups)]
        order = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
        s["broken"] = len(broken)
        s["examples"] = []
        for row in order[:per_suggestion]:
            probe, pred = broken[row]
            with torch.no_grad():
                x = torch.as_tensor(np.asarray(inputs[row:row + 1]), dtype=torch.float32)
                x = perturbations[probe].apply(x)
            s["examples"].append({"row": int(row), "probe": probe, "label": perturbations[probe].label,
                                  "pred": int(pred), "image": len(pictures)})
            pictures.append(x[0].numpy())
    # each picture scaled alone: a set-wide min-max would let one picture's range set the others' contrast
    return np.concatenate([display_images(p[None]) for p in pictures]) if pictures else None


# ---- recommendation ----------------------------------------------------------------------------------------
def recommend(probes: dict, top_confusions: list, current_augment: dict | None = None,
              class_names: list | None = None) -> list[dict]:
    """Rank the CANDIDATES by how much their probes raise the confusions of `top_confusions` ([{true, pred,
    count, ...}], most frequent first).

    Score = Σ over pairs of (pair's share of the listed errors) × (worst rise in the pair's confusion rate under
    the candidate's probes); with no pairs, the drop in overall accuracy. Candidates that hurt nothing are left
    out. With `current_augment` (the recipe's preset["augment"]), a candidate the recipe already covers is marked
    `in_recipe` and ranked after the others. Each suggestion: {id, title, text, overrides, score, in_recipe,
    evidence: {pairs: [...], class_accuracy: [...], accuracy: {...}, probes, n}}."""
    by_id = {p["id"]: p for p in probes["perturbations"]}
    base = by_id["none"]
    counts = probes["class_counts"]
    pairs = [(int(c["true"]), int(c["pred"]), int(c.get("count", 1))) for c in top_confusions or []]
    total = sum(w for *_, w in pairs) or 1
    name = (lambda c: str(class_names[c])) if class_names else str

    suggestions = []
    for cand in CANDIDATES:
        runs = [by_id[i] for i in cand.probes]
        pair_evidence = []
        for t, q, weight in pairs:
            n_t = counts[t] if t < len(counts) else 0
            before = _confusion_count(base, t, q)
            worst = max(runs, key=lambda r: _confusion_count(r, t, q))
            after = _confusion_count(worst, t, q)
            pair_evidence.append({
                "true": t, "pred": q, "weight": weight / total, "n_true": n_t, "before": before, "after": after,
                "worst_probe": worst["id"],
                "rate_before": before / n_t if n_t else None, "rate_after": after / n_t if n_t else None})
        worst_acc = min(r["accuracy"] for r in runs)
        if pairs:
            score = sum(e["weight"] * max(0.0, (e["rate_after"] or 0) - (e["rate_before"] or 0))
                        for e in pair_evidence)
        else:
            score = max(0.0, base["accuracy"] - worst_acc)
        if score <= 0:
            continue
        classes = sorted({e["true"] for e in pair_evidence})
        class_acc = [{"class": c, "before": base["per_class_accuracy"][c],
                      "after": min(r["per_class_accuracy"][c] for r in runs)} for c in classes
                     if base["per_class_accuracy"][c] is not None]
        in_recipe = covered({"augment": cand.augment}, current_augment)
        suggestions.append({
            "id": cand.id, "title": cand.title,
            "text": _evidence_text(cand, pair_evidence, class_acc, base["accuracy"], worst_acc, probes, name),
            "overrides": {"augment": dict(cand.augment)}, "score": round(score, 6), "in_recipe": in_recipe,
            "evidence": {"pairs": sorted(pair_evidence, key=lambda e: -(e["after"] - e["before"]) * e["weight"]),
                         "class_accuracy": class_acc,
                         "accuracy": {"before": base["accuracy"], "after": worst_acc},
                         "probes": list(cand.probes), "n": probes["n"], "sampled": probes.get("sampled", False)},
        })
    suggestions.sort(key=lambda s: (s["in_recipe"], -s["score"], -(s["evidence"]["accuracy"]["before"] -
                                                                    s["evidence"]["accuracy"]["after"])))
    for rank, s in enumerate(suggestions, 1):
        s["rank"] = rank
    return suggestions


def covered(overrides: dict, augment_config: dict | None) -> bool:
    """Whether a recipe whose augment config is `augment_config` already does what `overrides` asks."""
    wanted = (overrides or {}).get("augment") or {}
    return bool(augment_config) and bool(wanted) and all(float(augment_config.get(k) or 0) >= float(v)
                                                         for k, v in wanted.items())


def _confusion_count(run: dict, t: int, q: int) -> int:
    return next((n for a, b, n in run["confusions"] if a == t and b == q), 0)


def _evidence_text(cand, pairs, class_acc, acc_before, acc_after, probes, name) -> str:
    """e.g. "rotate ±20°: 7→1 confusions rise 1→12 of 300 probed 7s; class 7 accuracy drops 99.0%→88.0%"."""
    parts = []
    rising = [e for e in pairs if e["after"] > e["before"]]
    if rising:
        e = max(rising, key=lambda e: (e["after"] - e["before"]) * e["weight"])
        parts.append(f"{name(e['true'])}→{name(e['pred'])} confusions rise {e['before']}→{e['after']} of "
                     f"{e['n_true']} probed {name(e['true'])}s")
        acc = next((a for a in class_acc if a["class"] == e["true"]), None)
        if acc:
            parts.append(f"class {name(e['true'])} accuracy drops {acc['before']:.1%}→{acc['after']:.1%}")
    parts.append(f"overall accuracy {acc_before:.1%}→{acc_after:.1%} on {probes['n']} probed images")
    return f"{cand.title}: " + "; ".join(parts)


# ---- verification ------------------------------------------------------------------------------------------
def verify_advice(store, run_id, suggestion=None, progress: bool = True, split: str = "test",
                  seeds: int = 1) -> dict:
    """Retrain the run's recipe (same dataset, preset, epochs, limit_train/limit_test, ensemble, device request)
    with a suggestion's augmentation added, at the run's seed and the `seeds` - 1 seeds after it, and compare
    each against the recipe without the suggestion at the same seed (the run itself at its own seed, a baseline
    retraining at the others). The suggestion's runs are stored as "<name>+<suggestion id>[@seed<s>]", the
    baselines as "<name>@seed<s>", each linked to the original by config["verifies"] {run_id, suggestion (None
    for a baseline), split, seed}; a finished run of an earlier verification with the same link and overrides is
    reused, not retrained (an interrupted verification resumes; a second suggestion reuses the baselines). The
    report is written to the original run's analysis/<split>/verify_advice.json and returned.

    Several seeds separate a change's effect from retraining noise: one retraining of `default` with rotations of
    ±20° read "no clear change" (99.70% against 99.71%); four seeds read 0.055 pp lower, none higher
    (benchmarks/EXPERIMENTS.md). Top-level accuracy is the mean over seeds, errors and confusions are summed, and
    the paired test pools the images that changed over the seed pairs.

    suggestion: None = the top-ranked suggestion the recipe does not already include; a suggestion id; or a
    suggestion dict as recommend() returns."""
    if split != "test":
        # Training evaluates (and stores predictions for) the test split only: that is what both runs share.
        raise DeepdiveError(f"verify-advice compares test-split predictions; got split {split!r}")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise DeepdiveError(f"seeds must be a positive integer, got {seeds!r}")
    from deepdive.analysis.results import AnalysisResult
    from deepdive.atomic import atomic_write_text
    from deepdive.store import to_json

    run = store.get_run(run_id)
    if run.status != "finished":
        raise RunError(f"run {run.id} is {run.status}; only a finished run can be verified")
    config = run.config or {}
    if "preset" not in config:
        raise RunError(f"run {run.id} was not trained by deepdive (no recipe in its config), so it cannot be "
                       "retrained with the advice")
    result = AnalysisResult.load(run.run_dir, split)
    recipe_augment = (config.get("resolved") or {}).get("augment") or {}
    chosen = _choose(suggestion, (result.advice or {}).get("suggestions") or [], run.id, recipe_augment)
    base_overrides = config.get("overrides") or {}
    overrides = _merge_overrides(base_overrides, chosen["overrides"])
    pairs = [(int(e["true"]), int(e["pred"])) for e in chosen.get("evidence", {}).get("pairs", [])]

    first = int(config.get("seed", 0))
    per_seed, trained_seconds, flips = [], 0.0, []
    families = robustness.trained_against(chosen["overrides"].get("augment"))
    inputs = result.inputs(np.arange(len(result.examples))) if families else None
    for seed in range(first, first + seeds):
        tag = "" if seed == first else f"@seed{seed}"
        if seed == first:
            base_id, base_trained = run.id, False
        else:
            base_id, base_trained, secs = _run_for(store, run, f"{run.name}{tag}", seed, base_overrides, None,
                                                   split, progress)
            trained_seconds += secs
        new_name = f"{run.name}+{chosen['id']}{tag}"
        new_id, new_trained, secs = _run_for(store, run, new_name, seed, overrides, chosen["id"], split, progress)
        trained_seconds += secs
        before, after = store.predictions(base_id, split), store.predictions(new_id, split)
        if not np.array_equal(before["true"], after["true"]):
            raise RunError(f"the retrained run {new_id} was evaluated on different {split} examples than "
                           f"{base_id}; cannot compare")
        per_seed.append({"seed": seed, "baseline_run_id": base_id, "baseline_trained": base_trained,
                         "retrained_run_id": new_id, "retrained_run_name": new_name, "retrained": new_trained,
                         **_compare(before, after, pairs)})
        if families:     # what the augmentation teaches: the change it trains against, on the same pictures
            flips.append(robustness.paired_flips(
                *(_load_model(store.get_run(r))[0].eval() for r in (base_id, new_id)), inputs, before["true"],
                before["pred"] == before["true"], after["pred"] == after["true"], families))

    acc_before = float(np.mean([r["accuracy"]["before"] for r in per_seed]))
    acc_after = float(np.mean([r["accuracy"]["after"] for r in per_seed]))
    targeted = [{"true": t, "pred": q, **_total([r["targeted_confusions"][k] for r in per_seed])}
                for k, (t, q) in enumerate(pairs)]
    paired = {key: split_counts(sum(r["paired"][key]["fixed"] for r in per_seed),
                                 sum(r["paired"][key]["new"] for r in per_seed)) for key in ("targeted", "errors")}
    higher = sum(r["accuracy"]["after"] > r["accuracy"]["before"] for r in per_seed)
    lower = sum(r["accuracy"]["after"] < r["accuracy"]["before"] for r in per_seed)
    report = {
        "run_id": run.id, "retrained_run_id": per_seed[0]["retrained_run_id"],
        "retrained_run_name": per_seed[0]["retrained_run_name"],
        "split": split, "suggestion": {k: chosen.get(k) for k in ("id", "title", "text", "overrides")},
        "overrides": overrides,
        "accuracy": {"before": acc_before, "after": acc_after, "delta": acc_after - acc_before},
        "errors": _total([r["errors"] for r in per_seed]),
        "targeted_confusions": targeted,
        "targeted_total": _total([r["targeted_total"] for r in per_seed]),
        "paired": paired,
        "verdict": verdict(paired) + (f"; accuracy higher at {higher} of {seeds} seeds, lower at {lower}"
                                      if seeds > 1 else ""),
        "seeds": per_seed,
        "retrain_seconds": round(trained_seconds, 1),
        "robustness": robustness.paired_summary(flips),
        "note": ("one retraining: a changed recipe trains along another path, which by itself fixes some images and "
                 "breaks others, as another seed would; a change counts only when the images that changed lean one "
                 f"way beyond chance (exact McNemar test on them, p < {SIGNIFICANCE}); --seeds N retrains at N seeds"
                 if seeds == 1 else
                 f"{seeds} seeds ({first}-{first + seeds - 1}), each with and without the suggestion: accuracy is "
                 "their mean, errors and confusions their sum, and the exact McNemar test (p < "
                 f"{SIGNIFICANCE}) pools the images that changed over the seed pairs"),
    }
    atomic_write_text(run.run_dir / "analysis" / split / "verify_advice.json", to_json(report))
    return report


def _run_for(store, run, name, seed, overrides, suggestion_id, split, progress) -> tuple[str, bool, float]:
    """(run id, trained now?, training seconds): a finished run of an earlier verification with this link and
    these overrides, else a new training of the run's recipe at `seed` with `overrides`."""
    from deepdive.train.run import train_and_evaluate

    config = run.config
    link = {"run_id": run.id, "suggestion": suggestion_id, "split": split, "seed": seed}
    for other in store.list_runs():
        other_config = other.config or {}
        if other.status == "finished" and other_config.get("verifies") == link and \
                (other_config.get("overrides") or {}) == overrides:
            return other.id, False, 0.0
    started = time.perf_counter()
    new = train_and_evaluate(
        config.get("dataset", run.dataset), config["preset"], workspace=store.workspace, name=name,
        epochs=config.get("epochs"), seed=seed, device=config.get("device", "auto"),
        limit_train=config.get("limit_train"), limit_test=config.get("limit_test"),
        ensemble=config.get("ensemble") or 1, overrides=overrides, progress=progress,
        reviewed_labels=config.get("reviewed_labels") or False)   # the labels the run itself trained with
    seconds = time.perf_counter() - started
    store.set_config(new["run_id"], {**store.get_run(new["run_id"]).config, "verifies": link})
    return new["run_id"], True, seconds


def _compare(before: dict, after: dict, pairs) -> dict:
    """One seed's before/after: accuracy, errors, the targeted confusions and the paired changes."""
    targeted = [_pair_change(before, after, t, q) for t, q in pairs]
    acc_before = float((before["pred"] == before["true"]).mean())
    acc_after = float((after["pred"] == after["true"]).mean())
    errors = {"before": int((before["pred"] != before["true"]).sum()),
              "after": int((after["pred"] != after["true"]).sum())}
    t_before, t_after = sum(t["before"] for t in targeted), sum(t["after"] for t in targeted)
    return {"accuracy": {"before": acc_before, "after": acc_after, "delta": acc_after - acc_before},
            "errors": {**errors, "delta": errors["after"] - errors["before"]},
            "targeted_confusions": targeted,
            "targeted_total": {"before": t_before, "after": t_after, "delta": t_after - t_before},
            "paired": paired_changes(before, after, pairs)}


def _total(counts: list) -> dict:
    """The sum of per-seed {before, after} counts, with its delta."""
    before, after = sum(c["before"] for c in counts), sum(c["after"] for c in counts)
    return {"before": before, "after": after, "delta": after - before}


def _choose(suggestion, suggestions: list, run_id, recipe_augment: dict) -> dict:
    if isinstance(suggestion, dict):
        if "id" not in suggestion or "overrides" not in suggestion:
            raise DeepdiveError("a suggestion dict needs at least 'id' and 'overrides' (as recommend() returns)")
        return suggestion
    if not suggestions:
        raise RunError(f"run {run_id} has no augmentation advice to verify; analyse it first "
                       f"(deepdive analyze {run_id}) — or its probes found no weakness")
    if suggestion is None:
        fresh = [s for s in suggestions if not covered(s["overrides"], recipe_augment)]
        if not fresh:
            raise DeepdiveError(f"every suggestion for run {run_id} is already part of its recipe "
                                f"({', '.join(s['id'] for s in suggestions)}); name one with --suggestion "
                                "to retrain anyway")
        return fresh[0]
    for s in suggestions:
        if s["id"] == str(suggestion):
            return s
    raise DeepdiveError(f"no suggestion {suggestion!r} for run {run_id}; its suggestions: "
                        f"{', '.join(s['id'] for s in suggestions)}")


def _merge_overrides(base: dict, extra: dict) -> dict:
    """The run's own overrides plus the suggestion's; augment keys take the larger value of the two."""
    merged = {**base, **{k: v for k, v in extra.items() if k != "augment"}}
    aug = dict(base.get("augment") or {})
    for key, value in (extra.get("augment") or {}).items():
        aug[key] = max(float(aug.get(key) or 0), float(value))
    if aug:
        merged["augment"] = aug
    return merged


def _confused(preds: dict, t: int, q: int) -> np.ndarray:
    """Which images of `preds` are true class t predicted as q."""
    return (preds["true"] == t) & (preds["pred"] == q)


def _pair_change(before: dict, after: dict, t: int, q: int) -> dict:
    b, a = int(_confused(before, t, q).sum()), int(_confused(after, t, q).sum())
    return {"true": int(t), "pred": int(q), "before": b, "after": a, "delta": a - b}


# A verification retrains once, so its before/after differences mix the augmentation's effect with what any
# retraining does: two seeds of `default` share ~22 of their ~30 test errors, each fixing and breaking ~8 images.
# The paired test asks whether the images that changed lean one way more than that symmetric churn would.
SIGNIFICANCE = 0.05


def paired_changes(before: dict, after: dict, pairs) -> dict:
    """Per image, before vs after: for the targeted confusions (true, pred) in `pairs` and for all errors, how
    many images were fixed (in the set before, out of it after) and how many are new, with the two-sided exact
    McNemar p-value of that split (a binomial test on the changed images at 1/2)."""
    def split(was, now):
        return split_counts(int((was & ~now).sum()), int((~was & now).sum()))

    def targeted(preds):
        hit = np.zeros(len(preds["true"]), dtype=bool)
        for t, q in pairs:
            hit |= _confused(preds, t, q)
        return hit

    return {"targeted": split(targeted(before), targeted(after)),
            "errors": split(before["pred"] != before["true"], after["pred"] != after["true"])}


def split_counts(fixed: int, new: int) -> dict:
    """Fixed and new images with the two-sided exact McNemar p-value of that split (binomial at 1/2)."""
    from scipy.stats import binomtest

    p = binomtest(fixed, fixed + new, 0.5).pvalue if fixed + new else 1.0
    return {"fixed": fixed, "new": new, "p_value": round(float(p), 4)}


def verdict(paired: dict) -> str:
    """One line: helped / hurt / no clear change, judged by the paired test on the targeted confusions (and on all
    errors, which the augmentation must not make worse)."""
    t, e = paired["targeted"], paired["errors"]
    what = f"{t['fixed']} targeted confusions fixed, {t['new']} new (p = {t['p_value']:.2g})"
    errors = f"all errors: {e['fixed']} fixed, {e['new']} new (p = {e['p_value']:.2g})"
    worse = e["p_value"] < SIGNIFICANCE and e["new"] > e["fixed"]
    if t["p_value"] < SIGNIFICANCE and t["fixed"] > t["new"]:
        return f"{'mixed' if worse else 'helped'}: {what}; {errors}"
    if (t["p_value"] < SIGNIFICANCE and t["new"] > t["fixed"]) or worse:
        return f"hurt: {what}; {errors}"
    return f"no clear change: {what}, within what retraining alone moves; {errors}"
