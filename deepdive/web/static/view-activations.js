// Activations: pick an image (here, or click any thumbnail anywhere and follow its detail link) and see the
// feature maps of every layer with per-layer statistics.
"use strict";
(function (DD) {
  const el = DD.el;

  DD.views.activations = {
    title: "Activations", icon: "▤",
    render(root, ctx) {
      const act = ctx.b.activations;
      const served = ctx.source.mode === "served";
      // Quick picks: class representatives and the errors (in a report: its precomputed focus set).
      const reps = ctx.b.saliency.class_rep_rows.filter((r) => r >= 0);
      const picks = served ? [...reps, ...ctx.errorRows.slice(0, 40)] : act.rows;
      if (ctx.state.activationRow === null) ctx.state.activationRow = picks.length ? picks[0] : 0;
      const selected = el("div", {class: "act-selected"});
      const layers = el("div", {class: "layers", attrs: {"data-testid": "layers"}});

      const show = (row) => {
        ctx.state.activationRow = row;
        const col = ctx.col;
        DD.clear(selected).append(DD.thumb(ctx, row, 84),
          el("div", {},
            el("div", {class: "strong", text: `Image #${col.idx[row]}`}),
            el("div", {text: `true ${ctx.className(col.true[row])} · predicted ${ctx.className(col.pred[row])} (${DD.fmt.pct(col.confidence[row], 1)})`}),
            el("div", {class: "muted small", text: ctx.category(row)})));
        for (const node of strip.querySelectorAll(".pick")) node.classList.toggle("active", Number(node.dataset.pick) === row);
        DD.loadActivations(ctx, row, layers, false);
      };

      const strip = el("div", {class: "pick-strip", attrs: {"data-testid": "activation-picks"}},
        picks.map((r) => el("button", {class: "pick", type: "button", dataset: {pick: r},
          attrs: {title: `#${ctx.col.idx[r]}: true ${ctx.className(ctx.col.true[r])}, predicted ${ctx.className(ctx.col.pred[r])}`},
          on: {click: () => show(r)}}, DD.thumb(ctx, r, 32, "nodetail"))));

      const tools = [el("span", {class: "tool-label", text: "Image"}), selected];
      if (served) {
        const input = el("input", {type: "number", min: 0, max: ctx.n - 1, placeholder: `row 0–${ctx.n - 1}`, class: "input"});
        tools.push(el("form", {class: "row-form", on: {submit: (e) => {
          e.preventDefault();
          const r = Number(input.value);
          if (Number.isInteger(r) && r >= 0 && r < ctx.n) show(r);
        }}}, input, el("button", {class: "btn small", type: "submit", text: "show"})));
      }
      root.appendChild(el("div", {class: "panel"},
        el("div", {class: "toolbar"}, tools),
        DD.note(served ? "Pick an image below, type a row, or click any thumbnail in another view and use " +
                         "“open in Activations view”. Activations are computed on demand with the run's model."
                       : `This report holds activations for ${act.rows.length} precomputed images (errors, class ` +
                         "representatives, top label issues); `deepdive serve` computes them for any image.", "muted"),
        strip));
      root.appendChild(DD.section("Feature maps by layer", layers));
      show(ctx.state.activationRow);
    },
  };
})(window.DD);
