// Embedding: 2-D projection of the penultimate-layer features, coloured by true class, errors ringed.
// Hovering a point shows its image; clicking opens its detail; a box or lasso selects a region: its images, what
// they are and a link that lists them in the predictions table.
"use strict";
(function (DD) {
  const el = DD.el;

  const SELECTION_THUMBS = 60;

  // The selected images: how many, which classes and errors they hold, the errors then the least confident
  // first as thumbnails, and a link listing them all in the predictions table.
  // bar: a line in the toolbar above the plot (always in view); box: the thumbnails below it.
  function showSelection(ctx, bar, box, picked) {
    DD.clear(bar);
    DD.clear(box);
    const col = ctx.col;
    const rows = [...new Set(picked)].filter((r) => Number.isInteger(r));
    if (!rows.length) {   // the line keeps its place, so the plot does not move when a selection fills it
      bar.append(el("span", {class: "muted small", text: "No selection: choose box or lasso select, then drag " +
                                                           "over the points."}));
      return;
    }
    rows.sort((a, b) => col.correct[a] - col.correct[b] || col.confidence[a] - col.confidence[b] || a - b);
    const wrong = rows.filter((r) => !col.correct[r]).length;
    const byClass = new Map();
    for (const r of rows) byClass.set(col.true[r], (byClass.get(col.true[r]) || 0) + 1);
    const classes = [...byClass].sort((a, b) => b[1] - a[1] || a[0] - b[0])
      .map(([c, k]) => `${ctx.className(c)} ×${DD.fmt.int(k)}`).join(", ");
    bar.append(
      el("span", {class: "strong", attrs: {"data-testid": "selection-count", "data-count": rows.length},
                  text: `${DD.fmt.int(rows.length)} image${rows.length === 1 ? "" : "s"} selected`}),
      el("span", {class: wrong ? "bad" : "muted", text: `${DD.fmt.int(wrong)} wrong`}),
      el("span", {class: "muted", text: `true classes: ${classes}`}),
      el("a", {class: "more", href: DD.viewHref(ctx, "predictions"), text: "list them in the predictions table →",
               attrs: {"data-testid": "selection-list"},
               on: {click: () => {
                 ctx.state.predFilter = {rows, rowsLabel: "selected in the embedding", sort: "conf-asc"};
               }}}),
      el("span", {class: "muted small", text: "(their images below the plot)"}));
    DD.append(box, [   // (DD.append skips the null a short selection leaves; Element.append would print it)
      el("div", {class: "thumbs-cell"}, rows.slice(0, SELECTION_THUMBS).map((r) =>
        DD.captioned(ctx, r, 40, `${ctx.className(col.true[r])}→${ctx.className(col.pred[r])}`))),
      rows.length > SELECTION_THUMBS ? DD.note(`the errors, then the least confident: ${SELECTION_THUMBS} of ` +
                                               `${DD.fmt.int(rows.length)}`, "muted small") : null]);
  }

  DD.views.embedding = {
    title: "Embedding", icon: "⁘",
    render(root, ctx) {
      const col = ctx.col;
      if (!col.emb_x || col.emb_x.every((v) => v === null)) {
        root.appendChild(DD.note("This analysis has no embedding (the embedding stage did not run).", "error"));
        return;
      }
      const traces = ctx.names.map((name, c) => ({type: "scattergl", mode: "markers", name, x: [], y: [], customdata: [],
        marker: {color: DD.classColor(c), size: 4, opacity: 0.55}, hoverinfo: "none",
        selected: {marker: {opacity: 0.9}}, unselected: {marker: {opacity: 0.08}}}));
      const errors = {type: "scattergl", mode: "markers", name: "errors", x: [], y: [], customdata: [], hoverinfo: "none",
        marker: {color: [], size: 9, opacity: 1, line: {color: "#111827", width: 1.5}, symbol: "circle"},
        unselected: {marker: {opacity: 0.25}}};
      for (let r = 0; r < ctx.n; r++) {
        const tr = col.correct[r] ? traces[col.true[r]] : errors;
        tr.x.push(col.emb_x[r]); tr.y.push(col.emb_y[r]); tr.customdata.push(r);
        if (!col.correct[r]) tr.marker.color.push(DD.classColor(col.true[r]));
      }
      const plot = el("div", {class: "chart tall", attrs: {"data-testid": "embedding-plot"}});
      const selection = el("div", {class: "selection", attrs: {"data-testid": "embedding-selection"}});
      const selectionBar = el("span", {class: "selection-bar", attrs: {"data-testid": "embedding-selection-bar"}});
      const drag = DD.segmented([{value: "zoom", label: "zoom"}, {value: "select", label: "box select"},
                                 {value: "lasso", label: "lasso select"}], "zoom",
        (mode) => DD.plotly().then((Plotly) => Plotly.relayout(plot, {dragmode: mode})), "embedding-drag");
      // colour by the true class, or by a measure of the picture as its percentile within its class (Slices view):
      // does the map sort the 7s by slant, the 1s by thickness?
      const measures = (DD.slicesOf(ctx) || {properties: []}).properties;
      const colourBy = measures.length ? el("select", {class: "input", attrs: {"data-testid": "embedding-colour",
                                                                             "aria-label": "colour the points by"}},
        el("option", {value: "class", text: "true class"}),
        measures.map((p) => el("option", {value: p.key, text: `${p.label}, percentile in its class`}))) : null;
      const recolour = (key) => DD.plotly().then((Plotly) => {
        const classes = traces.map((_, c) => c);
        if (key === "class") {
          return Plotly.restyle(plot, {"marker.color": traces.map((_, c) => DD.classColor(c)), "marker.showscale": false},
                                classes);
        }
        const mid = DD.measureTenths(ctx, key).mid, label = measures.find((p) => p.key === key).label;
        return Plotly.restyle(plot, {
          "marker.color": traces.map((tr) => tr.customdata.map((r) => (Number.isNaN(mid[r]) ? null : mid[r]))),
          "marker.colorscale": "Viridis", "marker.cmin": 0, "marker.cmax": 1,
          "marker.showscale": classes.map((c) => c === 0),
          "marker.colorbar": {title: {text: `${label}<br>percentile`}, tickformat: ".0%", len: 0.5, y: 0.25}}, classes);
      });
      if (colourBy) colourBy.addEventListener("change", () => recolour(colourBy.value));
      root.appendChild(el("div", {class: "panel"},
        DD.note(`Each point is one ${ctx.b.split} image, placed by its penultimate-layer features ` +
                `(${(ctx.b.summary.embedding || {}).method || "2-D projection"}), coloured by its true class ` +
                "(or by a measure of the picture, as its percentile among the images of its class). " +
                `Ringed points are the ${DD.fmt.int(ctx.errorRows.length)} errors, filled with their true class's colour. ` +
                "Hover to see an image, click to open it; click a legend entry to hide a class; select a region " +
                "to see what is in it.", "muted"),
        el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "Drag to"}), drag,
           colourBy ? el("span", {class: "tool-label", text: "Colour"}) : null, colourBy, selectionBar),
        plot, selection));
      showSelection(ctx, selectionBar, selection, []);
      DD.plotly().then((Plotly) => {
        Plotly.newPlot(plot, [...traces, errors], DD.plotLayout({hovermode: "closest", margin: {l: 30, r: 10, t: 10, b: 30},
          xaxis: {zeroline: false, showticklabels: false}, yaxis: {zeroline: false, showticklabels: false, scaleanchor: "x"},
          legend: {orientation: "v", x: 1.01, y: 0.9, itemsizing: "constant"}}), DD.plotConfig);
        plot.on("plotly_selected", (ev) => showSelection(ctx, selectionBar, selection,
          ev ? ev.points.map((pt) => pt.customdata ?? pt.data.customdata[pt.pointIndex]) : []));
        plot.on("plotly_deselect", () => showSelection(ctx, selectionBar, selection, []));
        plot.on("plotly_hover", (ev) => {
          const pt = ev.points[0];
          const r = pt.customdata;
          const e = ev.event;
          DD.tooltip.show(e.clientX, e.clientY, DD.thumb(ctx, r, 84),
            el("div", {class: "tooltip-title", text: `#${col.idx[r]}`}),
            el("div", {text: `true ${ctx.className(col.true[r])}`}),
            el("div", {class: col.correct[r] ? "ok" : "bad", text: `predicted ${ctx.className(col.pred[r])} (${DD.fmt.pct(col.confidence[r], 1)})`}));
        });
        plot.on("plotly_unhover", () => DD.tooltip.hide());
        plot.on("plotly_click", (ev) => { DD.tooltip.hide(); DD.openDetail(ctx, ev.points[0].customdata); });
      }).catch((err) => plot.replaceWith(DD.note(err.message, "error")));
    },
  };
})(window.DD);
