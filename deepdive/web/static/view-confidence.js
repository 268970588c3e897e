// Confidence: how far the model's confidence can be trusted (reliability diagram, ECE, a temperature fitted out of
// sample) and which images a person should check first (the errors each trust score finds among the least trusted).
// Everything comes from summary.confidence (deepdive.analysis.confidence).
"use strict";
(function (DD) {
  const el = DD.el;
  // [summary key, label, colour, the predictions table's sort that lists the images in the same order]
  const SIGNALS = [["confidence", "Confidence", "#4e79a7", "conf-asc"], ["margin", "Margin", "#f28e2b", "margin-asc"],
                   ["entropy", "Entropy", "#76b7b2", "entropy-desc"],
                   ["neighbours", "Nearest training images", "#e15759", "agree-asc"],
                   ["typicality", "Typicality (distance to them)", "#59a14f", "dist-desc"]];

  function verdict(c) {
    const gap = c.mean_confidence - c.accuracy;
    if (Math.abs(gap) < 0.01) return "about as confident as it is accurate";
    return gap < 0 ? `under-confident by ${(100 * -gap).toFixed(1)} pp on average`
                   : `over-confident by ${(100 * gap).toFixed(1)} pp on average`;
  }

  function calibrationNote(ctx, c) {
    const t = c.temperature;
    // the bin with the largest gap (MCE), with its size: a bin of one image can have a gap of 80%
    const worst = c.reliability.filter((b) => b.count)
      .reduce((w, b) => (Math.abs(b.accuracy - b.confidence) > Math.abs(w.accuracy - w.confidence) ? b : w));
    const smoothing = ((ctx.b.run.config || {}).resolved || {}).label_smoothing;
    return el("div", {attrs: {"data-testid": "confidence-summary"}},
      el("p", {class: "insight hint"},
        `Mean confidence ${DD.fmt.num(c.mean_confidence, 3)} at ${DD.fmt.pct(c.accuracy, 2)} accuracy: the model is `,
        el("span", {class: "strong", text: verdict(c)}),
        ` (ECE ${DD.fmt.pct(c.ece, 1)}, worst bin ${DD.fmt.pct(c.mce, 1)} with ` +
        `${DD.fmt.int(worst.count)} image${worst.count === 1 ? "" : "s"}; NLL ${DD.fmt.num(c.nll, 3)}, ` +
        `Brier ${DD.fmt.num(c.brier, 4)}).`),
      smoothing ? DD.note(`The recipe trains with label smoothing ${smoothing}, which keeps the top probability near ` +
        `${DD.fmt.num(1 - smoothing + smoothing / ctx.C, 2)} however sure the model is: read its confidences as a ` +
        "ranking, or scale them.", "muted") : null,
      t && t.value !== 1 ? DD.note(`One temperature, T = ${DD.fmt.num(t.value, 2)} (probabilities ∝ p^(1/T); ` +
        `fitted by NLL on a random half of the images and applied to the other, both ways: T = ` +
        `${t.halves.map((h) => DD.fmt.num(h, 2)).join(" and ")}), brings them, out of sample, to ECE ` +
        `${DD.fmt.pct(t.ece, 2)}, NLL ${DD.fmt.num(t.nll, 3)}, Brier ${DD.fmt.num(t.brier, 4)}. ` +
        "No prediction changes.", "muted") : null);
  }

  function reliabilityTraces(bins, name) {
    const full = bins.filter((b) => b.count);
    return [
      {type: "bar", name: `accuracy (${name})`, x: full.map((b) => (b.lo + b.hi) / 2), y: full.map((b) => b.accuracy),
       width: full.map((b) => b.hi - b.lo), marker: {color: "#4e79a7", line: {color: "#fff", width: 1}},
       customdata: full.map((b) => [b.count, b.confidence, b.lo, b.hi, bins.indexOf(b)]),
       hovertemplate: "confidence %{customdata[2]:.2f}–%{customdata[3]:.2f}: %{customdata[0]:,} images<br>" +
                      "mean confidence %{customdata[1]:.3f} · accuracy %{y:.2%} · click for the images" +
                      "<extra></extra>"},
      {type: "scatter", mode: "lines+markers", name: "images per bin", yaxis: "y2",
       x: full.map((b) => (b.lo + b.hi) / 2), y: full.map((b) => b.count),
       line: {color: "#9ca3af", width: 1}, marker: {size: 5}, hoverinfo: "skip"},
      {type: "scatter", mode: "lines", name: "perfect calibration", x: [0, 1], y: [0, 1],
       line: {color: "#111827", dash: "dash", width: 1}, hoverinfo: "skip"},
    ];
  }

  function reliabilityPanel(ctx, c) {
    const plot = el("div", {class: "chart", attrs: {"data-testid": "reliability-plot"}});
    const t = c.temperature;
    const modes = [{value: "raw", label: "as the model gives them"}];
    if (t && t.value !== 1) modes.push({value: "scaled", label: `after temperature ${DD.fmt.num(t.value, 2)}`});
    const layout = DD.plotLayout({hovermode: "closest", barmode: "overlay", margin: {l: 56, r: 56, t: 36, b: 44},
      xaxis: {title: {text: "confidence (top probability)"}, range: [0, 1], dtick: 0.2},
      yaxis: {title: {text: "accuracy"}, range: [0, 1.02], tickformat: ".0%"},
      yaxis2: {title: {text: "images"}, overlaying: "y", side: "right", type: "log", showgrid: false,
               ...DD.logTicks(c.reliability.map((b) => b.count))}});
    let shown = "raw", listening = false;
    const draw = (mode) => DD.plotly().then((Plotly) => {
      shown = mode;
      return Plotly.react(plot, reliabilityTraces(mode === "scaled" ? t.reliability : c.reliability,
                                                  mode === "scaled" ? "scaled" : "raw"), layout, DD.plotConfig);
    }).then(() => {
      if (listening) return;
      listening = true;     // a click on a bar lists its images, least confident first
      plot.on("plotly_click", (ev) => {
        const pt = ev.points.find((p) => p.curveNumber === 0);
        if (!pt) return;
        ctx.state.predFilter = {bin: `${shown}:${pt.customdata[4]}`, sort: "conf-asc"};
        DD.go(ctx, "predictions");
      });
    }).catch((err) => plot.replaceWith(DD.note(err.message, "error")));
    DD.afterPaint(() => draw("raw"));
    return DD.section("Calibration: is a 90% answer right 90% of the time?",
      calibrationNote(ctx, c),
      modes.length > 1 ? DD.segmented(modes, "raw", draw, "reliability-mode") : null,
      plot,
      DD.note(`Images binned by confidence (${c.bins} equal-width bins; hover a bar for its images and mean ` +
              "confidence, click it to list them). A bar under the diagonal is over-confident, over it " +
              "under-confident; the grey line counts the images in each bin (right axis).", "muted"));
  }

  // Errors caught against images checked: a step line per trust score, plus the best and chance orders.
  function caughtTraces(c) {
    const traces = SIGNALS.filter(([key]) => c.signals[key]).map(([key, label, color]) => {
      const curve = c.signals[key].curve;
      return {type: "scatter", mode: "lines", line: {shape: "hv", color, width: 2}, name: label,
              x: [0, ...curve.map((p) => p[0]), c.n], y: [0, ...curve.map((p) => p[1]), c.errors],
              hovertemplate: `${label}: %{y} of ${c.errors} errors in the %{x:,} least trusted<extra></extra>`};
    });
    traces.push({type: "scatter", mode: "lines", name: "every error first",
                 x: [0, c.errors, c.n], y: [0, c.errors, c.errors],
                 line: {color: "#111827", dash: "dot", width: 1}, hoverinfo: "skip"});
    traces.push({type: "scatter", mode: "lines", name: "at random", x: [0, c.n], y: [0, c.errors],
                 line: {color: "#9ca3af", dash: "dash", width: 1}, hoverinfo: "skip"});
    return traces;
  }

  function signalTable(ctx, c) {
    const budgets = c.budgets;
    const head = ["trust score", "AUROC",
                  ...budgets.map((b) => `${DD.fmt.pct(b, b < 0.01 ? 1 : 0)} (${DD.fmt.int(Math.ceil(b * c.n))})`), ""];
    // the neighbours' order needs their agreement in the examples (analyses before it have only the counts)
    const listed = (key) => key !== "neighbours" || (ctx.col.neighbour_agreement || []).some((v) => v !== null);
    return el("table", {class: "grid compact", attrs: {"data-testid": "signals-table"}},
      el("thead", {}, el("tr", {}, head.map((h) => el("th", {text: h})))),
      el("tbody", {}, SIGNALS.filter(([key]) => c.signals[key]).map(([key, label, color, sort]) => {
        const s = c.signals[key];
        return el("tr", {dataset: {signal: key}},
          el("td", {attrs: {title: s.description}}, el("span", {class: "swatch", style: {background: color}}), label),
          el("td", {class: "num", text: DD.fmt.num(s.auroc, 4)}),
          budgets.map((b) => el("td", {class: "num", text: `${s.caught[String(b)]} of ${c.errors}`})),
          el("td", {}, listed(key) ? el("a", {class: "more", href: DD.viewHref(ctx, "predictions"), text: "list →",
            attrs: {"data-testid": `signal-list-${key}`, title: "the images in this order, least trusted first"},
            on: {click: () => { ctx.state.predFilter = {sort}; }}}) : null));
      })));
  }

  function checkPanel(ctx, c) {
    if (!c.errors) {
      return DD.section("Which images to check first", DD.note("No errors on this split: nothing to find.", "muted"));
    }
    const plot = el("div", {class: "chart", attrs: {"data-testid": "caught-plot"}});
    const layout = DD.plotLayout({hovermode: "closest",
      xaxis: {title: {text: "images checked, least trusted first"},
              range: [0, Math.max(c.errors, Math.ceil(0.05 * c.n))]},
      yaxis: {title: {text: "errors found"}, range: [0, c.errors * 1.04]}});
    DD.afterPaint(() => DD.plotly().then((Plotly) => Plotly.newPlot(plot, caughtTraces(c), layout, DD.plotConfig))
      .catch((err) => plot.replaceWith(DD.note(err.message, "error"))));
    const k = Math.ceil(0.01 * c.n);
    const threshold = (c.confidence_thresholds || {})["0.01"];
    const caught = c.signals.confidence.caught["0.01"];
    const rest = (c.n - k - (c.errors - caught)) / (c.n - k);   // accuracy on the images left unchecked
    return DD.section("Which images to check first",
      DD.note(`Order the ${DD.fmt.int(c.n)} images by a trust score, least trusted first, and check them in that ` +
              `order: how many of the ${DD.fmt.int(c.errors)} errors does each score put in front? AUROC: the ` +
              "chance that an error ranks below a right answer (1 = always, 0.5 = a coin). The nearest training " +
              "images' score is the share of them labelled as predicted (ties by confidence). The chart starts " +
              "zoomed on the first 5% (double-click for all).", "muted"),
      plot, signalTable(ctx, c),
      el("p", {class: "note", attrs: {"data-testid": "least-confident-note"}},
         `Checking the ${DD.fmt.int(k)} least confident images (confidence ≤ ${DD.fmt.num(threshold, 4)}) finds ` +
         `${caught} of the errors; the other ${DD.fmt.int(c.n - k)} are ${DD.fmt.pct(rest, 2)} right ` +
         `(all ${DD.fmt.int(c.n)}: ${DD.fmt.pct(c.accuracy, 2)}). `,
        el("a", {class: "more", href: DD.viewHref(ctx, "predictions"), attrs: {"data-testid": "least-confident"},
                 text: "list them, least confident first →",
                 on: {click: () => { ctx.state.predFilter = {sort: "conf-asc"}; }}})));
  }

  // Answer automatically above a confidence threshold, send the rest to a person: what each threshold buys.
  function thresholdPanel(ctx, c) {
    const col = ctx.col;
    // the 1% threshold to the bundle's 6 decimals, so the image that sets it is at or below it here too
    const start = Number(((c.confidence_thresholds || {})["0.01"] ?? 0.5).toFixed(6));
    // step "any": the slider keeps the exact 1% threshold it starts at
    const slider = el("input", {type: "range", min: "0", max: "1", step: "any", value: String(start),
                                attrs: {"data-testid": "threshold", "aria-label": "confidence threshold"}});
    const out = el("p", {class: "insight hint", attrs: {"data-testid": "threshold-readout"}});
    const link = el("a", {class: "more", href: DD.viewHref(ctx, "predictions"),
                          attrs: {"data-testid": "threshold-list"}});
    const update = () => {
      const t = Number(slider.value);
      let deferred = 0, caught = 0, wrong = 0;
      for (let r = 0; r < ctx.n; r++) {
        const low = col.confidence[r] <= t;
        if (!col.correct[r]) { wrong += 1; if (low) caught += 1; }
        if (low) deferred += 1;
      }
      const kept = ctx.n - deferred, keptRight = kept - (wrong - caught);
      DD.clear(out).append(
        `Confidence ≤ ${t.toFixed(4)} to a person: ${DD.fmt.int(deferred)} images ` +
        `(${DD.fmt.pct(deferred / ctx.n, 1)}), ` +
        `holding ${DD.fmt.int(caught)} of the ${DD.fmt.int(wrong)} errors. The other ${DD.fmt.int(kept)} answered ` +
        `automatically: ${kept ? DD.fmt.pct(keptRight / kept, 2) : "–"} right, ${DD.fmt.int(wrong - caught)} ` +
        `error${wrong - caught === 1 ? "" : "s"} left.`);
      link.textContent = `list the ${DD.fmt.int(deferred)}, least confident first →`;
      link.onclick = () => { ctx.state.predFilter = {confMax: t, sort: "conf-asc"}; };
    };
    slider.addEventListener("input", update);
    update();
    return DD.section("Where to draw the line",
      DD.note("Move the threshold: every image at or below it goes to a person, the rest is answered by the model. " +
              "It starts at the least confident 1%.", "muted"),
      el("div", {class: "threshold-row"}, el("span", {class: "muted small", text: "0"}), slider,
         el("span", {class: "muted small", text: "1"})),
      out, el("p", {class: "note"}, link));
  }

  DD.views.confidence = {
    title: "Confidence", icon: "◔",
    render(root, ctx) {
      const c = ctx.b.summary.confidence;
      if (!c || !c.available) {
        const again = ctx.b.split === "train" ? "--label-issues train" : `--split ${ctx.b.split}`;
        root.appendChild(DD.note(c ? `No confidence analysis: ${c.reason}.` : "This analysis predates the confidence " +
          `stage: run deepdive analyze ${ctx.b.run.id} ${again} again to add it.`, "error"));
        return;
      }
      root.appendChild(reliabilityPanel(ctx, c));
      root.appendChild(checkPanel(ctx, c));
      root.appendChild(thresholdPanel(ctx, c));
    },
  };
})(window.DD);
