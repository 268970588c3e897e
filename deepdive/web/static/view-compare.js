// Compare (served dashboard only: a report holds one run): this run's mistakes against another run's on the same
// images (its analysis, or its stored test predictions). Which of this run's errors the other fixes, which it
// adds, which both make, with the paired test that says whether the difference is more than retraining noise.
// The images are this run's thumbnails.
"use strict";
(function (DD) {
  const el = DD.el;

  // One group of images, each captioned "true→wrong answer": A's for "fixed", B's for "new", both for "both" (the
  // true class too, since on Fashion-MNIST a picture does not say it the way a digit does).
  function group(ctx, g, key, title, note) {
    const name = ctx.className;
    const caption = (k) => `${name(g.true[k])}→` + (key === "fixed" ? `${name(g.pred_a[k])} · ${DD.fmt.pct(g.confidence_a[k], 0)}`
      : key === "new" ? `${name(g.pred_b[k])} · ${DD.fmt.pct(g.confidence_b[k], 0)}`
      : g.pred_a[k] === g.pred_b[k] ? `${name(g.pred_a[k])} in both` : `${name(g.pred_a[k])} / ${name(g.pred_b[k])}`);
    const figs = g.rows.map((r, k) => DD.captioned(ctx, r, 48, caption(k)));
    return DD.section(`${title} (${DD.fmt.int(g.rows.length)})`, el("p", {class: "muted small", text: note}),
      el("div", {class: "thumb-row cmp-row", attrs: {"data-testid": `compare-${key}`}},
         figs.length ? figs : el("span", {class: "muted small", text: "none"})));
  }

  // This run's strongest slices (Slices view) in both runs: where A fails most, did B mend it? Same test as above,
  // on the slice's images.
  function slicesPanel(res) {
    if (!(res.slices || []).length) return null;
    return DD.section("Where this run fails most, in both runs",
      el("table", {class: "grid compact", attrs: {"data-testid": "compare-slices"}},
        el("thead", {}, el("tr", {}, ["this run's slice", "images", "errors A", "errors B", "fixed / new by B", "p"]
          .map((h) => el("th", {text: h})))),
        el("tbody", {}, res.slices.map((s) => el("tr", {},
          el("td", {}, el("span", {class: "pill " + (s.found ? "pill-found" : "muted"), text: s.found ? "found" : "lead"}),
             ` ${s.description}`),
          el("td", {class: "num", text: DD.fmt.int(s.images)}), el("td", {class: "num", text: DD.fmt.int(s.errors_a)}),
          el("td", {class: "num", text: DD.fmt.int(s.errors_b)}),
          el("td", {class: "num", text: `${s.paired.fixed} / ${s.paired.new}`}),
          el("td", {class: "num", text: DD.fmt.num(s.paired.p_value, 3)}))))),
      DD.note("p: exact McNemar on the slice's images that changed. A slice is this run's; the same images in B.",
              "muted"));
  }

  // What fools each run, on the right answers both searches tried (Robustness view): does B hold where A flips?
  function robustnessPanel(res) {
    if (!(res.robustness || []).length) return null;
    return DD.section("What fools each run",
      el("table", {class: "grid compact", attrs: {"data-testid": "compare-robustness"}},
        el("thead", {}, el("tr", {}, ["change", "right answers of both", "flipped in A", "flipped in B",
                                      "only in A / only in B", "p", "median size A / B"]
          .map((h) => el("th", {text: h})))),
        el("tbody", {}, res.robustness.map((r) => el("tr", {dataset: {family: r.id}},
          el("td", {text: `${r.label} up to ${DD.sizeText(r, r.headline)}`}),
          el("td", {class: "num", text: DD.fmt.int(r.pictures)}),
          el("td", {class: "num", text: DD.fmt.int(r.flipped_a)}),
          el("td", {class: "num", text: DD.fmt.int(r.flipped_b)}),
          el("td", {class: "num", text: `${r.paired.fixed} / ${r.paired.new}`}),
          el("td", {class: "num", text: DD.fmt.num(r.paired.p_value, 3)}),
          el("td", {class: "num", text: `${DD.medianSizeText(r, r.median_a)} / ${DD.medianSizeText(r, r.median_b)}`}))))),
      DD.note("The same sampled pictures in both runs, where both read them right; p: exact McNemar on those one run " +
              "flips and the other holds.", "muted"));
  }

  async function draw(box, ctx, otherId) {
    DD.clear(box).appendChild(DD.note("Comparing…"));
    let res;
    try {
      res = await ctx.source.compare(ctx.b.run.id, ctx.b.split, otherId);
    } catch (err) {
      DD.clear(box).appendChild(DD.note(`Could not compare: ${err.message}`, "error"));
      return;
    }
    if (ctx.state.compareWith !== otherId) return;   // another run was picked meanwhile
    const a = res.a, b = res.b;
    const line = (r, label) => el("div", {class: "cmp-run"}, el("span", {class: "pill", text: label}),
      el("strong", {text: r.name}), el("span", {class: "muted small", text: ` ${r.id} · ${r.recipe || "own model"} · `}),
      el("span", {text: `${DD.fmt.pct(r.accuracy, 2)}, ${DD.fmt.int(r.errors)} errors`}));
    DD.clear(box).append(
      el("section", {class: "panel"}, line(a, "A: this run"), line(b, b.analysed ? "B" : "B: predictions only"),
        el("p", {class: "cmp-verdict", attrs: {"data-testid": "compare-verdict"}, text: res.verdict}),
        el("p", {class: "muted small", text: `Wrong in both: ${DD.fmt.int(res.both.rows.length)}, ` +
          `${DD.fmt.int(res.both_same_prediction)} of them with the same wrong answer. Two seeds of one recipe ` +
          "already fix and add a few of each other's errors; the p-value (exact McNemar on the images that " +
          "changed) says whether B's changes lean one way more than that."})),
      slicesPanel(res), robustnessPanel(res),
      group(ctx, res.fixed, "fixed", "Fixed by B", "Wrong here, right in B: caption = true class → this run's answer."),
      group(ctx, res.new, "new", "New in B", "Right here, wrong in B: caption = true class → B's answer."),
      group(ctx, res.both, "both", "Wrong in both", "The mistakes that survive a change of run: caption = true class → the two answers."));
  }

  DD.views.compare = {
    title: "Compare runs", icon: "⇄", servedOnly: true,
    // #/r/<A>/<split>/compare/<B>: the runs page links a ticked pair here; picking another B rewrites the link.
    takeArg(ctx, otherId) { ctx.state.compareWith = ctx.state.compareAsked = otherId; },
    render(root, ctx) {
      const box = el("div", {attrs: {"data-testid": "compare-result"}});
      const pickBox = el("div", {class: "toolbar"}, DD.note("Loading runs…"));
      root.append(el("section", {class: "panel"}, pickBox), box);
      ctx.source.listRuns().then((runs) => {
        // B: a run with this split analysed, or on the test split any evaluated run (its stored predictions do:
        // verify-advice's retrained runs, runs nobody analysed)
        const analysed = (r) => r.splits.includes(ctx.b.split);
        const others = runs.filter((r) => r.id !== ctx.b.run.id && r.dataset === ctx.b.run.dataset &&
          (analysed(r) || (ctx.b.split === "test" && r.status === "finished" && r.test_accuracy !== null)));
        DD.clear(pickBox);
        if (!others.length) {
          pickBox.appendChild(DD.note(`No other run on ${ctx.b.run.dataset} has an analysis of its ` +
            `${ctx.b.split} split${ctx.b.split === "test" ? " or test predictions" : ""} to compare with: ` +
            "train one (and for a val split, run deepdive analyze on it)."));
          return;
        }
        const asked = ctx.state.compareAsked;
        ctx.state.compareAsked = null;
        if (!others.some((r) => r.id === ctx.state.compareWith)) ctx.state.compareWith = others[0].id;
        if (asked && asked !== ctx.state.compareWith) {
          box.before(DD.note(`Run ${asked} cannot be compared with this one (the same run, another dataset, or no ` +
            `analysis or predictions of its ${ctx.b.split} split): showing ${ctx.state.compareWith} instead.`, "error"));
        }
        const select = el("select", {class: "input", attrs: {"data-testid": "compare-with"}}, others.map((r) =>
          el("option", {value: r.id, text: `${r.name} · ${r.id} · ${r.recipe || "own model"} · ` +
                                           DD.fmt.pct(r.test_accuracy, 2) +
                                           (analysed(r) ? "" : " · not analysed"),
                        selected: r.id === ctx.state.compareWith})));
        select.addEventListener("change", () => {
          ctx.state.compareWith = select.value;
          history.replaceState(null, "", `${DD.viewHref(ctx, "compare")}/${encodeURIComponent(select.value)}`);
          draw(box, ctx, select.value);
        });
        pickBox.append(el("label", {class: "filter"}, el("span", {class: "tool-label", text: "Compare with (B)"}), select),
          el("span", {class: "muted small", text: `runs on ${ctx.b.run.dataset} with an analysed ${ctx.b.split} split` +
            (ctx.b.split === "test" ? " or test predictions" : "") + ", newest first"}));
        draw(box, ctx, ctx.state.compareWith);
      }).catch((err) => DD.clear(pickBox).appendChild(DD.note(`Could not list the runs: ${err.message}`, "error")));
    },
  };
})(window.DD);
