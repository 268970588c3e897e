// Shared widgets: the run context, sprite-sheet thumbnails, probability bars, tooltip, small controls.
"use strict";
(function (DD) {
  const el = DD.el;
  let contextCount = 0;

  // Everything the views derive from a bundle, computed once per bundle.
  DD.prepare = function (bundle, source) {
    const col = bundle.examples.columns;
    const n = bundle.examples.n;
    const C = bundle.class_names.length;
    const ctx = {
      b: bundle, source, n, C, col, probs: bundle.examples.probs, names: bundle.class_names,
      uid: ++contextCount,
      state: {method: bundle.saliency.methods[0], activationRow: null, predFilter: {}},
    };
    // Rows of every confusion cell, most confident first (the order the tables use too).
    const byConf = Array.from({length: n}, (_, i) => i).sort((a, b) => col.confidence[b] - col.confidence[a] || a - b);
    const cells = Array.from({length: C * C}, () => []);
    for (const r of byConf) cells[col.true[r] * C + col.pred[r]].push(r);
    ctx.cell = (t, p) => cells[t * C + p];
    ctx.byConfidence = byConf;
    ctx.errorRows = byConf.filter((r) => !col.correct[r]);
    ctx.category = (r) => bundle.examples.categories[col.category[r]];
    ctx.className = (c) => (c === null || c === undefined || c < 0 ? "–" : bundle.class_names[c]);
    bundle.saliency.errorPos = new Map(bundle.saliency.errors_rows.map((r, k) => [r, k]));
    installSheets(ctx);
    return ctx;
  };

  // One CSS rule per sprite sheet, so a data: URI is parsed once, not once per thumbnail.
  function installSheets(ctx) {
    const style = el("style", {id: "dd-sheets-" + ctx.uid});
    style.textContent = ctx.b.images.sheets.map((url, k) =>
      `.dd-s${ctx.uid}-${k}{background-image:url("${String(url).replace(/["\\\n]/g, "")}")}`).join("\n");
    document.head.appendChild(style);
  }

  // A thumbnail of split row `row`, its longer side `size` px (square for square images), cut from the sprite
  // sheets, whose cells are the images' own width x height. Click opens the detail panel.
  DD.thumb = function (ctx, row, size = 28, extraClass = "") {
    const im = ctx.b.images;
    const sheet = Math.floor(row / im.per_sheet);
    const k = row % im.per_sheet;
    const s = size / Math.max(im.width, im.height);
    const cellW = im.width * s, cellH = im.height * s;
    const [w, h] = im.sheet_sizes[sheet];
    const col = ctx.col;
    return el("div", {
      class: `thumb dd-s${ctx.uid}-${sheet} ${col.correct[row] ? "" : "wrong"} ${extraClass}`,
      dataset: {row},
      attrs: {role: "button", tabindex: 0,
              title: `#${col.idx[row]} · true ${ctx.className(col.true[row])} · pred ${ctx.className(col.pred[row])} (${DD.fmt.pct(col.confidence[row], 1)})`},
      style: {width: cellW + "px", height: cellH + "px",
              backgroundPosition: `${-(k % im.cols) * cellW}px ${-Math.floor(k / im.cols) * cellH}px`,
              backgroundSize: `${w * s}px ${h * s}px`},
    });
  };

  // A thumbnail with a caption line under it (e.g. "→ 7 · 93%").
  DD.captioned = function (ctx, row, size, caption, cls) {
    return el("figure", {class: "thumb-fig " + (cls || "")}, DD.thumb(ctx, row, size), el("figcaption", {text: caption}));
  };

  // Tiny bar chart of all class probabilities of one row: true class green, a wrong prediction red.
  DD.probBars = function (ctx, row) {
    const box = el("div", {class: "pbars"});
    const t = ctx.col.true[row], p = ctx.col.pred[row];
    for (let c = 0; c < ctx.C; c++) {
      const v = ctx.probs[c][row];
      const cls = c === t ? "bar true" : c === p ? "bar pred" : "bar";
      box.appendChild(el("span", {class: cls, attrs: {title: `${ctx.names[c]}: ${DD.fmt.pct(v, 2)}`}},
        el("span", {class: "fill", style: {height: Math.max(v * 100, v > 0.005 ? 4 : 0) + "%"}})));
    }
    return box;
  };

  // Full probability list: one labelled horizontal bar per class.
  DD.probList = function (ctx, row) {
    const t = ctx.col.true[row], p = ctx.col.pred[row];
    return el("div", {class: "plist"}, ctx.names.map((name, c) => {
      const v = ctx.probs[c][row];
      return el("div", {class: "plist-row" + (c === t ? " true" : "") + (c === p && p !== t ? " pred" : "")},
        el("span", {class: "plist-name", text: name, attrs: {title: name}}),
        el("span", {class: "plist-track"}, el("span", {class: "plist-fill", style: {width: v * 100 + "%"}})),
        el("span", {class: "plist-val", text: DD.fmt.pct(v, 2)}));
    }));
  };

  // Segmented control: options [{value, label}], calls onChange(value).
  DD.segmented = function (options, current, onChange, testid) {
    const box = el("div", {class: "segmented", attrs: {role: "group", "data-testid": testid || ""}});
    for (const o of options) {
      const button = el("button", {class: o.value === current ? "active" : "", text: o.label, type: "button",
                                   dataset: {value: o.value}});
      button.addEventListener("click", () => {
        for (const b of box.children) b.classList.toggle("active", b === button);
        onChange(o.value);
      });
      box.appendChild(button);
    }
    return box;
  };

  DD.METHOD_LABELS = {gradient: "Gradient", smoothgrad: "SmoothGrad", integrated_gradients: "Integrated Gradients",
                      gradcam: "Grad-CAM", occlusion: "Occlusion"};
  DD.methodSwitcher = function (ctx, onChange) {
    return DD.segmented(ctx.b.saliency.methods.map((m) => ({value: m, label: DD.METHOD_LABELS[m] || m})),
      ctx.state.method, (m) => { ctx.state.method = m; DD.syncMethodNotes(ctx); onChange(m); }, "method-switcher");
  };

  // The chosen method's reading note (bundle saliency.notes), under every legend on the page; hidden when none.
  const showMethodNote = (node, ctx) => {
    node.textContent = (ctx.b.saliency.notes || {})[ctx.state.method] || "";
    node.hidden = !node.textContent;
    return node;
  };
  DD.syncMethodNotes = (ctx) => document.querySelectorAll(".method-note").forEach((n) => showMethodNote(n, ctx));

  DD.legend = function (ctx) {
    return el("div", {class: "legend", attrs: {"data-testid": "saliency-legend"}},
      el("span", {class: "legend-end away", text: "away from the class"}),
      el("img", {class: "legend-bar", src: ctx.b.saliency.legend, alt: "diverging colour scale"}),
      el("span", {class: "legend-end toward", text: "toward the class"}),
      el("span", {class: "muted small", text: "blue lowers the class score, red raises it, no colour = no effect; " +
                                              "±1 = the 99th percentile of |attribution| in each image's maps"}),
      showMethodNote(el("div", {class: "muted small method-note", attrs: {"data-testid": "method-note"}}), ctx));
  };

  // A saliency overlay image, or a note saying why there is none.
  DD.saliencyImage = function (url, alt, size) {
    if (!url) return el("div", {class: "sal-missing", style: {width: size + "px", height: size + "px"},
                                text: "not in this export"});
    return el("img", {class: "sal", src: url, alt, width: size, height: size, loading: "lazy"});
  };

  DD.categoryChip = (name) => el("span", {class: "cat cat-" + String(name).replace(/[^a-z]+/gi, "-"), text: name});

  DD.card = (label, value, sub) => el("div", {class: "card"}, el("div", {class: "card-label", text: label}),
    el("div", {class: "card-value", text: value}), sub ? el("div", {class: "card-sub", text: sub}) : null);

  // plotly reads a few tags in names, labels and hover text: a class name there is only text
  DD.plotLabel = (ctx, c) => String(ctx.className(c)).replace(/[<>&]/g, "");
  // Charts with one line per class: past MANY_CLASSES lines only the MANY_SHOWN first in `order` (class ids) are
  // drawn at first, the others a legend click away (sets each trace's `visible`; trace i is class classes[i]).
  // Returns the legend's layout: down the right side when its names would not fit one row above the chart.
  DD.MANY_CLASSES = 20;
  DD.MANY_SHOWN = 10;
  DD.classLines = function (traces, classes, order) {
    const shown = new Set(classes.length > DD.MANY_CLASSES ? order.slice(0, DD.MANY_SHOWN) : classes);
    traces.forEach((t, i) => { if (i < classes.length) t.visible = shown.has(classes[i]) ? true : "legendonly"; });
    const chars = traces.reduce((n, t) => n + String(t.name).length + 4, 0);   // ~4 more for each entry's line
    return chars > 90 || classes.length > DD.MANY_CLASSES ? DD.sideLegend() : DD.plotLayout().legend;
  };
  // A legend down the chart's right side (a fresh object each time: plotly keeps the layout it is given).
  DD.sideLegend = () => ({orientation: "v", x: 1.01, y: 1, font: {size: 11}});
  DD.section = (title, ...children) => el("section", {class: "panel"}, el("h2", {text: title}), ...children);

  // Fill `box` with ‹ prev / "page i of n" / next › controls; onPage(new page index) redraws.
  DD.pager = (box, page, pages, onPage, extra) => DD.clear(box).append(
    el("button", {class: "btn small", type: "button", text: "‹ prev", disabled: page === 0, on: {click: () => onPage(page - 1)}}),
    el("span", {class: "muted small", text: ` page ${page + 1} of ${pages}${extra || ""} `}),
    el("button", {class: "btn small", type: "button", text: "next ›", disabled: page >= pages - 1,
                  on: {click: () => onPage(page + 1)}}));

  DD.note = (text, cls) => el("p", {class: "note " + (cls || ""), text});
  // Why a view has nothing to show: the reason the analysis gave for lacking `piece` (after `none`), else that the
  // analysis predates `what` and the command that adds `it` ("it" / "them").
  DD.absentNote = (ctx, piece, none, what, it) => {
    const reason = (ctx.b.summary[piece] || {}).reason;
    return DD.note(reason ? `${none}: ${reason}.` : `This analysis predates ${what}; re-run deepdive analyze ` +
      `${ctx.b.run.id} --split ${ctx.b.split} for ${it}.`, "muted");
  };

  // Floating tooltip (confusion-cell previews, embedding hovers).
  DD.tooltip = {
    node: () => document.getElementById("tooltip"),
    show(x, y, ...children) {
      const t = DD.clear(this.node());
      DD.append(t, children);
      t.hidden = false;
      this.move(x, y);
    },
    move(x, y) {
      const t = this.node();
      const w = t.offsetWidth, h = t.offsetHeight;
      const left = x + 16 + w > window.innerWidth ? Math.max(4, x - w - 16) : x + 16;
      const top = Math.min(Math.max(4, y + 16), Math.max(4, window.innerHeight - h - 4));
      t.style.left = left + "px";
      t.style.top = top + "px";
    },
    hide() { this.node().hidden = true; },
  };

  // What the store keeps per row beside the analysis (people's reviews, tags), as a Map on the run context:
  // rowStore(slot, fetch) gives [of(ctx) -> the Map, load(ctx, cached) -> a promise of it]. cached: reuse the
  // load in flight or done; else fetch afresh. A failed load is tried again next time.
  DD.rowStore = function (slot, fetch) {
    const of = (ctx) => (ctx[slot] = ctx[slot] || new Map());
    const load = function (ctx, cached) {
      const key = slot + "Load";
      if (cached && ctx[key]) return ctx[key];
      const loading = fetch(ctx).then((entries) => {
        const map = of(ctx);
        map.clear();
        for (const [row, value] of Object.entries(entries)) map.set(Number(row), value);
        return map;
      });
      loading.catch(() => { if (ctx[key] === loading) ctx[key] = null; });
      ctx[key] = loading;
      return loading;
    };
    return [of, load];
  };

  // Plotly layout defaults shared by the charts.
  DD.plotLayout = (extra) => Object.assign({
    margin: {l: 56, r: 16, t: 36, b: 44}, font: {family: "Inter, system-ui, sans-serif", size: 12, color: "#1f2937"},
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff", hovermode: "x unified",
    legend: {orientation: "h", y: 1.14, x: 1, xanchor: "right"},
  }, extra || {});
  // Per-epoch rows as chart series: {x, rows}. An ensemble's members train one after another from scratch
  // (epochs numbered on): a gap (a null point) between members keeps a line from joining one member's last
  // epoch to the next one's first. series(key) gives the y values for one metric.
  DD.epochSeries = function (epochs) {
    const x = [], rows = [];
    epochs.forEach((e, i) => {
      if (i && e.member != null && e.member !== epochs[i - 1].member) { x.push(e.epoch - 0.5); rows.push({}); }
      x.push(e.epoch); rows.push(e);
    });
    return {x, rows, series: (key) => rows.map((e) => DD.epochValue(e, key))};
  };
  // One epoch's value of `key`: a column of the epochs table (val_acc, lr...) or a metric it logged by name.
  DD.epochValue = (e, key) => (key in e && key !== "metrics" ? e[key] : (e.metrics || {})[key]) ?? null;
  // Every metric the epochs logged: the table's columns first (those with a value), then the others by name.
  DD.EPOCH_FIELDS = ["val_acc", "train_acc", "val_loss", "train_loss", "lr", "seconds"];
  DD.epochMetrics = function (epochs) {
    const fixed = DD.EPOCH_FIELDS.filter((k) => epochs.some((e) => e[k] !== null && e[k] !== undefined));
    return fixed.concat([...new Set(epochs.flatMap((e) => Object.keys(e.metrics || {})))].sort());
  };
  // How to show a metric: its chart title and y axis. Accuracies as percentages, losses on a log scale, deepdive's
  // own readings (deepdive.sysmetrics, the recipe's pruning) in words and units; anything else by its name.
  const METRIC_INFO = {
    "system/cpu_percent": ["CPU use", {ticksuffix: "%", rangemode: "tozero"}, "% of one core"],
    "system/peak_rss_mb": ["peak memory (RSS)", {rangemode: "tozero"}, "MiB, process peak so far"],
    "system/cuda_peak_mb": ["peak GPU memory", {rangemode: "tozero"}, "MiB allocated, peak so far"],
    train_images: ["images trained on", {rangemode: "tozero"}, "per epoch (pruned epochs train fewer)"],
    lr: ["learning rate", {}, "at the epoch's end"], seconds: ["epoch time", {rangemode: "tozero", ticksuffix: " s"}, ""],
  };
  DD.metricInfo = function (key, values) {     // values: the logged values, to fit the axis to them
    if (METRIC_INFO[key]) { const [title, yaxis, unit] = METRIC_INFO[key]; return {title, yaxis, unit}; }
    const fractions = (values || []).every((v) => v === null || (v >= 0 && v <= 1));
    if (/(^|[/_.])(acc|accuracy)$/.test(key) && fractions) return {title: key, yaxis: {tickformat: ".2%"}, unit: ""};
    const positive = (values || []).every((v) => v === null || v > 0);     // a log axis has no 0 or below
    if (/(^|[/_.])loss$/.test(key) && positive) return {title: key, yaxis: {type: "log", ...DD.logTicks(values || [])},
                                                        unit: ""};
    return {title: key, yaxis: {}, unit: ""};
  };
  // A chart's title ("name · unit") and y axis for metric `key` (DD.metricInfo); per step, the learning rate's
  // unit ("at the epoch's end") is left out.
  DD.metricChart = function (key, values, perStep) {
    const info = DD.metricInfo(key, values), unit = perStep && key === "lr" ? "" : info.unit;
    return {title: unit ? `${info.title} · ${unit}` : info.title, yaxis: info.yaxis};
  };
  // The layout of the Overview's small charts, one metric each (its name as the title, no legend).
  DD.smallChartLayout = (title, xaxis, yaxis, extra) => DD.plotLayout({
    title: {text: title, font: {size: 12}, x: 0.02, xanchor: "left"}, showlegend: false,
    margin: {l: 56, r: 12, t: 32, b: 36}, xaxis, yaxis: {automargin: true, ...yaxis}, ...extra});
  // epoch number -> ensemble member, from the epochs table's rows (empty for a single model)
  DD.epochMembers = (epochs) => new Map(epochs.filter((e) => e.member != null).map((e) => [e.epoch, e.member]));
  // Log-axis ticks at 1-2-5 steps with full numbers, for the given values: plotly's own labels the minor ticks
  // with bare digits ("2 … 9" under "0.1"), which reads as values.
  // When the values span less than two such steps (e.g. 0.24-0.74: only "0.5" inside), the axis is widened to the
  // steps around them, so it always carries at least two labels to read a value against.
  DD.logTicks = function (values) {
    const ys = values.filter((v) => v > 0 && Number.isFinite(v));
    if (!ys.length) return {};
    const lo = Math.min(...ys), hi = Math.max(...ys), steps = [];
    for (let p = Math.floor(Math.log10(lo)) - 1; p <= Math.ceil(Math.log10(hi)); p++)
      for (const m of [1, 2, 5]) steps.push(+(m * 10 ** p).toPrecision(1));
    const below = Math.max(...steps.filter((v) => v <= lo)), above = Math.min(...steps.filter((v) => v >= hi));
    const axis = {tickmode: "array"};
    let vals = steps.filter((v) => v >= lo / 2 && v <= hi * 2);
    if (steps.filter((v) => v >= lo && v <= hi).length < 2) {
      vals = steps.filter((v) => v >= below && v <= above);
      axis.range = [Math.log10(below) - 0.03, Math.log10(above) + 0.03];    // log axes take log10 units
    }
    return {...axis, tickvals: vals, ticktext: vals.map((v) => String(v))};
  };
  // TensorBoard's smoothing of a noisy per-step curve: an exponential moving average, debiased so its first
  // points are not pulled toward 0; weight 0 leaves the values as they are. Gaps (null) stay gaps, and the average
  // starts afresh after one (an ensemble's next member, a diverged stretch).
  DD.smooth = function (values, weight) {
    let last = 0, n = 0;
    return values.map((v) => {
      if (v === null || !Number.isFinite(v)) { last = 0; n = 0; return null; }
      last = last * weight + (1 - weight) * v;
      n += 1;
      return weight > 0 ? last / (1 - weight ** n) : v;
    });
  };
  DD.stepSmoothing = 0.6;     // the slider's weight, kept across views and runs (TensorBoard's default)
  DD.noisy = (key) => key !== "lr";      // what the slider smooths: not the learning rate, a schedule
  DD.stepAxis = "step";       // what the per-step charts stand on: "step", or a series the run logged per step
  // The axes a run may log per step besides the step (they are drawn against, not as charts): where in training a
  // point is as a fractional epoch, and as seconds of training (the recipe's; the bench's clock).
  DD.STEP_AXES = [{value: "step", label: "step"}, {value: "epoch", label: "epoch"},
                  {value: "train_seconds", label: "time", title: "training seconds"}];
  DD.stepAxes = (steps) => DD.STEP_AXES.filter((a) => a.value === "step" || (steps || {})[a.value]);
  DD.stepAxisTitle = (axis) => (DD.STEP_AXES.find((a) => a.value === axis) || {}).title || axis;
  // Every name a run logged per step: the recipe's three first, then the others by name; the axes are not charts.
  DD.STEP_FIRST = ["train_loss", "train_acc", "lr"];
  const stepRank = (k) => DD.STEP_FIRST.indexOf(k) + 1 || 99;
  DD.stepMetrics = (steps) => Object.keys(steps || {}).filter((k) => !DD.STEP_AXES.some((a) => a.value === k))
    .sort((a, b) => stepRank(a) - stepRank(b) || a.localeCompare(b));
  // One logged series {x, y} against the step or another axis the run logged at the same steps (points without it
  // are left out; null: the run logged no such axis). memberOf (epoch number -> ensemble member, from the epochs
  // table): a gap (null) where one member's points end and the next one's begin, as the epoch charts have, so no
  // line joins a trained member to a fresh one.
  // step -> value of the series `name` the run logged per step (null: it logged none)
  const alongSteps = (steps, name) =>
    (steps[name] ? new Map(steps[name].step.map((st, i) => [st, steps[name].value[i]])) : null);
  DD.stepSeries = function (steps, key, axis, memberOf) {
    const s = steps[key];
    const at = alongSteps(steps, "epoch"), xs = axis === "step" ? null : alongSteps(steps, axis);
    if (axis !== "step" && !xs) return null;
    const member = (st) => (at && memberOf && at.get(st) != null ? memberOf.get(Math.ceil(at.get(st) - 1e-9)) : null);
    const x = [], y = [];
    s.step.forEach((st, i) => {
      const xv = xs ? xs.get(st) : st;
      if (xv == null) return;
      if (x.length && member(st) != null && member(st) !== member(s.step[i - 1])) { x.push(xv); y.push(null); }
      x.push(xv);
      y.push(s.value[i]);
    });
    return {x, y};
  };
  // Where each epoch ended on the per-step charts' axis (the steps at which the logged epoch is whole), as thin
  // vertical lines; none past 60 epochs, where they would crowd the chart.
  DD.epochLines = function (steps, axis) {
    if (!steps.epoch) return [];
    const xs = axis === "step" ? null : alongSteps(steps, axis) || new Map();
    const ends = steps.epoch.value.map((v, i) => [v, steps.epoch.step[i]])
      .filter(([v]) => v !== null && Math.abs(v - Math.round(v)) < 1e-9 && v > 0)
      .map(([, st]) => (xs ? xs.get(st) : st)).filter((x) => x != null);
    if (ends.length > 60) return [];
    return ends.map((x) => ({type: "line", xref: "x", yref: "paper", y0: 0, y1: 1, x0: x, x1: x,
                             line: {color: "#e5e7eb", width: 1}, layer: "below"}));
  };
  // The switch of the per-step charts' axis among `axes` (DD.stepAxes of the runs drawn).
  DD.stepAxisSwitch = (axes, redraw) => DD.segmented(axes, DD.stepAxis,
    (axis) => { DD.stepAxis = axis; redraw(axis); }, "step-axis");
  // A smoothing slider that calls redraw(weight) as it moves.
  DD.smoothingSlider = function (redraw) {
    const readout = el("span", {class: "muted small", text: DD.stepSmoothing.toFixed(2)});
    const slider = el("input", {type: "range", min: "0", max: "0.99", step: "0.01", value: String(DD.stepSmoothing),
                                attrs: {"data-testid": "step-smoothing", "aria-label": "smoothing"}});
    slider.addEventListener("input", () => {
      DD.stepSmoothing = Number(slider.value);
      readout.textContent = DD.stepSmoothing.toFixed(2);
      redraw(DD.stepSmoothing);
    });
    return el("label", {class: "filter"}, el("span", {class: "tool-label", text: "Smoothing"}), slider, readout);
  };
  DD.plotConfig = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  // The split's near-duplicates (analysis.duplicates), by row, built once from the summary's lists:
  // train: row -> {idx, label, similarity} of its training twin; split: row -> {row, similarity} of its twin here.
  DD.duplicatesOf = function (ctx) {
    if (!ctx.duplicates) {
      const d = ctx.b.summary.duplicates || {};
      const train = new Map(), split = new Map();
      if (d.available) {
        for (const [row, idx, label, similarity] of d.train.listed) train.set(row, {idx, label, similarity});
        for (const [a, b, similarity] of (d.split ? d.split.listed : [])) {
          split.set(a, {row: b, similarity});
          split.set(b, {row: a, similarity});
        }
      }
      ctx.duplicates = {train, split};
    }
    return ctx.duplicates;
  };

  // One near-duplicate pair as two pictures side by side: the row's thumbnail and its twin (a training image's
  // picture when the bundle has it, else a placeholder; a row of the split as its thumbnail), captioned with the
  // twin's label and their similarity; framed orange when the two labels differ.
  DD.duplicatePair = function (ctx, row, kind, size) {
    const twin = DD.duplicatesOf(ctx)[kind].get(row);
    const label = kind === "train" ? twin.label : ctx.col.true[twin.row];
    const conflict = label !== ctx.col.true[row];
    const pictures = ((ctx.b.duplicates = ctx.b.duplicates || {}).pictures = ctx.b.duplicates.pictures || {});
    const picture = (uri) => el("img", {class: "dyn-img", src: uri, alt: `training image #${twin.idx}`,
                                        style: {width: size + "px", height: size + "px"}});
    let other;
    if (kind === "split") other = DD.thumb(ctx, twin.row, size);
    else if (pictures[twin.idx]) other = picture(pictures[twin.idx]);
    else {
      // the bundle carries the first listed twins' pictures; served, the others come when shown (a report has
      // only those)
      other = el("div", {class: "dyn-img missing", style: {width: size + "px", height: size + "px"},
                         title: ctx.source.duplicatePictures ? "loading…" :
                           "no picture: a report holds those of the first listed pairs only (deepdive serve shows any)"});
      if (ctx.source.duplicatePictures) {
        ctx.source.duplicatePictures(ctx.b, [twin.idx]).then((got) => {
          if (!got[twin.idx]) return;
          pictures[twin.idx] = got[twin.idx];
          other.replaceWith(picture(got[twin.idx]));
        }).catch((err) => { other.title = `no picture: ${err.message}`; });
      }
    }
    const where = kind === "train" ? `train #${twin.idx}` : `#${ctx.col.idx[twin.row]}`;
    return el("figure", {class: "dup-pair" + (conflict ? " conflict" : ""), dataset: {row, kind},
                         attrs: {"data-testid": "dup-pair", title: `#${ctx.col.idx[row]} labelled ` +
                                 `${ctx.className(ctx.col.true[row])} · ${where} labelled ${ctx.className(label)} · ` +
                                 `cosine similarity of their pixels ${DD.fmt.num(twin.similarity, 4)}`}},
      el("div", {class: "dup-pictures"}, DD.thumb(ctx, row, size), other),
      el("figcaption", {text: `${ctx.className(ctx.col.true[row])} · ${ctx.className(label)} · ` +
                              DD.fmt.num(twin.similarity, 3)}));
  };

  // Runs as groups (W&B's grouping): by recipe (the server's recipe_group, as `deepdive runs --group-by recipe`
  // groups: the dataset and the recipe without the seed, so the seeds of one recipe go together) or by name.
  // Returns [{key, runs: [run]}], in the order the runs come.
  DD.GROUP_BY = {none: "no grouping", recipe: "recipe (seeds together)", name: "name"};
  DD.groupRuns = function (runs, by) {
    const key = (r) => (by === "name" ? r.name : r.recipe_group);
    const groups = new Map();
    for (const r of runs) {
      if (!groups.has(key(r))) groups.set(key(r), []);
      groups.get(key(r)).push(r);
    }
    return [...groups].map(([k, members]) => ({key: k, runs: members}));
  };

  // A group's curves as one: at each x that any of them has, the mean, least and greatest of those that have it.
  DD.groupBand = function (series) {
    const at = new Map();
    for (const s of series) {
      s.x.forEach((x, i) => {
        const v = s.y[i];
        if (v === null || v === undefined || !Number.isFinite(v)) return;
        if (!at.has(x)) at.set(x, []);
        at.get(x).push(v);
      });
    }
    const x = [...at.keys()].sort((a, b) => a - b), vals = x.map((v) => at.get(v));
    return {x, mean: vals.map((v) => v.reduce((a, b) => a + b, 0) / v.length), lo: vals.map((v) => Math.min(...v)),
            hi: vals.map((v) => Math.max(...v)), n: vals.map((v) => v.length)};
  };

  // Runs whose points lie at different x (training time): each resampled by linear interpolation onto every x any
  // of them has, within its own first and last (W&B resamples grouped runs so); outside its span a run has none.
  DD.resample = function (series) {
    const grid = [...new Set(series.flatMap((s) => s.x))].sort((a, b) => a - b);
    return series.map((s) => {
      const pts = s.x.map((x, i) => [x, s.y[i]]).filter(([, y]) => y !== null && Number.isFinite(y))
        .sort((a, b) => a[0] - b[0]);
      let k = 0;
      return {x: grid, y: grid.map((x) => {
        if (!pts.length || x < pts[0][0] || x > pts[pts.length - 1][0]) return null;
        while (k < pts.length - 1 && pts[k + 1][0] < x) k++;
        const [x0, y0] = pts[k], [x1, y1] = pts[Math.min(k + 1, pts.length - 1)];
        return x1 === x0 ? (x === x0 ? y0 : y1) : y0 + (y1 - y0) * (x - x0) / (x1 - x0);
      })};
    });
  };

  // The area between lo and hi along x, shaded in a "#rrggbb" colour at the given opacity: two Plotly traces, the
  // second filled down to the first, neither hovered nor in the legend.
  DD.shade = function (x, lo, hi, color, opacity, group) {
    const rgb = color.match(/\w\w/g).map((h) => parseInt(h, 16)).join(",");
    const edge = {x, mode: "lines", line: {width: 0, color}, hoverinfo: "skip", showlegend: false, legendgroup: group};
    return [{...edge, y: lo}, {...edge, y: hi, fill: "tonexty", fillcolor: `rgba(${rgb},${opacity})`}];
  };

  // Plotly traces of a band: the range shaded in the colour, the mean drawn over it (its hover: mean, range, n).
  DD.bandTraces = function (band, name, color, dash, showRange = true) {
    return [
      ...(showRange ? DD.shade(band.x, band.lo, band.hi, color, 0.18, name) : []),
      {x: band.x, y: band.mean, name, legendgroup: name, mode: "lines", line: {color, width: 2, dash},
       customdata: band.x.map((_, i) => [band.lo[i], band.hi[i], band.n[i]]),
       hovertemplate: "%{y:.4g} mean of %{customdata[2]} (%{customdata[0]:.4g}–%{customdata[1]:.4g})" +
                      "<extra>%{fullData.name}</extra>"},
    ];
  };
})(window.DD);
