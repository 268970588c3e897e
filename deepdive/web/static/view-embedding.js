// Embedding: 2-D projection of the penultimate-layer features, coloured by true class, errors ringed.
// Hovering a point shows its image; clicking opens its detail.
"use strict";
(function (DD) {
  const el = DD.el;

  DD.views.embedding = {
    title: "Embedding", icon: "⁘",
    render(root, ctx) {
      const col = ctx.col;
      if (!col.emb_x || col.emb_x.every((v) => v === null)) {
        root.appendChild(DD.note("This analysis has no embedding (the embedding stage did not run).", "error"));
        return;
      }
      const traces = ctx.names.map((name, c) => ({type: "scattergl", mode: "markers", name, x: [], y: [], customdata: [],
        marker: {color: DD.classColor(c), size: 4, opacity: 0.55}, hoverinfo: "none"}));
      const errors = {type: "scattergl", mode: "markers", name: "errors", x: [], y: [], customdata: [], hoverinfo: "none",
        marker: {color: [], size: 9, opacity: 1, line: {color: "#111827", width: 1.5}, symbol: "circle"}};
      for (let r = 0; r < ctx.n; r++) {
        const tr = col.correct[r] ? traces[col.true[r]] : errors;
        tr.x.push(col.emb_x[r]); tr.y.push(col.emb_y[r]); tr.customdata.push(r);
        if (!col.correct[r]) tr.marker.color.push(DD.classColor(col.true[r]));
      }
      const plot = el("div", {class: "chart tall", attrs: {"data-testid": "embedding-plot"}});
      root.appendChild(el("div", {class: "panel"},
        DD.note(`Each point is one ${ctx.b.split} image, placed by its penultimate-layer features ` +
                `(${(ctx.b.summary.embedding || {}).method || "2-D projection"}), coloured by its true class. ` +
                `Ringed points are the ${DD.fmt.int(ctx.errorRows.length)} errors, filled with their true class's colour. ` +
                "Hover to see an image, click to open it; click a legend entry to hide a class.", "muted"),
        plot));
      DD.plotly().then((Plotly) => {
        Plotly.newPlot(plot, [...traces, errors], DD.plotLayout({hovermode: "closest", margin: {l: 30, r: 10, t: 10, b: 30},
          xaxis: {zeroline: false, showticklabels: false}, yaxis: {zeroline: false, showticklabels: false, scaleanchor: "x"},
          legend: {orientation: "v", x: 1.01, y: 0.9, itemsizing: "constant"}}), DD.plotConfig);
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
