// Per-class table: accuracy, precision, errors, and each class's misclassified images (most confident first).
"use strict";
(function (DD) {
  const el = DD.el;
  const MAX_THUMBS = 48;

  function accuracyBar(value) {
    return el("div", {class: "acc-cell"},
      el("span", {class: "acc-track"}, el("span", {class: "acc-fill", style: {width: (value || 0) * 100 + "%"}})),
      el("span", {class: "num", text: DD.fmt.pct(value, 2)}));
  }

  DD.views.classes = {
    title: "Per class", icon: "☰",
    render(root, ctx) {
      const rows = ctx.b.summary.per_class;
      const errorsOf = Array.from({length: ctx.C}, () => []);
      for (const r of ctx.errorRows) errorsOf[ctx.col.true[r]].push(r);
      const head = ["Class", "Images", "Accuracy", "Precision", "F1", "Errors", "Misclassified images (predicted label · confidence)"];
      const body = rows.map((row) => {
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
          el("td", {class: "num" + (row.errors ? " bad" : ""), text: DD.fmt.int(row.errors)}),
          el("td", {class: "thumbs-cell", attrs: {"data-testid": "class-errors"}},
             errs.length ? [thumbs, more] : el("span", {class: "muted small", text: "no errors"})));
      });
      root.appendChild(el("div", {class: "panel"}, el("table", {class: "grid class-table", attrs: {"data-testid": "class-table"}},
        el("thead", {}, el("tr", {}, head.map((h) => el("th", {text: h})))), el("tbody", {}, body))));
    },
  };
})(window.DD);
