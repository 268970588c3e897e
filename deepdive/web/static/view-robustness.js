// Robustness: what still fools the model (deepdive.analysis.robustness). The right answers among a
// class-stratified sample of the pictures are turned, shifted, zoomed, slanted, thickened and thinned by growing
// amounts, and attacked (Captum FGSM then PGD) for the smallest change of every pixel, until the answer changes;
// the errors go the other way, toward their label. The page reads the bundle's per-picture table; the pictures it
// inlines are the most easily fooled and the errors'.
"use strict";
(function (DD) {
  const el = DD.el;
  const PICTURES_SHOWN = 12;   // web.maps.FRAGILE_SHOWN

  DD.robustnessOf = (ctx) => {
    const s = ctx.b.summary.robustness;
    return s && s.available && ctx.b.robustness && ctx.b.robustness.available ? s : null;
  };
  DD.sizeText = (fam, v) => (fam.unit === "ε∞" ? `ε∞ ${DD.fmt.num(v, 3)}` :
    `${DD.fmt.num(v, 0)}${fam.unit === "px" ? " px" : fam.unit}`);
  const a = (word) => (/^[aeiou]/i.test(word) ? "an " : "a ") + word;
  const cap = (word) => word.charAt(0).toUpperCase() + word.slice(1);
  // what nothing flipping means (analyses before "holds": to the largest size)
  const beyond = (fam) => fam.holds || `holds to ${DD.sizeText(fam, fam.sizes[fam.sizes.length - 1])}`;
  // a median size to flip (None: at least half held through every size), as Compare and verify-advice say it
  DD.medianSizeText = (fam, v) => (v === null ? "beyond the largest" : DD.sizeText(fam, v));
  // One kind of change on one picture: the picture as changed and what it did (or that nothing up to the largest
  // size did); `fam` the kind (label, holds), `f` its entry for the picture (size, variant, into, image).
  DD.robustnessCard = (ctx, fam, f, mending) => {
    const caption = f.size === null ? `${fam.label}: ${beyond(fam)}` :
      `${f.variant}${mending ? "" : ` → ${ctx.className(f.into)}`}`;
    return el("figure", {class: "rob-card", dataset: {family: f.id}}, picture(f.image, caption),
              el("figcaption", {text: caption}));
  };
  const positions = (ctx) => {
    if (!ctx.robustnessPos) ctx.robustnessPos = new Map(ctx.b.robustness.rows.map((r, k) => [r, k]));
    return ctx.robustnessPos;
  };
  DD.robustnessTried = (ctx, row) => Boolean(DD.robustnessOf(ctx)) && positions(ctx).has(row);

  // The bundle's per-row table (web.maps.robustness_bundle): errors from errors_from on, variants as codes.
  const mendingAt = (r, k) => k >= r.errors_from;
  const variantOf = (r, id, k) => {
    const v = r.variant[id], code = v.codes[k];
    return code < 0 ? "" : v.names[code];
  };

  // One row's entries from the bundle, as GET .../robustness/{row} gives them (image null where not inlined).
  DD.robustnessLocal = function (b, row) {
    const r = b.robustness, k = r.available ? r.rows.indexOf(row) : -1;
    if (k < 0) return null;
    const pics = r.pictures[String(row)] || null;
    return {row, mending: mendingAt(r, k), families: Object.keys(r.size).map((id, f) => ({
      id, size: r.size[id][k], variant: variantOf(r, id, k), into: r.into[id][k], image: pics ? pics[f] : null}))};
  };

  // The right answers tried that a change of family `id` up to `size` flips (a predictions filter "id:size");
  // sizes compared as the analysis does (robustness.flipped_by: float32 0.05 is still "up to 0.05").
  DD.fooledRows = function (ctx, value) {
    const [id, size] = String(value).split(":"), r = DD.robustnessOf(ctx) && ctx.b.robustness;
    if (!r || !r.size[id]) return null;
    return r.rows.filter((row, k) => !mendingAt(r, k) && r.size[id][k] !== null &&
                                     r.size[id][k] <= Number(size) + 1e-6);
  };
  DD.fooledText = function (ctx, value) {
    const [id, size] = String(value).split(":"), s = DD.robustnessOf(ctx);
    const fam = s && s.families.find((f) => f.id === id);
    return fam ? `fooled by ${a(fam.label)} up to ${DD.sizeText(fam, Number(size))}` : null;
  };
  const listFooled = (ctx, fam, size) => { ctx.state.predFilter = {fooled: `${fam.id}:${size}`}; };

  // The rows of a family, by size: right answers most easily fooled first.
  function fragile(ctx, fam) {
    const r = ctx.b.robustness;
    return r.rows.map((row, k) => [row, r.size[fam.id][k], k])
      .filter(([, size, k]) => !mendingAt(r, k) && size !== null).sort((a, b) => a[1] - b[1]);
  }

  function picture(uri, title) {
    return uri ? el("img", {class: "rob-img", src: uri, alt: title, attrs: {title}}) :
      el("div", {class: "rob-img rob-missing", text: "–", attrs: {title: "not inlined: run deepdive serve"}});
  }

  DD.robustnessNote = (ctx, s) => summaryNote(ctx, s);
  function summaryNote(ctx, s) {
    if (!s.n) {
      return el("p", {class: "note", attrs: {"data-testid": "robustness-summary"}, text: "No right answer among the " +
        `${DD.fmt.int(s.drawn || 0)} pictures drawn to try: only the errors were searched, toward their label.`});
    }
    const fams = s.families;
    const adv = fams.find((f) => f.id === "adversarial");
    const natural = fams.filter((f) => f.id !== "adversarial")
      .map((f) => `${a(f.label)} of up to ${DD.sizeText(f, f.headline)} flips ${DD.fmt.pct(f.headline_flipped, 1)}`);
    const drawn = s.drawn !== undefined && s.drawn >= ctx.n ? "all of them" :
      `among ${DD.fmt.int(s.drawn || 500)} pictures drawn, each class in its share`;
    let text = `Of ${DD.fmt.int(s.n)} right answers (${drawn}), ${natural.join(", ")}.`;
    if (adv) {
      text += ` A change no one would see, every pixel moved by at most ${DD.fmt.num(adv.headline, 2)} of its ` +
        `range, flips ${DD.fmt.pct(adv.headline_flipped, 1)}` + (adv.median !== null ? `; half of them flip by ` +
        `${DD.sizeText(adv, adv.median)} or less (an upper bound: FGSM steps, then PGD)` : "") + ".";
      if (adv.error_pairs) {
        text += ` ${DD.fmt.int(adv.into_error_pairs)} of its ${DD.fmt.int(adv.flipped)} flips land on the ` +
          `${adv.error_pairs} class pairs (of ${ctx.C * (ctx.C - 1)}) the test errors fall on, where flips to any ` +
          `other class alike would put ${DD.fmt.int(Math.round(adv.into_error_pairs_chance))}: the attack pushes ` +
          (adv.into_error_pairs > 1.5 * adv.into_error_pairs_chance ? "along the model's real mistakes." :
           "elsewhere than the model's real mistakes.");
      }
    }
    return el("p", {class: "note", attrs: {"data-testid": "robustness-summary"}, text});
  }

  function familyTable(ctx, s, state, redraw) {
    return el("table", {class: "grid compact", attrs: {"data-testid": "robustness-families"}},
      el("thead", {}, el("tr", {}, ["change", "sizes tried", "right answers it flips", "median size to flip",
                                    "flips on the errors' pairs", "errors it makes right (median size)"]
        .map((h) => el("th", {text: h})))),
      el("tbody", {}, s.families.map((f) => el("tr", {class: "clickable" + (f.id === state.family ? " active" : ""),
        dataset: {family: f.id}, attrs: {"data-testid": "robustness-family"},
        on: {click: () => { state.family = f.id; redraw(); }}},
        el("td", {text: f.label}),
        el("td", {class: "small", text: `${DD.sizeText(f, f.sizes[0])} … ` +
                                        `${DD.sizeText(f, f.sizes[f.sizes.length - 1])}`}),
        el("td", {class: "num", text: `${DD.fmt.int(f.flipped)} of ${DD.fmt.int(f.n)} ` +
                                      `(${DD.fmt.pct(f.flipped / Math.max(1, f.n), 1)})`}),
        el("td", {class: "num", text: f.median === null ? beyond(f) : DD.sizeText(f, f.median)}),
        el("td", {class: "num", attrs: {title: "if each flip went to any other class alike: " +
          `${DD.fmt.num(f.into_error_pairs_chance, 1)}`}, text: f.error_pairs && f.flipped ?
          `${DD.fmt.int(f.into_error_pairs)} (${DD.fmt.pct(f.into_error_pairs / f.flipped, 0)}; by chance ` +
          `${DD.fmt.pct(f.into_error_pairs_chance / f.flipped, 0)})` : "–"}),
        el("td", {class: "num", text: f.errors.n ? `${f.errors.mended} of ${f.errors.n}` +
          (f.errors.median !== null ? ` (${DD.sizeText(f, f.errors.median)})` : "") : "–"})))));
  }

  function curveChart(ctx, fam) {
    const chart = el("div", {class: "chart", attrs: {"data-testid": "robustness-chart"}});
    const sizes = [0, ...fam.sizes];
    const traces = fam.per_class.map((ys, c) => ({type: "scatter", mode: "lines", name: DD.plotLabel(ctx, c),
      x: sizes, y: [1, ...ys], line: {width: 1.2, color: DD.classColor(c)},
      hovertemplate: "%{fullData.name}: %{y:.1%} right at %{x}<extra></extra>"}));
    traces.push({type: "scatter", mode: "lines+markers", name: "all", x: sizes, y: [1, ...fam.curve],
                 line: {color: "#111827", width: 3}, hovertemplate: "all: %{y:.1%} right at %{x}<extra></extra>"});
    // Many classes: those with the least still right at the largest size drawn (ties: the earlier drop first); a
    // class with no right answer tried (null shares) last.
    const classes = fam.per_class.map((_, c) => c);
    const last = (c) => fam.per_class[c].at(-1) ?? Infinity;
    const held = (c) => fam.per_class[c].reduce((sum, y) => sum + (y ?? 1), 0);
    const worst = classes.slice().sort((a, b) => last(a) - last(b) || held(a) - held(b) || a - b);
    const legend = DD.classLines(traces, classes, worst);
    DD.afterPaint(() => DD.plotly().then((Plotly) => Plotly.react(chart, traces, DD.plotLayout({
      margin: {l: 56, r: 16, t: 16, b: 44}, legend,
      xaxis: {title: {text: `${fam.label} (${fam.unit}), the smallest that flips each answer`}},
      yaxis: {title: {text: "share still right"}, tickformat: ".0%"}}), DD.plotConfig))
      .then(() => chart.on("plotly_click", (ev) => {      // a point: the right answers flipped by that size
        const x = ev.points.length ? ev.points[0].x : 0;
        if (!(x > 0)) return;
        listFooled(ctx, fam, x);
        DD.go(ctx, "predictions");
      }))
      .catch((err) => chart.replaceWith(DD.note(err.message, "error"))));
    return chart;
  }

  function intoChart(ctx, fam) {
    const chart = el("div", {class: "chart", attrs: {"data-testid": "robustness-into"}});
    const z = Array.from({length: ctx.C}, () => new Array(ctx.C).fill(null));   // null: an empty cell
    for (const [t, q, n] of fam.into) z[t][q] = n;
    const names = ctx.names.map((_, c) => DD.plotLabel(ctx, c));
    const counts = ctx.b.summary.confusion.counts;
    const text = z.map((row, t) => row.map((n, q) => (n ? String(n) : "") + (t !== q && counts[t][q] ? " •" : "")));
    const zmax = Math.max(1, ...z.flat().filter((n) => n !== null));
    DD.afterPaint(() => DD.plotly().then((Plotly) => Plotly.react(chart, [{type: "heatmap", z, x: names, y: names,
      text, texttemplate: "%{text}", colorscale: "Reds", showscale: false, zmin: 0, zmax,
      hovertemplate: "%{y} turned into %{x}: %{z}<extra></extra>"}], DD.plotLayout({
      margin: {l: 70, r: 16, t: 16, b: 56}, xaxis: {title: {text: "turned into"}, type: "category"},
      yaxis: {title: {text: "label"}, autorange: "reversed", type: "category"}}), DD.plotConfig))
      .catch((err) => chart.replaceWith(DD.note(err.message, "error"))));
    return chart;
  }

  function fragileGrid(ctx, fam) {
    const items = fragile(ctx, fam).filter(([row]) => ctx.b.robustness.pictures[String(row)]).slice(0, PICTURES_SHOWN);
    if (!items.length) return DD.note(`No right answer tried flips under ${a(fam.label)} up to ` +
      `${DD.sizeText(fam, fam.sizes[fam.sizes.length - 1])}.`, "muted");
    const f = Object.keys(ctx.b.robustness.size).indexOf(fam.id);
    return el("div", {class: "rob-grid", attrs: {"data-testid": "robustness-fragile"}}, items.map(([row, , k]) => {
      const into = ctx.b.robustness.into[fam.id][k], variant = variantOf(ctx.b.robustness, fam.id, k);
      return el("figure", {class: "rob-card", dataset: {row}},
        el("div", {class: "rob-pair"}, DD.thumb(ctx, row, 56),
          el("span", {class: "rob-arrow", text: "→"}), picture(ctx.b.robustness.pictures[String(row)][f], variant)),
        el("figcaption", {text: `${ctx.className(ctx.col.true[row])} → ${ctx.className(into)} · ${variant}`}));
    }));
  }

  function errorsTable(ctx, s) {
    const r = ctx.b.robustness, fams = s.families;
    const rows = r.rows.map((row, k) => [row, k]).filter(([, k]) => mendingAt(r, k));
    if (!rows.length) return DD.note("No errors to make right.", "muted");
    const adv = fams[fams.length - 1].id;
    rows.sort((a, b) => (r.size[adv][a[1]] ?? Infinity) - (r.size[adv][b[1]] ?? Infinity));
    return el("div", {class: "rob-errors-wrap"}, el("table", {class: "grid compact rob-errors",
                                                            attrs: {"data-testid": "robustness-errors"}},
      el("thead", {}, el("tr", {}, ["error", "", ...fams.map((f) => f.label)]
        .map((h) => el("th", {text: h})))),
      el("tbody", {}, rows.map(([row, k]) => {
        const pics = r.pictures[String(row)];
        return el("tr", {dataset: {row}, attrs: {"data-testid": "robustness-error"}},
          el("td", {}, DD.thumb(ctx, row, 42)),
          el("td", {class: "small rob-error-text", text: `${ctx.className(ctx.col.true[row])} read as ` +
            `${ctx.className(ctx.col.pred[row])} (${DD.fmt.pct(ctx.col.confidence[row], 0)})`}),
          fams.map((f, i) => el("td", {}, r.size[f.id][k] === null ?
            el("span", {class: "muted small", text: beyond(f)}) :
            el("div", {class: "rob-cell"}, pics ? picture(pics[i], variantOf(r, f.id, k)) : null,
              el("span", {class: "small", text: f.id === "adversarial" ? DD.sizeText(f, r.size[f.id][k]) :
                variantOf(r, f.id, k)})))));
      }))));
  }

  // The image's own entries (detail panel): what flips it, or what makes the error right.
  DD.loadRobustness = async function (ctx, row, target) {
    const s = DD.robustnessOf(ctx);
    let result = DD.robustnessLocal(ctx.b, row);
    if (!s || !result) return;
    if (result.families.some((f) => !f.image) && ctx.source.robustness) {
      try { result = await ctx.source.robustness(ctx.b, row); } catch (err) { /* the bundle's numbers stand */ }
    }
    const byId = Object.fromEntries(s.families.map((f) => [f.id, f]));
    const t = ctx.col.true[row];
    DD.clear(target).append(
      el("p", {class: "note", attrs: {"data-testid": "robustness-reading"}, text: result.mending ?
        `The smallest change of each kind that makes the model read it as ${ctx.className(t)}, its label:` :
        "The smallest change of each kind that flips the model's answer:"}),
      el("div", {class: "rob-grid"}, result.families.map((f) => DD.robustnessCard(ctx, byId[f.id], f,
                                                                                    result.mending))));
  };

  DD.views.robustness = {
    title: "Robustness", icon: "⟲",
    render(root, ctx) {
      const s = DD.robustnessOf(ctx);
      if (!s) {
        root.appendChild(DD.absentNote(ctx, "robustness", "Nothing on what fools the model", "the robustness search",
                                       "it"));
        return;
      }
      const state = ctx.state.robustness = ctx.state.robustness || {family: s.families[0].id};
      const head = el("div");
      const body = el("div");
      const draw = () => {
        const fam = s.families.find((f) => f.id === state.family) || s.families[0];
        DD.clear(head).appendChild(DD.section("What still fools it", summaryNote(ctx, s),
          familyTable(ctx, s, state, draw),
          DD.note("Each right answer is changed by growing amounts until the model's answer changes (turns, " +
                  "zooms and slants both ways, shifts four ways, strokes up to 3 px thicker or 1 px thinner; " +
                  "the invisible change: Captum's FGSM in steps of 0.01, then PGD between half and all of where " +
                  "it flipped). Click a row for its curves and pictures; `deepdive export RUN robustness` lists " +
                  "every picture tried.", "muted")));
        DD.clear(body).append(
          DD.section(`${cap(fam.label)}: how much stays right`, curveChart(ctx, fam),
            DD.note(`The share of the right answers tried that no ${fam.label} up to the size on the axis flips, ` +
                    "each class and all. Click a point for the pictures flipped by its size; a class in the " +
                    "legend to hide it" + (fam.per_class.length > DD.MANY_CLASSES ? ` (of the ` +
                    `${fam.per_class.length} classes the ${DD.MANY_SHOWN} with the least still right at the ` +
                    "largest size are drawn; click another to add it)." : "."), "muted small")),
          DD.section(`Most easily fooled by ${a(fam.label)}`, fragileGrid(ctx, fam),
            fam.flipped ? el("div", {class: "btn-row"}, el("a", {class: "btn", href: DD.viewHref(ctx, "predictions"),
              attrs: {"data-testid": "robustness-list"}, on: {click: () => listFooled(ctx, fam, fam.headline)},
              text: `list the ${DD.fmt.int(DD.fooledRows(ctx, `${fam.id}:${fam.headline}`).length)} it flips up ` +
                    `to ${DD.sizeText(fam, fam.headline)} →`})) : null),
          DD.section(`Where ${a(fam.label)} turns them`, intoChart(ctx, fam),
            DD.note("Rows: the label; columns: what the model answered after the change. • marks the pairs the " +
                    "test errors fall on.", "muted small")),
          DD.section("How near the errors are to right", errorsTable(ctx, s),
            DD.note("For each error the smallest change of each kind that makes the model give its label. An " +
                    "error a faint change mends sits on the boundary; one no change mends is read with conviction.",
                    "muted small")));
      };
      draw();
      root.append(head, body);
    },
  };
})(window.DD);
