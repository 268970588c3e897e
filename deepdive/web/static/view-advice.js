// Augmentation advice: what the robustness probes found, the ranked suggestions with their evidence, and the
// verification by retraining when `deepdive verify-advice` has run.
"use strict";
(function (DD) {
  const el = DD.el;
  const pct = (x) => DD.fmt.pct(x, 1);

  // digits: decimals of a pp delta; as many as the accuracies beside it show, or 99.71% → 99.70% reads "-0.0 pp".
  function delta(before, after, asPct, lowerIsBetter, digits = 1) {
    const d = after - before;
    const better = lowerIsBetter ? d < 0 : d > 0;
    const text = asPct ? `${d >= 0 ? "+" : ""}${(100 * d).toFixed(digits)} pp` : `${d >= 0 ? "+" : ""}${d}`;
    return el("span", {class: d === 0 ? "muted" : better ? "ok" : "bad", text});
  }

  function overridesText(overrides) {
    const aug = (overrides || {}).augment || {};
    return Object.entries(aug).map(([k, v]) => `${k}=${v}`).join(", ");
  }

  // Each image its probes break (right unchanged, wrong perturbed) beside itself as perturbed, the suggestion's
  // rising confusions first (deepdive.analysis.advice.broken_examples). A click on the original opens its detail.
  function brokenStrip(ctx, s) {
    const examples = s.examples || [];
    if (!examples.length) return null;
    const pictures = ctx.b.advice_pictures || [];
    return el("div", {class: "broken", attrs: {"data-testid": "advice-examples"}},
      el("div", {class: "tool-label", text: `Images its probes break, as probed: ${examples.length} of ` +
                                            `${DD.fmt.int(s.broken)}`}),
      el("div", {class: "broken-strip"}, examples.map((e) => el("figure", {class: "broken-pair", dataset: {row: e.row}},
        DD.thumb(ctx, e.row, 44),
        el("span", {class: "muted", text: "→"}),
        el("img", {class: "broken-img", src: pictures[e.image], width: 44, height: 44,
                   alt: `#${ctx.col.idx[e.row]} ${e.label}`}),
        el("figcaption", {class: "small"},
          el("span", {class: "strong", text: `${ctx.className(ctx.col.true[e.row])} → ${ctx.className(e.pred)}`}),
          el("span", {class: "muted", text: ` ${e.label}`}))))));
  }

  function suggestion(ctx, s) {
    const ev = s.evidence || {};
    const pairs = (ev.pairs || []).slice(0, 6);
    return el("div", {class: "advice-item", attrs: {"data-testid": "advice-item"}},
      el("h3", {}, el("span", {class: "advice-rank", text: s.rank}), s.title,
         s.in_recipe ? el("span", {class: "pill muted-pill", text: "already in the recipe"}) : null),
      el("p", {class: "note", text: s.text}),
      el("dl", {class: "kv"},
        el("dt", {text: "training override"}), el("dd", {class: "mono", text: `augment: ${overridesText(s.overrides)}`}),
        el("dt", {text: "score"}), el("dd", {text: DD.fmt.num(s.score, 3)}),
        ev.accuracy ? [el("dt", {text: "accuracy under the perturbation"}),
                       el("dd", {}, `${pct(ev.accuracy.before)} → ${pct(ev.accuracy.after)} `, delta(ev.accuracy.before, ev.accuracy.after, true))] : null,
        el("dt", {text: "probed images"}), el("dd", {text: `${DD.fmt.int(ev.n)}${ev.sampled ? " (class-stratified sample)" : ""}`})),
      pairs.length ? el("table", {class: "grid compact"},
        el("thead", {}, el("tr", {}, ["confusion", "before", "after", "of", "worst probe"].map((h) => el("th", {text: h})))),
        el("tbody", {}, pairs.map((p) => el("tr", {},
          el("td", {class: "strong", text: `${ctx.className(p.true)} → ${ctx.className(p.pred)}`}),
          el("td", {class: "num", text: p.before}),
          el("td", {class: "num"}, `${p.after} `, delta(p.before, p.after, false, true)),
          el("td", {class: "num muted", text: p.n_true}),
          el("td", {class: "mono", text: p.worst_probe}))))) : null,
      sliceEvidence(ctx, s),
      brokenStrip(ctx, s));
  }

  // What the test images themselves say (Slices view): the slices this augmentation trains toward, found ones first.
  function sliceEvidence(ctx, s) {
    if (!DD.slicesOf(ctx)) return null;
    const agree = DD.slicesFor(ctx, s), found = agree.filter((item) => item.found);
    const shown = agree.slice(0, 3);
    return el("p", {class: "note small", attrs: {"data-testid": "advice-slices"}, text: !agree.length ?
      "No listed slice of the test pictures points this way." :
      `The test pictures ${found.length ? "agree" : "lean this way, not significantly"}: ` + shown.map((item) =>
        `${DD.sliceText(ctx, DD.slicesOf(ctx), item)}, ${DD.fmt.int(item.errors)} of ${DD.fmt.int(item.images)} ` +
        `wrong (${DD.fmt.pct(item.rate, 1)} against ${DD.fmt.pct(item.rest_rate, 1)})`).join("; ") +
      (agree.length > shown.length ? `; ${agree.length - shown.length} more in the Slices view.` : ".")});
  }

  function probes(ctx, pr) {
    const list = pr.perturbations || [];
    const base = list.find((p) => p.id === "none") || list[0];
    return DD.section(`Robustness probes (${DD.fmt.int(pr.n)} ${pr.sampled ? "sampled " : ""}images)`,
      el("table", {class: "grid", attrs: {"data-testid": "probes"}},
        el("thead", {}, el("tr", {}, ["perturbation", "accuracy", "", "vs unchanged", "worst class"].map((h) => el("th", {text: h})))),
        el("tbody", {}, list.map((p) => {
          const worst = (p.per_class_accuracy || []).reduce((w, a, c) => (a !== null && (w === null || a < p.per_class_accuracy[w]) ? c : w), null);
          return el("tr", {},
            el("td", {text: p.label}),
            el("td", {class: "num", text: pct(p.accuracy)}),
            el("td", {}, el("span", {class: "acc-track inline"}, el("span", {class: "acc-fill", style: {width: p.accuracy * 100 + "%"}}))),
            el("td", {class: "num"}, p === base ? el("span", {class: "muted", text: "–"}) : delta(base.accuracy, p.accuracy, true)),
            el("td", {text: worst === null ? "–" : `${ctx.className(worst)} (${pct(p.per_class_accuracy[worst])})`}));
        }))),
      pr.note ? DD.note(pr.note, "muted") : null);
  }

  // Fixed vs new images and the exact McNemar p-value (deepdive.analysis.advice.paired_changes); reports written
  // before that existed have no "paired" block and show without it.
  function pairedText(what, c) {
    return `${what}: ${c.fixed} fixed, ${c.new} new (p ${pText(c.p_value)})`;
  }
  // a p-value as stored (4 decimals): "< 0.0001" where that rounds it to 0
  const pText = (p) => (p < 0.0001 ? "< 0.0001" : `= ${Number(p.toPrecision(2))}`);

  // One row per seed of a `verify-advice --seeds N` report: the recipe without and with the suggestion.
  function seedTable(v) {
    return el("table", {class: "grid compact", attrs: {"data-testid": "verification-seeds"}},
      el("thead", {}, el("tr", {}, ["seed", "without", "with", "", "errors", "changed images", "runs"].map((h) => el("th", {text: h})))),
      el("tbody", {}, v.seeds.map((x) => el("tr", {},
        el("td", {class: "num", text: x.seed}),
        el("td", {class: "num", text: DD.fmt.pct(x.accuracy.before, 2)}),
        el("td", {class: "num", text: DD.fmt.pct(x.accuracy.after, 2)}),
        el("td", {class: "num"}, delta(x.accuracy.before, x.accuracy.after, true, false, 2)),
        el("td", {class: "num"}, `${x.errors.before} → ${x.errors.after}`),
        el("td", {class: "num", text: `${x.paired.errors.fixed} fixed, ${x.paired.errors.new} new`}),
        el("td", {class: "mono muted", text: `${x.baseline_run_id} · ${x.retrained_run_id}`})))));
  }

  function verification(ctx, v) {
    const k = (v.seeds || []).length;
    const over = k > 1 ? `, mean of ${k} seeds` : "";
    const digits = k > 1 ? 3 : 2;   // a mean of several seeds lands between the 0.01 pp steps of one run
    return el("div", {attrs: {"data-testid": "verification"}},
      el("p", {class: "insight hint"}, el("span", {class: "strong", text: v.verdict})),
      el("dl", {class: "kv"},
        el("dt", {text: "suggestion"}), el("dd", {text: `${v.suggestion.title} (augment: ${overridesText(v.suggestion.overrides)})`}),
        el("dt", {text: k > 1 ? "retrained run (first seed)" : "retrained run"}),
        el("dd", {}, el("span", {class: "mono", text: `${v.retrained_run_name} · ${v.retrained_run_id}`}),
          // the served dashboard sets the two runs' mistakes side by side (a report holds one run)
          ctx.source.mode === "served" ? el("a", {class: "more", attrs: {"data-testid": "verification-compare"},
            href: `${DD.viewHref(ctx, "compare")}/${encodeURIComponent(v.retrained_run_id)}`,
            text: " the images it fixed and broke →"}) : null),
        el("dt", {text: `accuracy (${v.split}${over})`}),
        el("dd", {attrs: {"data-testid": "verification-accuracy"}}, `${DD.fmt.pct(v.accuracy.before, digits)} → ` +
           `${DD.fmt.pct(v.accuracy.after, digits)} `, delta(v.accuracy.before, v.accuracy.after, true, false, digits)),
        el("dt", {text: k > 1 ? `errors (sum of ${k} seeds)` : "errors"}),
        el("dd", {}, `${v.errors.before} → ${v.errors.after} `, delta(v.errors.before, v.errors.after, false, true)),
        el("dt", {text: k > 1 ? `targeted confusions (sum of ${k} seeds)` : "targeted confusions"}),
        el("dd", {}, `${v.targeted_total.before} → ${v.targeted_total.after} `, delta(v.targeted_total.before, v.targeted_total.after, false, true)),
        v.paired ? el("dt", {text: "images that changed"}) : null,
        v.paired ? el("dd", {attrs: {"data-testid": "verification-paired"}}, pairedText("targeted", v.paired.targeted) +
                      " · " + pairedText("all errors", v.paired.errors)) : null,
        (v.robustness || []).map((f) => [el("dt", {text: `what it trains against`}),
          el("dd", {attrs: {"data-testid": "verification-robustness"}, text: `a ${f.label} up to ` +
            `${DD.sizeText(f, f.headline)} flips ${f.flipped_before} of ${f.pictures} right answers (of both) ` +
            `before, ${f.flipped_after} after: ${f.paired.fixed} held now, ${f.paired.new} flipped now ` +
            `(p ${pText(f.paired.p_value)}); median ${f.label} to flip ` +
            `${DD.medianSizeText(f, f.median_before)} → ${DD.medianSizeText(f, f.median_after)}`})]),
        el("dt", {text: "retraining time"}), el("dd", {text: DD.fmt.secs(v.retrain_seconds)})),
      k > 1 ? seedTable(v) : null,
      v.note ? DD.note(v.note, "muted") : null);
  }

  DD.views.advice = {
    title: "Advice", icon: "✚",
    render(root, ctx) {
      const advice = ctx.b.advice;
      if (!advice) {
        root.appendChild(DD.note("This analysis has no augmentation advice (the model could not be loaded for the " +
                                 "robustness probes).", "error"));
        return;
      }
      const items = advice.suggestions || [];
      root.appendChild(DD.section("Suggested augmentations, strongest evidence first",
        items.length ? items.map((s) => suggestion(ctx, s)) : DD.note("The probes found no weakness an augmentation would address.")));
      const ver = ctx.b.verification;
      root.appendChild(DD.section("Verification by retraining", ver ? verification(ctx, ver)
        : DD.note(`Not verified yet. Retrain with the top suggestion (same seed and budget) and compare: ` +
                  `deepdive verify-advice ${ctx.b.run.id} (add --seeds 3 to compare at three seeds)`, "muted")));
      if (advice.probes) root.appendChild(probes(ctx, advice.probes));
    },
  };
})(window.DD);
