"""Subcommands analyze, export and verify-advice. Heavy imports happen inside the commands."""
import contextlib
import json
import sys

from deepdive.paths import DEFAULT_WORKSPACE
from deepdive.train.cli import int_at_least

# a static copy of export.TABLES + export.RUN_TABLES (tests check they agree), so --help imports no pandas
TABLES = ("predictions", "per-class", "confusion", "label-issues", "errors", "reviews", "tags", "neighbours",
          "duplicates", "slices", "influence", "robustness", "calibration", "pr-curves", "channels", "dynamics",
          "epochs", "steps", "histograms")


def register(subparsers):
    p = subparsers.add_parser(
        "analyze", help="analyse a run's mistakes (tables, label issues, saliency, activations, advice)",
        description="Analyse a finished run on its test (or validation) split and store the results in the run "
                    "folder and the workspace database. With --label-issues train, instead retrain the run's "
                    "recipe K times on K-1 folds of its training data and find likely mislabeled training "
                    "examples from the out-of-fold probabilities (slow: K trainings).")
    p.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    p.add_argument("--split", choices=("test", "val"), default="test", help="split to analyse (default: test)")
    p.add_argument("--label-issues", choices=("train",), dest="label_issues",
                   help="find label issues in the training split by K-fold cross-validation")
    p.add_argument("--folds", type=int_at_least(2), default=5, metavar="K", help="folds for --label-issues train (default 5)")
    p.add_argument("--robustness-sample", type=int_at_least(0), default=500, metavar="N", dest="robustness_sample",
                   help="test pictures drawn (class-stratified) for what fools the model: their right answers are "
                        "turned, shifted, zoomed, slanted, thickened and thinned, and attacked; 0 skips it "
                        "(default 500, ~10 s on a 2-core CPU)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="where runs are stored (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    p.set_defaults(func=cmd_analyze)

    p = subparsers.add_parser(
        "export", help="write an analysis table (or the run's epochs or steps) to CSV or Parquet",
        description=f"Write one table of a run's analysis to a file. Tables: {', '.join(TABLES)} (epochs: the "
                    "training curves and every other metric logged per epoch; steps: what was logged per "
                    "training step; for these two the run need not be analysed).")
    p.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    p.add_argument("table", help=f"one of: {', '.join(TABLES)}")
    p.add_argument("--format", choices=("csv", "parquet"), help="file format (default: from the --out suffix)")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write (replaced atomically)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "compare", help="compare two runs' mistakes on the same images",
        description="Which of run A's errors run B fixes, which errors B adds and which both make, with the "
                    "paired exact McNemar test on the images that changed (two seeds of one recipe already "
                    "differ on ~16 of ~30 MNIST errors). Each run is read from its analysis of the split, else "
                    "from its stored predictions (every finished run has them on the test split); both on the "
                    "same images. The dashboard's Compare view shows the same with the images.")
    p.add_argument("run_a", metavar="A", help="run id, unique id prefix, run name, or 'latest'")
    p.add_argument("run_b", metavar="B", help="the run to compare A with")
    p.add_argument("--split", choices=("test", "val"), default="test", help="split (default: test)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON on the last stdout line")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "verify-advice", help="retrain with the top suggestion and compare against the run",
        description="Check the analysis' top suggestion (or the one named) by retraining the run's recipe with "
                    "the same seed and budget plus the suggested change, and comparing test accuracy and errors. "
                    "With --seeds N, also at the N-1 seeds after the run's, each against the recipe without the "
                    "change at that seed (2N-1 trainings; runs of an earlier verification are reused).")
    p.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    p.add_argument("--suggestion", help="id of the suggestion to verify (default: the top-ranked one)")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds to compare at, from the run's own (default 1; retraining noise on MNIST is about "
                        "as large as an augmentation's effect, so 3-4 tell more than one)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last stdout line")
    p.set_defaults(func=cmd_verify_advice)


def cmd_analyze(args) -> int:
    from deepdive.analysis import analyze
    from deepdive.store import Store

    split = "train" if args.label_issues == "train" else args.split
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with Store.open(args.workspace, create=False) as store, quiet:
        run = store.get_run(args.run)
        summary = analyze(store, run.id, split, progress=True, folds=args.folds,
                          robustness_sample=args.robustness_sample)
    if args.json:
        print(json.dumps(json_summary(summary)))
    else:
        print(text_summary(summary, args.workspace))
    return 0


def json_summary(summary: dict) -> dict:
    return {
        "run_id": summary["run_id"], "split": summary["split"], "n": summary["n"],
        "accuracy": summary["accuracy"], "error_count": summary["error_count"],
        "top_confusions": [{k: t[k] for k in ("true", "pred", "true_name", "pred_name", "count")}
                           for t in summary["top_confusions"][:5]],
        "label_issues": summary["label_issues"]["count"],
        "taxonomy": summary["taxonomy"]["total"],
        "neighbours": (summary.get("neighbours") or {}).get("errors"),
        "atypical": {k: v for k, v in ((summary.get("neighbours") or {}).get("atypical") or {}).items()
                     if k in ("count", "errors", "fence")} or None,
        "duplicates": duplicate_counts(summary.get("duplicates") or {}),
        "slices": slice_counts(summary.get("slices") or {}),
        "influence": influence_counts(summary.get("influence") or {}),
        "robustness": robustness_counts(summary.get("robustness") or {}),
        "calibration_error": (summary.get("confidence") or {}).get("ece"),
        "top_k_accuracy": {str(t["k"]): t["accuracy"] for t in (summary.get("ranking") or {}).get("top_k", [])},
        "saliency_sanity": ((summary.get("saliency") or {}).get("sanity") or {}).get("rank_correlation"),
        "stage_seconds": summary["stage_seconds"], "total_seconds": summary["total_seconds"],
    }


def duplicate_counts(d: dict) -> dict | None:
    """The near-duplicates' counts (deepdive.analysis.duplicates), without the listed rows."""
    if not d.get("available"):
        return None
    return {"of_train": {k: v for k, v in d["train"].items() if k != "listed"},
            "in_split": {k: v for k, v in d["split"].items() if k != "listed"} if d.get("split") else None,
            "similarity_cut": d["similarity_cut"]}


def duplicate_lines(d: dict, split: str) -> list[str]:
    """Near-duplicates in one line: of the training images, then within the split."""
    if not d.get("available"):
        return []
    t, s = d["train"], d.get("split")
    line = (f"near-duplicates in pixels (cosine >= {d['similarity_cut']:.4f}): {t['count']:,} of a training image, "
            f"{t['conflicts']} under another label")
    if t["count"] and t["accuracy_rest"] is not None and split == "test":
        line += f"; accuracy on them {t['accuracy_duplicates']:.2%}, on the rest {t['accuracy_rest']:.2%}"
    if s:
        pairs = "pair" if s["pairs_total"] == 1 else "pairs"
        line += f"; {s['pairs_total']:,} {pairs} within the split, {s['conflicts']} under two labels"
    return [line + " (deepdive export RUN duplicates)"]


def slice_counts(d: dict) -> dict | None:
    """The slices' counts and the strongest (deepdive.analysis.slices), without the rest of the listing."""
    from deepdive.analysis.slices import measure_findings

    if not d.get("available"):
        return None
    top = d["listed"][0] if d["listed"] else None
    return {"tested": d["tested"], "found": d["found"], "fdr": d["fdr"], "measures": measure_findings(d),
            "strongest": {k: top[k] for k in ("description", "images", "errors", "rate", "rest_rate", "p", "q")}
            if top else None}


def slice_lines(d: dict) -> list[str]:
    """The slices in a few lines: how many of those tried hold more errors than chance, how the errors differ by the
    measures, and the strongest slice."""
    from deepdive.analysis.slices import measure_findings

    if not d.get("available"):
        return []
    lines = [f"slices (tails of {len(d['properties'])} measures of the pictures, within each class): "
             f"{d['found']} of {d['tested']:,} tried hold more errors than the rest of their class(es) at FDR "
             f"{d['fdr']:.0%} (deepdive export RUN slices)"]
    findings = measure_findings(d)
    if findings:
        lines.append("  errors, against right answers: " + "; ".join(findings))
    if d["listed"]:
        t = d["listed"][0]
        verdict = "found" if t["found"] else "not significant after the correction"
        lines.append(f"  strongest: {t['description']}: {t['errors']} of {t['images']:,} wrong ({t['rate']:.1%}) "
                     f"against {t['rest_rate']:.1%} of the rest; p {t['p']:.2g}, q {t['q']:.2g} ({verdict})")
    return lines


def confidence_lines(c: dict) -> list[str]:
    """The calibration in one line, and how many errors checking the least trusted 1% of the images finds."""
    if not c.get("available"):
        return []
    t = c.get("temperature")
    scaled = (f"; a temperature of {t['value']:.2f} brings it to {t['ece']:.1%} out of sample"
              if t and t["value"] != 1.0 else "")
    lines = [f"confidence: mean {c['mean_confidence']:.3f} at {c['accuracy']:.2%} accuracy, calibration error (ECE) "
             f"{c['ece']:.1%}{scaled}"]
    if c["errors"]:
        found = ", ".join(f"by {name} {sig['caught']['0.01']}" for name, sig in c["signals"].items())
        lines.append(f"checking the 1% least trusted images finds, of {c['errors']} errors: {found}")
    return lines


def ranking_lines(r: dict, errors: int, n: int) -> list[str]:
    """Top-k accuracy up to the first k that gets every image, how many errors have the right class as their
    runner-up, and the mean AP."""
    top = [(t["k"], t["accuracy"]) for t in r.get("top_k", [])]
    if len(top) < 2:
        return []
    shown = [top[1]]
    for k, acc in top[2:]:
        if shown[-1][1] >= 1.0:
            break
        shown.append((k, acc))
    second = errors - round((1 - top[1][1]) * n)
    who = f"all {errors} errors have" if second == errors else f"{second} of the {errors} errors have"
    ks = ", ".join(f"top-{k} {acc:.2%}" for k, acc in shown)
    ap = f"; mean average precision over the classes {r['mean_ap']:.4f}" if r.get("mean_ap") is not None else ""
    return [f"ranking: {ks} ({who} the right class second){ap}"]


def sanity_lines(sanity: dict) -> list[str]:
    """How alike each saliency method's maps stay when the model's weights are shuffled (the sanity check)."""
    rho = {m: r for m, r in (sanity.get("rank_correlation") or {}).items() if r is not None}
    if not sanity.get("available") or not rho or sanity.get("alike_at") is None:
        return []
    alike = [m for m, r in rho.items() if r >= sanity["alike_at"]]
    verdict = (f"{', '.join(alike)} stay{'s' if len(alike) == 1 else ''} alike: they draw the image more "
               "than the model" if alike else "every method's maps change with the weights")
    return ["saliency with shuffled weights (Spearman rho of |attribution|, 1 = unchanged): "
            + ", ".join(f"{m} {r:.2f}" for m, r in rho.items()) + f"; {verdict}"]


def channel_lines(ch: dict, names, errors: int) -> list[str]:
    """Which channels of the last feature map most often carry an error's answer (deepdive.analysis.channels)."""
    if not ch.get("available") or not ch.get("leading"):
        return []
    weighed = "errors" if ch["errors"] >= errors else f"{ch['errors']} most confident errors"
    lead = ", ".join(f"channel {c['channel']} leads {c['errors']} error{'s' * (c['errors'] != 1)} "
                     f"(fires most for {names[c['top_class']]}, {c['share']:.0%})" for c in ch["leading"])
    share = "" if ch.get("completeness") is None else \
        f"; they carry {ch['completeness']:.0%} of the errors' score gaps"
    return [f"features behind the {weighed} ({ch['layer']}, {ch['channels']} channels{share}): {lead}"]


def influence_counts(inf: dict) -> dict | None:
    """How many errors were weighed and the five training images behind the most (deepdive.analysis.influence)."""
    return {"errors": inf["errors"], "behind": inf.get("behind", [])[:5]} if inf.get("available") else None


def influence_lines(inf: dict, names, errors: int) -> list[str]:
    """The training images behind the most errors (deepdive.analysis.influence)."""
    if not inf.get("available") or not inf.get("behind"):
        return []
    weighed = "errors" if inf["errors"] >= errors else f"{inf['errors']} most confident errors"
    top = ", ".join(f"#{i} (labelled {names[label]}{', its label in doubt' if doubt else ''}) behind {n}"
                    for i, label, n, _, doubt in inf["behind"][:3])
    doubted = (f"; {sum(b[4] for b in inf['behind'])} of the {len(inf['behind'])} listed carry a label the training "
               "doubted" if inf.get("doubts_known") else "")
    return [f"training images behind the {weighed} (TracIn, their {inf['k']} most against each label): {top}"
            f"{doubted} (deepdive export RUN influence)"]


def robustness_counts(rob: dict) -> dict | None:
    """Per family: the share of right answers its headline size flips, the median size, the errors made right."""
    if not rob.get("available"):
        return None
    return {"right_answers_tried": rob["n"], "errors_tried": rob["errors"], **{
        f["id"]: {"headline": f["headline"], "flipped_at_headline": f["headline_flipped"], "median": f["median"],
                  "errors_made_right": f["errors"]["mended"], "errors_median": f["errors"]["median"]}
        for f in rob["families"]}}


def robustness_lines(rob: dict) -> list[str]:
    """What still fools the model, and how near the errors are to right (deepdive.analysis.robustness)."""
    if not rob.get("available"):
        return []
    fam = {f["id"]: f for f in rob["families"]}
    if rob["n"]:
        flips = ", ".join(f"{f['label']} up to {_size(f, f['headline'])} {f['headline_flipped']:.1%}"
                          for f in rob["families"])
        lines = [f"what fools it ({rob['n']} right answers tried): {flips} of them"]
    else:
        lines = [f"what fools it: no right answer among the {rob.get('drawn', 0)} pictures drawn to try"]
    adv = fam.get("adversarial")
    if adv and adv["median"] is not None:
        line = f"the smallest invisible change that fools it: median {_size(adv, adv['median'])}"
        if adv.get("error_pairs") and adv["flipped"]:
            line += (f"; {adv['into_error_pairs']} of its {adv['flipped']} flips land on the {adv['error_pairs']} "
                     f"class pairs the test errors fall on ({adv['into_error_pairs_chance']:.0f} by chance)")
        if rob["errors"]:
            e = adv["errors"]
            near = "" if e["median"] is None else f", median {_size(adv, e['median'])}"
            line += f"; {e['mended']} of {rob['errors']} errors made right by one{near}"
        lines.append(line + " (deepdive export RUN robustness)")
    return lines


def _size(family: dict, size: float) -> str:
    from deepdive.analysis.robustness import size_text     # (torch: only once there is something to say)

    return size_text(family["unit"], size)


def dynamics_lines(dyn: dict, names) -> list[str]:
    """What the training dynamics say about the training images (deepdive.analysis.dynamics)."""
    if not dyn.get("available"):
        return []
    r, t = dyn["regions"], dyn["thresholds"]
    line = (f"training dynamics of {dyn['images']:,} training images over {dyn['epochs']} epochs: {r['easy']:,} easy, "
            f"{r['ambiguous']:,} ambiguous (their label's probability swung by >= {t['ambiguous_variability']}), "
            f"{r['hard']:,} hard to learn (mean probability < {t['hard_confidence']}); {dyn['negative_aum']:,} with "
            f"a negative area under the margin (labels in doubt: the likeliest label errors lowest), "
            f"{dyn['forgotten']:,} forgotten at least once, "
            f"{dyn['never_learned']:,} never learned for good")
    lines = [line]
    if dyn.get("lowest"):
        lines.append("lowest area under the margin (export them all: deepdive export RUN dynamics): " + ", ".join(
            f"#{t['idx']} labelled {names[t['given']]}" + (f", taken for {names[t['leaning']]}" if t["leaning"] >= 0
                                                          else "") for t in dyn["lowest"][:5]))
    cl = dyn.get("cleanlab")
    if cl:
        lines.append(f"cleanlab's {cl['flagged']} training label issues: {cl['both']} of them with a negative AUM too")
    return lines


def text_summary(summary: dict, workspace) -> str:
    s = summary
    lines = [f"run {s['run_id']}, {s['split']} split: accuracy {s['accuracy']:.2%} ({s['error_count']} errors "
             f"of {s['n']})"]
    lines.extend(ranking_lines(s.get("ranking") or {}, s["error_count"], s["n"]))
    if s["top_confusions"]:
        pairs = ", ".join(f"{t['true_name']}→{t['pred_name']} ×{t['count']}" for t in s["top_confusions"][:5])
        lines.append(f"top confusions (true→predicted): {pairs}")
    lines.append(f"likely label issues: {s['label_issues']['count']} (from {s['label_issues']['source']})")
    lines.append("errors by cause: " + ", ".join(f"{k} {v}" for k, v in s["taxonomy"]["total"].items()))
    nb = s.get("neighbours") or {}
    if nb.get("available") and s["error_count"]:
        e = nb["errors"]
        lines.append(f"errors among their {nb['k']} nearest training images: {e['prediction']} mostly labelled as "
                     f"predicted, {e['label']} mostly as their label, {e['mixed']} mixed (a neighbour vote gets "
                     f"{nb['knn_accuracy']:.2%} right)")
    a = nb.get("atypical") or {}
    if a.get("available"):
        lines.append(f"atypical images (farther from the training images than their own outlier fence): {a['count']:,}"
                     f", holding {a['errors']} of the {a['total_errors']} errors (sort: the dashboard's predictions, "
                     "most atypical first)")
    lines.extend(duplicate_lines(s.get("duplicates") or {}, s["split"]))
    lines.extend(slice_lines(s.get("slices") or {}))
    lines.extend(confidence_lines(s.get("confidence") or {}))
    lines.extend(sanity_lines((s.get("saliency") or {}).get("sanity") or {}))
    lines.extend(channel_lines(s.get("channels") or {}, s["class_names"], s["error_count"]))
    lines.extend(influence_lines(s.get("influence") or {}, s["class_names"], s["error_count"]))
    lines.extend(robustness_lines(s.get("robustness") or {}))
    lines.extend(dynamics_lines(s.get("dynamics") or {}, s["class_names"]))
    hint = s.get("insight")
    if hint and hint["epochs_saved"]:
        saved = f"{hint['seconds_saved']:.0f} s ({hint['fraction_saved']:.0%})"
        if hint.get("members"):
            at = ", ".join(f"{m['earliest_member_epoch']}/{m['member_epochs']}" for m in hint["members"])
            lines.append(f"training: each of the {len(hint['members'])} ensemble members' val accuracy stayed within "
                         f"{hint['tolerance_pp']} pp of its best from epoch {at} on; stopping each there would have "
                         f"saved {saved}")
        else:
            lines.append(f"training: val accuracy stayed within {hint['tolerance_pp']} pp of its best from epoch "
                         f"{hint['earliest_epoch']} of {hint['epochs_total']} on; stopping there would have saved "
                         f"{saved}")
    from deepdive.analysis.slices import backing

    for suggestion in (s.get("advice") or [])[:3]:
        line = f"suggestion: {suggestion.get('title') or suggestion.get('id') or suggestion}"
        if (s.get("slices") or {}).get("available"):     # what the test pictures say (deepdive.analysis.slices)
            agree = backing(s["slices"], suggestion)
            if not agree:
                line += " (no slice of the pictures behind it)"
            else:
                more = " and more" if len(agree) > 1 else ""
                line += (f" (slices behind it: {agree[0]['description']}{more}"
                         f"{'' if agree[0]['found'] else ', not significant'})")
        lines.append(line)
    for note in s.get("notes") or []:
        lines.append(f"note: {note}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in s["stage_seconds"].items())
    lines.append(f"took {s['total_seconds']:.1f} s ({stages})")
    lines.append(f"browse: deepdive serve {workspace}   export: deepdive export {s['run_id']} errors "
                 f"--out errors.csv --workspace {workspace}")
    return "\n".join(lines)


def cmd_compare(args) -> int:
    from deepdive.analysis.compare import compare_runs, text_summary
    from deepdive.store import Store

    with Store.open(args.workspace, create=False) as store:
        a, b = store.get_run(args.run_a), store.get_run(args.run_b)
        result = compare_runs(a, b, args.split, store=store)
    print(json.dumps(result) if args.json else text_summary(result))
    return 0


def cmd_export(args) -> int:
    from deepdive.analysis.export import RUN_TABLES, export_table, run_table, store_part, write_frame
    from deepdive.analysis.results import AnalysisResult
    from deepdive.errors import DeepdiveError
    from deepdive.store import Store

    if args.table not in TABLES:
        raise DeepdiveError(f"unknown table {args.table!r}; valid tables: {', '.join(TABLES)}")
    with Store.open(args.workspace, create=False) as store:
        run = store.get_run(args.run)
        if args.table in RUN_TABLES:
            path = write_frame(run_table(store, run.id, args.table), args.out, args.format)
            print(f"wrote {args.table} of run {run.id} to {path}")
            return 0
        result = AnalysisResult.load(run.run_dir, args.split)
        reviews = store_part(store, run, result, args.table)
    path = export_table(result, args.table, args.out, args.format, reviews)
    print(f"wrote {args.table} of run {run.id} ({args.split}) to {path}")
    return 0


def cmd_verify_advice(args) -> int:
    from deepdive.analysis.advice import verify_advice
    from deepdive.store import Store

    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with Store.open(args.workspace, create=False) as store, quiet:
        run = store.get_run(args.run)
        result = verify_advice(store, run.id, suggestion=args.suggestion, progress=True, seeds=args.seeds)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(verification_text(result, args.workspace))
    return 0


def _median_text(family: dict, size) -> str:
    return "beyond the largest tried" if size is None else _size(family, size)


def _p_text(p: float) -> str:
    """A p-value as stored (4 decimals): "< 0.0001" where that rounds it to 0."""
    return "< 0.0001" if p < 0.0001 else f"= {p:.2g}"


def verification_text(report: dict, workspace) -> str:
    r, acc = report, report["accuracy"]
    seeds = r.get("seeds") or []
    pairs = "; ".join(f"{t['true']} as {t['pred']}: {t['before']}→{t['after']}" for t in r["targeted_confusions"])
    if len(seeds) > 1:
        trained = sum(x["baseline_trained"] + x["retrained"] for x in seeds)
        lines = [f"suggestion {r['suggestion']['id']} ({r['suggestion']['title']}) at seeds {seeds[0]['seed']}-"
                 f"{seeds[-1]['seed']}: {trained} runs trained in {r['retrain_seconds']:.0f} s, "
                 f"{2 * len(seeds) - 1 - trained} reused"]
        lines += [f"  seed {x['seed']}: {x['accuracy']['before']:.2%} → {x['accuracy']['after']:.2%} "
                  f"({100 * x['accuracy']['delta']:+.2f} pp), errors {x['errors']['before']} → {x['errors']['after']}"
                  f"  [{x['baseline_run_id']} vs {x['retrained_run_name']} {x['retrained_run_id']}]" for x in seeds]
        lines += [f"{r['split']} accuracy, mean of {len(seeds)} seeds: {acc['before']:.3%} → {acc['after']:.3%} "
                  f"({100 * acc['delta']:+.3f} pp); errors over all seeds {r['errors']['before']} → "
                  f"{r['errors']['after']}"]
    else:
        how = (f"reused {r['retrained_run_name']} ({r['retrained_run_id']}) from an earlier verification"
               if seeds and not seeds[0]["retrained"] else
               f"retrained as {r['retrained_run_name']} ({r['retrained_run_id']}) in {r['retrain_seconds']:.0f} s")
        lines = [f"suggestion {r['suggestion']['id']} ({r['suggestion']['title']}): {how}",
                 f"{r['split']} accuracy {acc['before']:.2%} → {acc['after']:.2%} ({100 * acc['delta']:+.2f} pp), "
                 f"errors {r['errors']['before']} → {r['errors']['after']}"]
    for f in r.get("robustness") or []:      # what the augmentation trains against, before and after
        p = f["paired"]
        lines.append(f"a {f['label']} up to {_size(f, f['headline'])} flips {f['flipped_before']} of "
                     f"{f['pictures']} right answers of both before, {f['flipped_after']} after ({p['fixed']} "
                     f"held now, {p['new']} flipped now, p {_p_text(p['p_value'])}); median {f['label']} to flip "
                     f"{_median_text(f, f['median_before'])} → {_median_text(f, f['median_after'])}")
    lines += [f"targeted confusions {r['targeted_total']['before']} → {r['targeted_total']['after']}"
              + (f" ({pairs})" if pairs else ""),
              f"verdict: {r['verdict']}",
              f"note: {r['note']}",
              f"image by image: deepdive compare {r['run_id']} {r['retrained_run_id']} --workspace {workspace}, "
              f"or deepdive serve {workspace} (the run's Advice view links there)"]
    return "\n".join(lines)
