"""Two runs on the same images, mistake by mistake: which of A's errors B fixes, which errors B adds,
which both make (and whether with the same wrong answer).

Two runs of one recipe that differ only in their seed already fix and add ~8 of each other's ~30 MNIST errors
(two `default` seeds share ~22), so a change is judged by the paired exact McNemar test on the images that
changed (advice.split_counts, as verify-advice uses), not by the difference in accuracy alone.
"""
import numpy as np

from deepdive.analysis.advice import split_counts
from deepdive.analysis.results import AnalysisResult
from deepdive.analysis.tables import predictions_frame
from deepdive.errors import DeepdiveError, RunError


SLICES = 10     # A's listed slices (deepdive.analysis.slices) compared, strongest first


def _side(rec, split, store):
    """(examples frame, class names, accuracy, errors, analysed, summary or None) of one run on `split`: its
    analysis, else (with a store) its stored predictions, which every finished run has on the test split
    (verify-advice's retrained runs among them: evaluated, not analysed)."""
    try:
        res = AnalysisResult.load(rec.run_dir, split)
    except RunError:
        if store is None:
            raise
        try:
            stored = store.predictions(rec.id, split)
        except RunError:
            raise RunError(f"run {rec.id} has neither an analysis nor stored predictions of its {split!r} split; "
                           f"run: deepdive analyze {rec.id} --split {split}") from None
        # the examples table an analysis would start from (the same stored probabilities)
        frame = predictions_frame(stored["true"], stored["probs"], stored["loss"], idx=stored["idx"])
        errors = int((~frame["correct"]).sum())
        return (frame, list(rec.config.get("class_names") or rec.class_names), 1 - errors / len(frame), errors,
                False, None)
    return res.examples, res.class_names, res.summary["accuracy"], int(res.summary["error_count"]), True, res.summary


def compare_runs(rec_a, rec_b, split="test", store=None) -> dict:
    """Compare run records `rec_a` and `rec_b` (deepdive.store RunRecords) on `split`: their stored analyses, or
    with `store`, the stored predictions of a run that has none.

    Neither is a RunError; runs that cannot be compared, a DeepdiveError. Rows index the examples table (the same
    images in both runs, checked); each group is sorted by the confidence of the run whose answer is wrong (A's for
    `fixed` and `both`, B's for `new`), most confident first.
    """
    if rec_a.id == rec_b.id:
        raise DeepdiveError(f"A and B are the same run ({rec_a.id}); compare needs two runs")
    fa, names_a, acc_a, errors_a, analysed_a, summary_a = _side(rec_a, split, store)
    fb, names_b, acc_b, errors_b, analysed_b, _ = _side(rec_b, split, store)
    if rec_a.dataset != rec_b.dataset:
        raise DeepdiveError(f"runs {rec_a.id} ({rec_a.dataset}) and {rec_b.id} ({rec_b.dataset}) are on different "
                       "datasets; compare needs two runs evaluated on the same images")
    if len(fa) != len(fb) or not (np.array_equal(fa["idx"], fb["idx"]) and np.array_equal(fa["true"], fb["true"])):
        other_rows = ", other rows" if len(fa) == len(fb) else ""
        raise DeepdiveError(f"runs {rec_a.id} and {rec_b.id} were evaluated on different images of the {split!r} "
                            f"split ({len(fa):,} and {len(fb):,} images{other_rows}); compare needs the same images, "
                            + ("e.g. two runs trained without --limit-test" if rec_a.model_arch != "pickled" else
                               "e.g. two models logged with log_evaluation on the same data"))
    if names_a != names_b:
        raise DeepdiveError(f"runs {rec_a.id} and {rec_b.id} name their classes differently")
    wrong_a, wrong_b = ~fa["correct"].to_numpy(bool), ~fb["correct"].to_numpy(bool)
    idx, true = fa["idx"].to_numpy(), fa["true"].to_numpy()
    pred_a, pred_b = fa["pred"].to_numpy(), fb["pred"].to_numpy()
    conf_a, conf_b = fa["confidence"].to_numpy(), fb["confidence"].to_numpy()

    def group(mask, conf):
        rows = np.flatnonzero(mask)
        rows = rows[np.lexsort((rows, -conf[rows]))]
        return {"rows": rows.tolist(), "idx": idx[rows].tolist(), "true": true[rows].tolist(),
                "pred_a": pred_a[rows].tolist(), "pred_b": pred_b[rows].tolist(),
                "confidence_a": np.round(conf_a[rows], 4).tolist(), "confidence_b": np.round(conf_b[rows], 4).tolist()}

    both = wrong_a & wrong_b
    paired = split_counts(int((wrong_a & ~wrong_b).sum()), int((~wrong_a & wrong_b).sum()))

    def run(rec, accuracy, errors, analysed):
        return {"id": rec.id, "name": rec.name, "recipe": rec.recipe_text, "accuracy": accuracy, "errors": errors,
                "analysed": analysed}

    return {"split": split, "n": len(fa), "class_names": names_a, "a": run(rec_a, acc_a, errors_a, analysed_a),
            "b": run(rec_b, acc_b, errors_b, analysed_b),
            "fixed": group(wrong_a & ~wrong_b, conf_a), "new": group(~wrong_a & wrong_b, conf_b),
            "both": group(both, conf_a), "both_same_prediction": int((both & (pred_a == pred_b)).sum()),
            "paired": paired, "verdict": verdict(paired), "slices": _slices(summary_a, fa, wrong_a, wrong_b),
            "robustness": _robustness(rec_a, rec_b, split) if analysed_a and analysed_b else []}


def _robustness(rec_a, rec_b, split) -> list[dict]:
    """Per kind of change (deepdive.analysis.robustness), on the pictures both runs read right among the ones both
    searches drew (the same sample in every run): how many the change flips up to its headline size in A and in B,
    those only A's or only B's flips, the paired test, and both runs' median size; the kinds both analyses searched
    (one written before slants and the pen has four). [] when either run's analysis has no robustness search."""
    from deepdive.analysis.robustness import FAMILIES, paired_sizes

    try:
        ta, tb = (AnalysisResult.load(rec.run_dir, split).robustness() for rec in (rec_a, rec_b))
    except RunError:
        return []
    out = []
    for family in FAMILIES:
        a, b = (t[(t["family"] == family.id) & ~t["mending"]].set_index("row")["size"] for t in (ta, tb))
        common = a.index.intersection(b.index)
        if not len(common):
            continue
        # "fixed": pictures A's change flips and B's does not; "new": the other way round
        out.append(paired_sizes(family, a.loc[common].to_numpy(), b.loc[common].to_numpy()))
    return out


def _slices(summary, frame, wrong_a, wrong_b) -> list[dict]:
    """A's strongest listed slices (the pictures' measures are the same in both runs: the same images), each with
    both runs' errors in it, what B fixed and added there and the paired test: did B mend where A failed most?"""
    from deepdive.analysis.slices import members

    entry = (summary or {}).get("slices") or {}
    if not entry.get("available"):
        return []
    out = []
    for item in entry["listed"][:SLICES]:
        column = f"img_{item['property']}"
        if column not in frame:
            return []
        inside = members(frame[column].to_numpy(np.float64), frame["true"].to_numpy(), item)
        fixed, new = int((inside & wrong_a & ~wrong_b).sum()), int((inside & ~wrong_a & wrong_b).sum())
        out.append({"description": item["description"], "found": item["found"], "images": int(inside.sum()),
                    "errors_a": int((inside & wrong_a).sum()), "errors_b": int((inside & wrong_b).sum()),
                    "paired": split_counts(fixed, new)})
    return out


def verdict(paired: dict, significance=0.05) -> str:
    """One line on what B changed, by the paired test on A's and B's errors."""
    fixed, new, p = paired["fixed"], paired["new"], paired["p_value"]
    counts = f"B fixes {fixed} of A's errors and makes {new} new (exact McNemar p = {p:.2g})"
    if p < significance:
        return f"{counts}: B is {'better' if fixed > new else 'worse'} on these images"
    return f"{counts}: no clear difference, within what retraining alone moves"


def text_summary(result: dict, limit=12) -> str:
    """The comparison as the CLI prints it: the two runs, the verdict, and the first images of each group."""
    names = result["class_names"]
    lines = []
    for key in ("a", "b"):
        r = result[key]
        lines.append(f"{key.upper()}: {r['name']} ({r['id']}, {r['recipe']}): {r['accuracy']:.2%}, "
                     f"{r['errors']} errors of {result['n']:,}"
                     + ("" if r.get("analysed", True) else " (not analysed: read from its stored predictions)"))
    lines.append(result["verdict"])
    lines.append(f"wrong in both: {len(result['both']['rows'])}, {result['both_same_prediction']} of them with the "
                 "same wrong answer")
    for s in result.get("slices", [])[:3]:     # where A fails most: did B mend it?
        p = s["paired"]
        lines.append(f"in A's slice {s['description']} ({s['images']:,} images): A {s['errors_a']} errors, B "
                     f"{s['errors_b']} ({p['fixed']} fixed, {p['new']} new, p = {p['p_value']:.2g})")
    for r in result.get("robustness", []):      # what fools each, on the same right answers
        from deepdive.analysis.robustness import size_text

        p = r["paired"]
        lines.append(f"a {r['label']} up to {size_text(r['unit'], r['headline'])} flips {r['flipped_a']} of "
                     f"{r['pictures']} right answers of both in A, {r['flipped_b']} in B ({p['fixed']} only in A, "
                     f"{p['new']} only in B, p = {p['p_value']:.2g})")
    # "#1232 9→4": the image, its label, the wrong answer (A's for fixed ones, B's for new ones, both for both)
    for key, title in (("fixed", "fixed by B"), ("new", "new in B"), ("both", "wrong in both")):
        g = result[key]
        shown = [f"#{i} {names[t]}→" + {"fixed": names[pa], "new": names[pb]}.get(
                     key, names[pa] if pa == pb else f"{names[pa]} (A) / {names[pb]} (B)")
                 for i, t, pa, pb in zip(g["idx"][:limit], g["true"], g["pred_a"], g["pred_b"])]
        more = len(g["rows"]) - limit
        if shown:
            lines.append(f"{title}: " + ", ".join(shown) + (f", and {more} more" if more > 0 else ""))
    return "\n".join(lines)
