// Per-class table: accuracy, precision, F1, average precision, errors, and each class's misclassified images (most
// confident first), sortable by any column; above it top-k accuracy, below it each class's precision-recall curve.
"use strict";
(function (DD) {
  const el = DD.el;
  const MAX_THUMBS = 48;
  // Sortable columns: header, key of the summary's per-class row (null: not sortable), first direction
  const COLUMNS = [["Class", "class", 1], ["Images", "support", -1], ["Accuracy", "recall", 1],
                   ["Precision", "precision", 1], ["F1", "f1", 1], ["AP", "ap", 1], ["Errors", "errors", -1],
                   ["Misclassified images (predicted label · confidence)", null, 0]];
  const HINTS = {recall: "the share of the class's images predicted as it (its recall)",
                 precision: "the share of the images predicted as the class that are of it",
                 f1: "the harmonic mean of precision and recall",
                 ap: "average precision: the area under the class's precision-recall curve (below), one class " +
                     "against the rest; 1 = every image of it scores above every other image"};

  function accuracyBar(value) {
    return el("div", {class: "acc-cell"},
      el("span", {class: "acc-track"}, el("span", {class: "acc-fill", style: {width: (value || 0) * 100 + "%"}})),
      el("span", {class: "num", text: DD.fmt.pct(value, 2)}));
  }

  // Undefined values (a class never predicted has no precision) sort last either way; ties keep class order.
  function sortRows(rows, key, dir) {
    const v = (r) => (r[key] === null || r[key] === undefined ? null : r[key]);
    return rows.slice().sort((a, b) => {
      const x = v(a), y = v(b);
      if (x === null || y === null) return (x === null) - (y === null) || a.class - b.class;
      return dir * (x - y) || a.class - b.class;
    });
  }

  function rankingNote(ctx, r) {
    const s = ctx.b.summary;
    if (!r) return DD.note("Top-k accuracy and precision-recall curves come with analyses since 2026-12-06: " +
                           "run deepdive analyze again for them.", "muted");
    // top-1, then each k up to the first that gets every image right
    const shown = r.top_k.filter((t, i) => i === 0 || r.top_k[i - 1].accuracy < 1);
    const parts = shown.map((t) => `top-${t.k} ${DD.fmt.pct(t.accuracy, 2)}`).join(" · ");
    const second = r.top_k.find((t) => t.k === 2);
    const runnerUp = second ? s.error_count - Math.round((1 - second.accuracy) * s.n) : 0;
    const near = second && s.error_count ? " " + (runnerUp === s.error_count ? `All ${DD.fmt.int(s.error_count)}` :
      `${DD.fmt.int(runnerUp)} of the ${DD.fmt.int(s.error_count)}`) + " errors have the right class as the runner-up." : "";
    return el("p", {class: "note", attrs: {"data-testid": "top-k"}},
      el("span", {class: "strong", text: parts}),
      ` (the true class among the model's k most probable).${near}` +
      (r.mean_ap !== null ? ` Mean average precision over the classes: ${DD.fmt.num(r.mean_ap, 5)}.` : ""));
  }

  function classTable(ctx, rows, initial) {
    const errorsOf = Array.from({length: ctx.C}, () => []);
    for (const r of ctx.errorRows) errorsOf[ctx.col.true[r]].push(r);
    const hasAp = rows.some((row) => row.ap !== undefined);
    const columns = COLUMNS.filter(([, key]) => key !== "ap" || hasAp);
    const body = el("tbody");
    const sort = Object.assign({key: "class", dir: 1}, initial);
    const row = (row) => {
      const errs = errorsOf[row.class];
      const thumbs = errs.slice(0, MAX_THUMBS).map((r) =>
        DD.captioned(ctx, r, 40, `→${ctx.className(ctx.col.pred[r])} · ${DD.fmt.pct(ctx.col.confidence[r], 0)}`));
      const more = errs.length > MAX_THUMBS ? el("a", {
        class: "more", text: `+${errs.length - MAX_THUMBS} more`, href: DD.viewHref(ctx, "predictions"),
        on: {click: () => { ctx.state.predFilter = {true: row.class, correct: "wrong"}; }},
      }) : null;
      return el("tr", {dataset: {cls: row.class}},
        el("td", {class: "strong"}, el("span", {class: "swatch", style: {background: DD.classColor(row.class)}}), row.name),
        el("td", {class: "num", text: DD.fmt.int(row.support)}),
        el("td", {}, accuracyBar(row.recall)),
        el("td", {class: "num", text: DD.fmt.pct(row.precision, 2)}),
        el("td", {class: "num", text: DD.fmt.num(row.f1, 4)}),
        hasAp ? el("td", {class: "num", text: DD.fmt.num(row.ap, 5)}) : null,
        el("td", {class: "num" + (row.errors ? " bad" : ""), text: DD.fmt.int(row.errors)}),
        el("td", {attrs: {"data-testid": "class-errors"}},   // a flex td would lose its row's height
           errs.length ? el("div", {class: "thumbs-cell"}, thumbs, more) :
             el("span", {class: "muted small", text: "no errors"})));
    };
    const heads = columns.map(([label, key, first]) => el("th", {
      text: label, class: key ? "sortable" : "",
      attrs: key ? {"data-sort": key, tabindex: "0",
                    title: (HINTS[key] ? HINTS[key] + ". " : "") + "Click to sort by " + label.toLowerCase()} : {},
      on: key ? {click: () => resort(key, first), keydown: (e) => { if (e.key === "Enter") resort(key, first); }} : {},
    }));
    function draw() {
      ctx.state.classSort = {key: sort.key, dir: sort.dir};
      heads.forEach((th, i) => {
        const key = columns[i][1];
        if (key) th.setAttribute("aria-sort", key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
      });
      DD.clear(body).append(...sortRows(rows, sort.key, sort.dir).map(row));
    }
    function resort(key, first) {
      sort.dir = key === sort.key ? -sort.dir : first;
      sort.key = key;
      draw();
    }
    draw();
    return el("table", {class: "grid class-table", attrs: {"data-testid": "class-table"}},
      el("thead", {}, el("tr", {}, heads)), body);
  }

  // The predictions table holds probabilities rounded to `decimals` (the bundle's prob_decimals): the threshold
  // rounded down to them keeps the image that sets it (its own probability, rounded to nearest, is never below).
  const flagThreshold = (t, decimals) => Math.floor(t * 10 ** decimals + 1e-9) / 10 ** decimals;

  // One line per class: precision against recall as the threshold on that class's probability falls.
  function prPanel(ctx, r) {
    const curves = r.pr_curves.filter((cv) => cv.points.length);
    const plot = el("div", {class: "chart", attrs: {"data-testid": "pr-plot"}});
    // A model this good only parts from the top edge at high recall: start zoomed there (double-click: all).
    const zoom = r.mean_ap !== null && r.mean_ap >= 0.99 ? 0.9 : 0;
    const shown = curves.flatMap((cv) => cv.points.filter((p) => p[0] >= zoom).map((p) => p[1]));
    const low = Math.min(1, ...shown);
    const label = (c) => DD.plotLabel(ctx, c);
    const traces = curves.map((cv) => ({
      type: "scatter", mode: "lines", name: `${label(cv.class)} (AP ${DD.fmt.num(cv.ap, 5)})`,
      line: {color: DD.classColor(cv.class), width: 1.5},
      x: cv.points.map((p) => p[0]), y: cv.points.map((p) => p[1]), customdata: cv.points.map((p) => p[2]),
      hovertemplate: `${label(cv.class)}: recall %{x:.2%}, precision %{y:.2%} ` +
                     "with p ≥ %{customdata:.4f} (click: its images)<extra></extra>",
    }));
    // Many classes: those with the lowest AP drawn, the others a legend click away.
    const worst = curves.slice().sort((a, b) => a.ap - b.ap || a.class - b.class).map((cv) => cv.class);
    DD.classLines(traces, curves.map((cv) => cv.class), worst);
    const layout = DD.plotLayout({hovermode: "closest", margin: {l: 60, r: 16, t: 16, b: 44},
      legend: DD.sideLegend(),
      xaxis: {title: {text: "recall (share of the class found)"}, range: [zoom, 1.002], tickformat: ".1%"},
      yaxis: {title: {text: "precision"}, tickformat: ".1%", automargin: true,
              range: [Math.max(0, low - (1 - low) * 0.08), 1 + (1 - low) * 0.04]}});
    DD.afterPaint(() => DD.plotly().then((Plotly) => Plotly.newPlot(plot, traces, layout, DD.plotConfig))
      .then(() => plot.on("plotly_click", (ev) => {   // list what that threshold flags
        const pt = ev.points[0];
        ctx.state.predFilter = {pclass: curves[pt.curveNumber].class,
                                pmin: flagThreshold(pt.customdata, ctx.b.examples.prob_decimals)};
        DD.go(ctx, "predictions");
      }))
      .catch((err) => plot.replaceWith(DD.note(err.message, "error"))));
    return DD.section("Precision and recall per class",
      DD.note("Each class against the rest, thresholding the model's probability for it: flag every image whose " +
              "probability is at least p, and the line says what share of the class that finds (recall) and what " +
              "share of the flagged images are of the class (precision). AP, the average precision, is the area " +
              "under it (scikit-learn). Hover a line for its threshold, click it to list the images that " +
              "threshold flags (the other classes' among them are what it lets through); click a class in the " +
              "legend to hide it" +
              (zoom ? `; the chart starts at recall ${DD.fmt.pct(zoom, 0)}, where this model's lines part ` +
                      "(double-click for all)" : "") +
              (curves.length > DD.MANY_CLASSES ? `. Of the ${curves.length} classes the ${DD.MANY_SHOWN} with the lowest ` +
                                               "AP are drawn; click another in the legend to add it." : "."), "muted"),
      plot);
  }

  DD.views.classes = {
    title: "Per class", icon: "☰",
    render(root, ctx) {
      const r = ctx.b.summary.ranking;
      root.appendChild(el("div", {class: "panel"}, rankingNote(ctx, r),
        classTable(ctx, ctx.b.summary.per_class, ctx.state.classSort)));
      if (r && r.pr_curves.some((cv) => cv.points.length)) root.appendChild(prPanel(ctx, r));
    },
  };
})(window.DD);
