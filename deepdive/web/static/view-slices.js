// Slices: which kinds of picture the model gets wrong (deepdive.analysis.slices). Every picture is measured
// (brightness, ink, thickness, slant, ...) and each measure is read against the picture's own class; a slice is a
// tail of one measure within a class, or within every class at once, tested for more errors than the rest of its
// class(es), the p-values corrected for the number of slices tried. The page cuts the slices and tenths from the
// measures the bundle carries (already rounded as the analysis cut them), so what it lists is what was counted.
"use strict";
(function (DD) {
  const el = DD.el;
  const TENTHS = 10;         // analysis.slices.BINS
  const ERRORS_SHOWN = 8;    // error thumbnails per listed slice

  DD.slicesOf = (ctx) => {
    const s = ctx.b.summary.slices;
    return s && s.available && ctx.col.img_thickness ? s : null;
  };
  const propertyOf = (s, key) => s.properties.find((p) => p.key === key);

  // Each row's percentile within its true class for one measure (ties at their middle, as
  // analysis.slices._within_class) and its tenth (0-9; -1 without a value). Computed once per run context.
  DD.measureTenths = function (ctx, key) {
    ctx.tenths = ctx.tenths || {};
    if (ctx.tenths[key]) return ctx.tenths[key];
    const v = ctx.col["img_" + key], t = ctx.col.true, n = ctx.n;
    const mid = new Float64Array(n).fill(NaN), tenth = new Int8Array(n).fill(-1);
    const byClass = Array.from({length: ctx.C}, () => []);
    for (let r = 0; r < n; r++) if (v[r] !== null && v[r] !== undefined) byClass[t[r]].push(r);
    byClass.forEach((rows) => {
      const sorted = rows.map((r) => v[r]).sort((a, b) => a - b), m = sorted.length;
      const bound = (x, strict) => {     // the first position whose value is >= x (strict: > x)
        let lo = 0, hi = m;
        while (lo < hi) {
          const h = (lo + hi) >> 1;
          if (strict ? sorted[h] <= x : sorted[h] < x) lo = h + 1; else hi = h;
        }
        return lo;
      };
      for (const r of rows) {
        mid[r] = (bound(v[r], false) / m + bound(v[r], true) / m) / 2;
        tenth[r] = Math.min(Math.floor(mid[r] * TENTHS), TENTHS - 1);
      }
    });
    ctx.tenths[key] = {mid, tenth};
    return ctx.tenths[key];
  };

  // The rows of a listed slice (analysis.slices.members): its group's rows at or beyond their class's threshold.
  DD.sliceRows = function (ctx, item) {
    const v = ctx.col["img_" + item.property], t = ctx.col.true, out = [];
    for (let r = 0; r < ctx.n; r++) {
      const at = item.thresholds[t[r]];
      if (at === null || at === undefined || v[r] === null || v[r] === undefined) continue;
      if (item.group !== -1 && t[r] !== item.group) continue;
      if (item.side === "low" ? v[r] <= at : v[r] >= at) out.push(r);
    }
    return out;
  };
  // The rows in tenth `b` of measure `key` within class `cls` (-1: each row within its own class).
  DD.tenthRows = function (ctx, key, cls, b) {
    const {tenth} = DD.measureTenths(ctx, key), t = ctx.col.true, out = [];
    for (let r = 0; r < ctx.n; r++) if (tenth[r] === b && (cls === -1 || t[r] === cls)) out.push(r);
    return out;
  };
  // The listed slices whose augmentation (item.augment: analysis.slices.AUGMENT_FOR, the advice key that trains
  // toward the slice's pictures) an Advice suggestion applies, found first (analysis.slices.backing).
  DD.slicesFor = (ctx, suggestion) => {
    const s = DD.slicesOf(ctx), keys = Object.keys(((suggestion || {}).overrides || {}).augment || {});
    const agree = s ? s.listed.filter((item) => item.augment && keys.includes(item.augment)) : [];
    return [...agree.filter((item) => item.found), ...agree.filter((item) => !item.found)];
  };

  // A listed slice in words, with this page's class names (analysis.slices.describe).
  DD.sliceText = function (ctx, s, item) {
    const p = propertyOf(s, item.property), word = item.side === "low" ? p.low : p.high;
    const share = item.share < 0.8 * item.tail ? item.share : item.tail;
    const tail = share < 0.1 ? `${Number((100 * share).toPrecision(2))}%` : `${Math.round(100 * share)}%`;
    if (item.group === -1) return `every class: the ${tail} ${word} of each (${p.label})`;
    return `${ctx.className(item.group)}: the ${tail} ${word} (${p.label} ${item.side === "low" ? "≤" : "≥"} ` +
      `${valueText(p, item.thresholds[item.group])})`;
  };
  const valueText = (p, v) => `${DD.fmt.num(v, p.decimals)}${p.unit === "°" ? "°" : p.unit ? " " + p.unit : ""}`;
  const groupName = (ctx, g) => (g === -1 ? "each class" : ctx.className(g));
  DD.sliceFilterText = (ctx, f) => {
    const s = DD.slicesOf(ctx);
    if (!s) return null;
    if (f.slice !== undefined && f.slice !== null) {
      const item = s.listed[Number(f.slice)];
      return item ? `slice: ${DD.sliceText(ctx, s, item)}` : null;
    }
    const [key, cls, b] = String(f.tenth).split(":");
    const p = propertyOf(s, key);
    return p ? `${p.label}: tenth ${Number(b) + 1} of ${groupName(ctx, Number(cls))}` : null;
  };
  // The rows a predictions filter's slice or tenth holds (null: the filter names none this run has).
  DD.sliceFilterRows = (ctx, f) => {
    const s = DD.slicesOf(ctx);
    if (!s) return null;
    if (f.slice !== undefined && f.slice !== null) {
      const item = s.listed[Number(f.slice)];
      return item ? DD.sliceRows(ctx, item) : null;
    }
    const [key, cls, b] = String(f.tenth).split(":");
    return propertyOf(s, key) ? DD.tenthRows(ctx, key, Number(cls), Number(b)) : null;
  };

  // The measures by which errors differ from right answers of their class at the FDR (analysis.slices.measure_findings)
  DD.measureFindings = function (s) {
    const kinds = {"at the ends of their class": [], "higher in their class": [], "lower in their class": []};
    for (const p of s.properties) {
      if (p.q !== undefined && p.q !== null && p.q <= s.fdr) {
        kinds[p.auroc > 0.5 ? "higher in their class" : "lower in their class"].push([Math.abs(p.auroc - 0.5), p, p.auroc]);
      }
      if (p.extreme_q !== undefined && p.extreme_q !== null && p.extreme_q <= s.fdr && p.extreme_auroc > 0.5) {
        kinds["at the ends of their class"].push([p.extreme_auroc - 0.5, p, p.extreme_auroc]);
      }
    }
    return Object.entries(kinds).filter(([, found]) => found.length).map(([kind, found]) =>
      `${kind} by ` + found.sort((a, b) => b[0] - a[0])
        .map(([, p, auroc], i) => `${p.label} (${i ? "" : "AUROC "}${DD.fmt.num(auroc, 2)})`).join(", "));
  };
  const findingsNote = (s) => {
    const f = DD.measureFindings(s);
    return el("p", {class: "note", attrs: {"data-testid": "measure-findings"}, text: f.length ?
      `Against the right answers of their class, the errors are ${f.join("; ")} (q ≤ ${DD.fmt.pct(s.fdr, 0)}).` :
      "By no measure do the errors differ from the right answers of their class at the false discovery rate."});
  };
  DD.sliceFindingsNote = findingsNote;

  function qText(q) { return q === null || q === undefined ? "–" : q < 0.001 ? q.toExponential(1) : DD.fmt.num(q, 3); }
  DD.qText = qText;
  const liftText = (item) => (item.lift !== null ? `×${DD.fmt.num(item.lift, 1)}` :
    item.group === -1 ? "every error" : "every error of the class");

  function summaryNote(ctx, s) {
    const found = s.found;
    return el("p", {class: "note", attrs: {"data-testid": "slices-summary"}, text:
      `Each picture measured ${s.properties.length} ways (${s.properties.map((p) => p.label).join(", ")}) and each ` +
      "measure read against the picture's own class. Of the " + `${DD.fmt.int(s.tested)} slices tried (each ` +
      `class's lowest and highest ${s.quantiles.map((q) => DD.fmt.pct(q, 0)).join(", ")} of each measure, and the ` +
      "same tails of every class at once), " + (found ? `${DD.fmt.int(found)} hold more errors than the rest of ` +
        `their class(es) at a false discovery rate of ${DD.fmt.pct(s.fdr, 0)} (one-sided Fisher exact test, ` +
        "Benjamini-Hochberg over every slice tried): the model fails more often on these kinds of picture." :
        `none holds more errors than chance would put there at a false discovery rate of ${DD.fmt.pct(s.fdr, 0)} ` +
        `(${DD.fmt.int(s.errors)} errors are few to tell slices apart): the slices below are leads to look at, ` +
        "not findings.") + (s.inverted ? " The pictures are dark on light: the shape measures read the dark as ink." : "")});
  }

  function slicesTable(ctx, s) {
    if (!s.listed.length) return DD.note("No slice holds two errors or more at a higher rate than the rest.", "muted");
    return el("table", {class: "grid compact slices", attrs: {"data-testid": "slices-table"}},
      el("thead", {}, el("tr", {}, ["slice", "images", "errors", "error rate (rest)", "lift", "q", "taken for",
                                    "its errors, most confident first", ""].map((h) => el("th", {text: h})))),
      el("tbody", {}, s.listed.map((item, i) => {
        const rows = DD.sliceRows(ctx, item);
        const member = new Set(rows);
        const errs = ctx.errorRows.filter((r) => member.has(r)).slice(0, ERRORS_SHOWN);
        return el("tr", {class: item.found ? "found" : "lead", dataset: {slice: i, rows: rows.length},
                         attrs: {"data-testid": "slice-row"}},
          el("td", {}, el("span", {class: "pill " + (item.found ? "pill-found" : "muted"),
                                   text: item.found ? "found" : "lead"}), " ",
            el("span", {attrs: {"data-testid": "slice-text"}, text: DD.sliceText(ctx, s, item)})),
          el("td", {class: "num", text: DD.fmt.int(item.images)}),
          el("td", {class: "num", text: DD.fmt.int(item.errors)}),
          el("td", {class: "num", text: `${DD.fmt.pct(item.rate, 1)} (${DD.fmt.pct(item.rest_rate, 1)})`}),
          el("td", {class: "num", text: liftText(item)}),
          el("td", {class: "num", attrs: {title: `p ${qText(item.p)} before the correction`}, text: qText(item.q)}),
          el("td", {class: "small", text: item.taken_for.slice(0, 3)
            .map(([c, k]) => `${ctx.className(c)} ×${k}`).join(", ")}),
          el("td", {}, el("div", {class: "thumb-row"}, errs.map((r) => DD.thumb(ctx, r, 28)))),
          el("td", {}, el("a", {class: "more", href: DD.viewHref(ctx, "predictions"), text: "list →",
            attrs: {"data-testid": `slice-list-${i}`, title: "the slice's images in the predictions table"},
            on: {click: () => { ctx.state.predFilter = {slice: i}; }}}), augmentLink(ctx, item)));
      })));
  }

  // The Advice suggestion that augments toward a slice's pictures, if the analysis made one.
  function augmentLink(ctx, item) {
    const key = item.augment;
    const s = key && (ctx.b.summary.advice || []).find((a) => key in ((a.overrides || {}).augment || {}));
    return s ? el("a", {class: "more small", href: DD.viewHref(ctx, "advice"), text: ` augment: ${s.title} →`,
                        attrs: {"data-testid": "slice-augment", title: `Advice suggestion ${s.rank}: its probes, ` +
                                "its verification by retraining"}}) : null;
  }

  function verdict(auroc, q, fdr, high, low) {
    if (auroc === null || auroc === undefined) return "–";
    const word = q !== undefined && q !== null && q <= fdr ? (auroc > 0.5 ? high : low) : "as the rest";
    return `${word} (AUROC ${DD.fmt.num(auroc, 3)}, q ${qText(q)})`;
  }

  // The measures: where the errors sit in their class, and the error rate by tenths of the chosen measure.
  function measuresPanel(ctx, s) {
    const state = ctx.state.slices = ctx.state.slices || {key: s.properties[0].key, cls: -1};
    const chart = el("div", {class: "chart", attrs: {"data-testid": "slice-chart"}});
    const caption = el("p", {class: "muted small", attrs: {"data-testid": "slice-chart-caption"}});
    const rows = s.properties.map((p) => el("tr", {class: "clickable", dataset: {key: p.key},
      attrs: {"data-testid": "measure-row"}, on: {click: () => { state.key = p.key; draw(); }}},
      el("td", {text: p.label + (p.unit ? ` (${p.unit})` : "")}),
      el("td", {class: "small muted", text: p.about}),
      el("td", {class: "small", text: verdict(p.auroc, p.q, s.fdr, "higher in their class", "lower in their class")}),
      el("td", {class: "small", text: verdict(p.extreme_auroc, p.extreme_q, s.fdr, "at its ends",
                                              "near its middle")})));
    const table = el("table", {class: "grid compact", attrs: {"data-testid": "slice-measures"}},
      el("thead", {}, el("tr", {}, ["measure", "what it is", "errors sit, against right answers",
                                    "errors at the ends of their class"].map((h) => el("th", {text: h})))),
      el("tbody", {}, rows));
    const classSelect = el("select", {class: "input", attrs: {"data-testid": "slice-class", "aria-label": "class"},
      on: {change: (e) => { state.cls = Number(e.target.value); draw(); }}},
      el("option", {value: "-1", text: "each class (its own tenths)"}),
      ctx.names.map((name, c) => el("option", {value: String(c), text: name})));
    classSelect.value = String(state.cls);
    let listening = false;
    function draw() {
      rows.forEach((tr) => tr.classList.toggle("active", tr.dataset.key === state.key));
      const p = propertyOf(s, state.key);
      const cells = p.bins[state.cls === -1 ? "all" : String(state.cls)];
      const n = cells.reduce((a, c) => a + c[0], 0), e = cells.reduce((a, c) => a + c[1], 0);
      const unit = p.unit ? ` ${p.unit}` : "";
      const range = (c) => (c.length > 2 && c[2] !== null ?
        `${DD.fmt.num(c[2], p.decimals)}–${DD.fmt.num(c[3], p.decimals)}${unit}` : "");
      const x = cells.map((_, b) => `${b * 10}–${b * 10 + 10}%`);
      caption.textContent = `${p.label} of ${groupName(ctx, state.cls)}: the error rate in each tenth of ` +
        (state.cls === -1 ? "each class (every picture in its own class's tenth)" : "the class") +
        `, ${p.low} on the left; the dashed line is the rate over all ${DD.fmt.int(n)} (${DD.fmt.pct(e / Math.max(1, n), 2)}).` +
        " Click a bar for its images.";
      DD.plotly().then((Plotly) => Plotly.react(chart, [
        {type: "bar", x, y: cells.map((c) => (c[0] ? c[1] / c[0] : 0)), marker: {color: "#e15759"},
         text: cells.map((c) => String(c[1])), textposition: "outside",
         customdata: cells.map((c, b) => [c[0], c[1], range(c), b]),
         hovertemplate: "%{x}: %{customdata[1]} errors in %{customdata[0]:,} images (%{y:.2%})" +
                        (state.cls === -1 ? "" : "<br>%{customdata[2]}") + "<extra></extra>"},
        {type: "scatter", mode: "lines", x: [x[0], x[x.length - 1]], y: [e / Math.max(1, n), e / Math.max(1, n)],
         line: {color: "#111827", dash: "dash", width: 1}, hoverinfo: "skip"}],
        DD.plotLayout({showlegend: false, margin: {l: 56, r: 16, t: 16, b: 44},
          xaxis: {title: {text: `tenth of ${groupName(ctx, state.cls)} by ${p.label}`}},
          yaxis: {title: {text: "error rate"}, tickformat: ".1%", rangemode: "tozero"}}), DD.plotConfig)
        .then(() => {
          if (listening) return;
          listening = true;
          chart.on("plotly_click", (ev) => {
            const pt = ev.points.find((q) => q.curveNumber === 0);
            if (!pt) return;
            ctx.state.predFilter = {tenth: `${state.key}:${state.cls}:${pt.customdata[3]}`};
            DD.go(ctx, "predictions");
          });
        })).catch((err) => chart.replaceWith(DD.note(err.message, "error")));
    }
    DD.afterPaint(draw);
    return DD.section("Each measure against the errors", table,
      el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "Tenths of"}), classSelect), chart, caption,
      DD.note("AUROC: how well a picture's percentile in its class tells errors from right answers (0.5: not at " +
              "all; above it, errors sit higher), and its distance from the class's median (above 0.5: errors at " +
              "the ends). q: Benjamini-Hochberg over these tests.", "muted"));
  }

  const ordinal = (k) => `${k}${[11, 12, 13].includes(k % 100) ? "th" : ["th", "st", "nd", "rd"][k % 10] || "th"}`;

  // An image's measures and where each puts it in its class (the image's detail).
  DD.measuresOf = function (ctx, row) {
    const s = DD.slicesOf(ctx);
    if (!s) return null;
    const cls = ctx.className(ctx.col.true[row]);
    const items = s.properties.map((p) => {
      const v = ctx.col["img_" + p.key][row];
      if (v === null || v === undefined) return null;
      const mid = DD.measureTenths(ctx, p.key).mid[row];
      const extreme = mid <= 0.05 || mid >= 0.95;
      return el("span", {class: "measure" + (extreme ? " extreme" : ""), dataset: {key: p.key},
                         attrs: {title: p.about + (extreme ? `; among the ${mid <= 0.05 ? p.low : p.high} 5% of ` +
                                                             `the ${cls} images` : "")}},
        `${p.label} ${valueText(p, v)} `,
        el("span", {class: "muted", text: `(${ordinal(Math.round(100 * mid))} percentile)`}));
    }).filter(Boolean);
    const inSlices = s.listed.filter((item) => DD.sliceRows(ctx, item).includes(row));
    return el("div", {class: "detail-measures", attrs: {"data-testid": "detail-measures"}},
      el("div", {class: "measure-list"}, items),
      DD.note(`Percentiles among the ${cls} images of this split; bold: in the class's lowest or highest 5%.` +
              (inSlices.length ? ` In the listed slice${inSlices.length > 1 ? "s" : ""}: ` +
                inSlices.slice(0, 3).map((i) => `${DD.sliceText(ctx, s, i)} (${i.found ? "found" : "lead"})`)
                  .join("; ") + "." :
                ""), "muted"));
  };

  DD.views.slices = {
    title: "Slices", icon: "◫",
    render(root, ctx) {
      const s = DD.slicesOf(ctx);
      if (!s) {
        root.appendChild(DD.absentNote(ctx, "slices", "No slices", "the slices", "them"));
        return;
      }
      root.appendChild(DD.section("Where the errors gather", summaryNote(ctx, s), findingsNote(s), slicesTable(ctx, s),
        DD.note("Found: below the false discovery rate. Lead: more errors than the rest, not enough to rule out " +
                "chance. One row per class, measure and side: its tail (5, 10 or 25%) with the lowest p; " +
                "`deepdive export RUN slices` lists every slice tried.", "muted")));
      root.appendChild(measuresPanel(ctx, s));
    },
  };
})(window.DD);
