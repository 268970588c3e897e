// Saliency: the per-class maps and, for every misclassified image, the predicted-class vs the true-class map,
// for the selected attribution method. Signed diverging colours: red raises the class score, blue lowers it.
"use strict";
(function (DD) {
  const el = DD.el;
  const PAGE = 24;

  // The model parameter randomisation test (deepdive.analysis.saliency.sanity_check): per method, how alike its
  // maps of the class representatives rank with the trained weights and with the same weights shuffled.
  function sanityPanel(ctx, sanity) {
    const methods = ctx.b.saliency.methods.filter((m) => sanity.rank_correlation[m] !== undefined);
    const cell = (v) => el("td", {class: "num", text: v === null || v === undefined ? "–" : DD.fmt.num(v, 2)});
    return DD.section("Do the maps depend on what the model learnt?",
      DD.note(`Each method's maps of the ${sanity.n} class representatives, drawn again with every weight tensor's ` +
              "values shuffled (the model parameter randomisation test of Adebayo et al., 2018), and how alike " +
              "the two rank (Spearman's ρ of |attribution|: 1 = the same picture, 0 = unrelated). A method whose " +
              `maps stay alike (ρ ≥ ${sanity.alike_at}) draws the image more than the model. Integrated gradients and ` +
              "occlusion start from a black image, so wherever the input is 0 they give 0 whatever the weights: " +
              "the second column leaves those pixels out. \"Trained vs weights shuffled\" above shows the pairs.", "muted"),
      el("table", {class: "grid compact", attrs: {"data-testid": "sanity-table"}},
        // (no capitals: an upper-case ρ reads as a P)
        el("thead", {}, el("tr", {}, ["method", "ρ, all pixels", "ρ, where the input is not 0", "with shuffled weights"]
          .map((h) => el("th", {text: h, class: "no-caps"})))),
        el("tbody", {}, methods.map((m) => {
          const rho = sanity.rank_correlation[m];
          const alike = rho !== null && rho >= sanity.alike_at;
          return el("tr", {dataset: {method: m}},
            el("td", {text: DD.METHOD_LABELS[m] || m}), cell(rho), cell(sanity.rank_correlation_nonzero[m]),
            el("td", {class: alike ? "bad" : "ok",
                      text: rho === null ? "–" : alike ? "the map stays alike" : "the map changes"}));
        }), Object.entries(sanity.skipped || {}).map(([m, why]) => el("tr", {dataset: {method: m}},   // failed there
          el("td", {text: DD.METHOD_LABELS[m] || m}),
          el("td", {class: "muted", attrs: {colspan: "3"}, text: `not drawn with shuffled weights: ${why}`}))))));
  }

  DD.views.saliency = {
    title: "Saliency", icon: "◐",
    render(root, ctx) {
      const sal = ctx.b.saliency;
      if (!sal.methods.length) {
        root.appendChild(DD.note("This analysis has no saliency maps (the model could not be loaded when it ran).", "error"));
        return;
      }
      let kind = "rep", page = 0;
      const classGrid = el("div", {class: "sal-class-grid", attrs: {"data-testid": "class-maps"}});
      const errorGrid = el("div", {class: "sal-error-grid", attrs: {"data-testid": "error-maps"}});
      const pager = el("div", {class: "pager"});
      const coverage = DD.note("", "muted");
      // The errors the selected method has maps for (the costly methods cover only the most confident ones),
      // most confident mistakes first.
      let errors = [];
      const selectErrors = () => {
        const n = sal.errors_count[ctx.state.method];
        errors = sal.errors_rows.slice(0, n).sort((a, b) => ctx.col.confidence[b] - ctx.col.confidence[a]);
        page = Math.min(page, Math.max(0, Math.ceil(errors.length / PAGE) - 1));
        coverage.textContent = n < ctx.errorRows.length ?
          `${DD.METHOD_LABELS[ctx.state.method] || ctx.state.method} maps were precomputed for the ${n} most confident ` +
          `of the ${ctx.errorRows.length} errors` + (ctx.source.mode === "served" ?
            "; open any other image's detail to compute its maps." : ".") : "";
      };

      const sanity = (ctx.b.summary.saliency || {}).sanity || {};
      const kindNote = el("span", {class: "muted small"});
      const drawClasses = () => {
        DD.clear(classGrid);
        kindNote.textContent = kind === "random" ? "each class's representative: left with the trained weights, right " +
          "with them shuffled; ρ: how alike the two rank (below)" : "attribution toward each class: on its most " +
          "typical correctly classified image, or averaged over the class";
        ctx.names.forEach((name, c) => {
          const rep = sal.class_rep_rows[c];
          if (kind === "random") {   // the trained model's map beside the shuffled one's, and how alike they rank
            const rho = ((sanity.per_class || {})[ctx.state.method] || [])[c];
            classGrid.appendChild(el("figure", {class: "sal-class"},
              rep >= 0 && rho !== undefined ? [
                DD.saliencyImage(ctx.source.classSaliencyURL(ctx.b, ctx.state.method, c, "rep"), `class ${name}, trained`, 96),
                DD.saliencyImage(ctx.source.classSaliencyURL(ctx.b, ctx.state.method, c, "random"),
                                 `class ${name}, weights shuffled`, 96)]
                : el("div", {class: "sal-missing", style: {width: "96px", height: "96px"},
                             text: rep < 0 ? "no correctly classified image" : "not drawn for this method"}),
              el("figcaption", {text: rho === null || rho === undefined ? name : `${name} · ρ ${DD.fmt.num(rho, 2)}`})));
            return;
          }
          classGrid.appendChild(el("figure", {class: "sal-class"},
            kind === "rep" && rep >= 0 ? DD.thumb(ctx, rep, 96) : null,
            kind === "rep" && rep < 0 ? el("div", {class: "sal-missing", style: {width: "96px", height: "96px"},
                                                   text: "no correctly classified image"})
              : DD.saliencyImage(ctx.source.classSaliencyURL(ctx.b, ctx.state.method, c, kind), `class ${name}`, 96),
            el("figcaption", {text: name})));
        });
      };
      const drawErrors = () => {
        DD.clear(errorGrid);
        for (const r of errors.slice(page * PAGE, (page + 1) * PAGE)) {
          const t = ctx.col.true[r], p = ctx.col.pred[r];
          errorGrid.appendChild(el("div", {class: "sal-card", dataset: {row: r}},
            el("figure", {}, DD.thumb(ctx, r, 96), el("figcaption", {text: `#${ctx.col.idx[r]}`})),
            el("figure", {}, DD.saliencyImage(ctx.source.saliencyURL(ctx.b, ctx.state.method, r, "pred"), "predicted", 96),
               el("figcaption", {class: "bad", text: `pred ${ctx.className(p)} · ${DD.fmt.pct(ctx.col.confidence[r], 0)}`})),
            el("figure", {}, DD.saliencyImage(ctx.source.saliencyURL(ctx.b, ctx.state.method, r, "true"), "true", 96),
               el("figcaption", {class: "ok", text: `true ${ctx.className(t)}`}))));
        }
        const pages = Math.max(1, Math.ceil(errors.length / PAGE));
        DD.pager(pager, page, pages, (p) => { page = p; drawErrors(); }, ` · ${errors.length} misclassified images`);
      };

      root.appendChild(el("div", {class: "panel sticky-tools"},
        el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "Method"}),
           DD.methodSwitcher(ctx, () => { selectErrors(); drawClasses(); drawErrors(); })),
        DD.legend(ctx)));
      root.appendChild(DD.section("Per-class maps",
        el("div", {class: "toolbar"},
          DD.segmented([{value: "rep", label: "Representative image"}, {value: "mean", label: "Mean over the class"},
                        ...(sanity.available ? [{value: "random", label: "Trained vs weights shuffled"}] : [])], kind,
            (v) => { kind = v; drawClasses(); }, "class-map-kind"),
          kindNote),
        classGrid));
      if (sanity.available) root.appendChild(sanityPanel(ctx, sanity));
      root.appendChild(DD.section("Misclassified images: predicted class vs true class",
        sal.errors_rows.length ? [DD.note("Left: the image. Middle: what pushed the model toward its (wrong) " +
                                          "prediction. Right: evidence for the true class."), coverage, errorGrid, pager]
          : DD.note("No misclassified images.")));
      selectErrors();
      drawClasses();
      drawErrors();
    },
  };
})(window.DD);
