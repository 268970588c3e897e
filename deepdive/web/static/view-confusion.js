// Confusion matrix heatmap. In "Images" mode (the default up to 20 classes) every off-diagonal cell shows its
// images, most confident mistake first; hovering a cell previews all of them larger; clicking a cell lists them
// in the predictions table, clicking one of its images opens that image.
"use strict";
(function (DD) {
  const el = DD.el;

  // Background: blue on the diagonal by the class's recall, red off it by the count relative to the largest
  // confusion, so the worst confusions stand out however accurate the model is.
  function cellColor(v, diagonal) {
    if (v <= 0) return "#ffffff";
    return diagonal ? `rgba(37, 99, 235, ${0.12 + 0.88 * v})` : `rgba(220, 38, 38, ${0.12 + 0.78 * v})`;
  }

  // Thumbnail size that fits `count` images into roughly 560×400 px.
  const previewSize = (count) => Math.max(12, Math.min(44, Math.floor(Math.sqrt((560 * 400) / Math.max(1, count))) - 2));

  function preview(ctx, t, p) {
    const rows = ctx.cell(t, p);
    const size = previewSize(rows.length);
    const grid = el("div", {class: "cm-thumbs", attrs: {"data-testid": "cell-thumbs"}});
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.appendChild(DD.thumb(ctx, r, size));
    grid.appendChild(frag);
    return [el("div", {class: "tooltip-title", text: `true ${ctx.className(t)} → predicted ${ctx.className(p)}`}),
            el("div", {class: "muted small", attrs: {"data-testid": "cell-count"}, dataset: {count: rows.length},
                       text: `${rows.length} image${rows.length === 1 ? "" : "s"} · click the cell to list them`}),
            grid];
  }

  // The images of one off-diagonal cell, at most `cap` (a 3-wide grid of 26-px thumbnails, three rows in a
  // cell), then "+N" for the rest. The diagonal keeps its count: its thousands of correct images would not
  // fit, and the hover preview and the predictions table show them.
  function cellImages(ctx, t, p, cap) {
    const rows = ctx.cell(t, p);
    const more = rows.length - cap;
    return [el("div", {class: "cm-n", text: DD.fmt.int(rows.length)}),
            el("div", {class: "cm-cell-thumbs"}, rows.slice(0, cap).map((r) => DD.thumb(ctx, r, 26))),
            more > 0 ? el("div", {class: "cm-more", attrs: {"data-testid": "cell-more"}, dataset: {more},
                              text: `+${DD.fmt.int(more)}`}) : null];
  }

  DD.views.confusion = {
    title: "Confusion matrix", icon: "▦",
    cellCap: 9,    // images shown inside one cell (tests lower it to reach the "+N" path on a small run)
    render(root, ctx) {
      const counts = ctx.b.summary.confusion.counts;
      const norm = ctx.b.summary.confusion.normalized;
      // Column %: each cell's share of its predicted class (the diagonal is the class's precision, as Row %'s is
      // its recall), from the counts
      const colSums = counts[0].map((_, p) => counts.reduce((sum, row) => sum + row[p], 0));
      const byCol = (t, p) => (colSums[p] ? counts[t][p] / colSums[p] : 0);
      // With many classes the cells get too small for pictures: the counts are the default there.
      const mode = () => ctx.state.cmMode || (ctx.C <= 20 ? "images" : "count");
      const maxOff = Math.max(1, ...counts.flatMap((row, t) => row.filter((_, p) => p !== t)));
      const shade = (t, p) => (t === p ? norm[t][p] : counts[t][p] / maxOff);
      const table = el("table", {class: "cm", attrs: {"data-testid": "confusion-matrix"}});
      const draw = () => {
        DD.clear(table);
        const m = mode();
        table.classList.toggle("images", m === "images");
        const content = (count, t, p) => {
          if (!count) return null;
          if (m === "images" && t !== p) return cellImages(ctx, t, p, DD.views.confusion.cellCap);
          return m === "norm" ? DD.fmt.pct(norm[t][p], 1) : m === "colnorm" ? DD.fmt.pct(byCol(t, p), 1) : DD.fmt.int(count);
        };
        table.appendChild(el("thead", {}, el("tr", {}, el("th", {class: "cm-corner", text: "true ↓ / predicted →"}),
          ctx.names.map((name) => el("th", {class: "cm-col", text: name})))));
        table.appendChild(el("tbody", {}, counts.map((row, t) => el("tr", {},
          el("th", {class: "cm-row", text: ctx.names[t]}),
          row.map((count, p) => el("td", {
            class: "cm-cell" + (t === p ? " diag" : "") + (count ? "" : " empty"),
            dataset: {t, p, count},
            style: {background: cellColor(shade(t, p), t === p), color: shade(t, p) > 0.6 ? "#fff" : "#111827"},
          }, content(count, t, p)))))));
      };
      draw();

      let hovered = null;
      table.addEventListener("mouseover", (e) => {
        const cell = e.target.closest("td.cm-cell");
        if (!cell || cell === hovered) return;
        hovered = cell;
        const t = Number(cell.dataset.t), p = Number(cell.dataset.p);
        DD.tooltip.show(e.clientX, e.clientY, ...preview(ctx, t, p));
        DD.measurePainted("dd-hover", e);   // mouseover → the cell's thumbnails are on screen
      });
      table.addEventListener("mousemove", (e) => { if (e.target.closest("td.cm-cell")) DD.tooltip.move(e.clientX, e.clientY); });
      table.addEventListener("mouseout", (e) => {
        const to = e.relatedTarget && e.relatedTarget.closest && e.relatedTarget.closest("td.cm-cell");
        if (to !== hovered) { hovered = null; if (!to) DD.tooltip.hide(); }
      });
      table.addEventListener("click", (e) => {
        const cell = e.target.closest("td.cm-cell");
        if (!cell || e.target.closest(".thumb")) return;   // an image in a cell opens that image (app.js)
        DD.tooltip.hide();
        ctx.state.predFilter = {true: Number(cell.dataset.t), pred: Number(cell.dataset.p)};
        DD.go(ctx, "predictions");
      });

      root.appendChild(el("div", {class: "panel"},
        el("div", {class: "toolbar"},
          DD.segmented([{value: "images", label: "Images"}, {value: "count", label: "Counts"},
                        {value: "norm", label: "Row %"}, {value: "colnorm", label: "Column %"}], mode(),
            (v) => { ctx.state.cmMode = v; draw(); }, "cm-mode"),
          el("span", {class: "muted small", text: "Rows: true class · columns: predicted class (Row %: of the " +
            "true class, the diagonal its recall; Column %: of the predicted class, the diagonal its precision) · " +
            "hover a cell to see its images, click it to list them, click an image to open it"})),
        el("div", {class: "cm-wrap"}, table)));
    },
  };
})(window.DD);
