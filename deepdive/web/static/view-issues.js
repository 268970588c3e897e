// Label issues and error taxonomy: why each mistake is a mistake, and the ranked list of suspected label errors.
"use strict";
(function (DD) {
  const el = DD.el;
  const PAGE = 50;

  function taxonomy(ctx) {
    const tax = ctx.b.summary.taxonomy || {};
    const cats = ctx.b.examples.categories;
    const names = tax.categories || cats.filter((c) => c !== "correct");
    const blocks = names.map((cat) => {
      const code = cats.indexOf(cat);   // -1: no image in this category
      const rows = code < 0 ? [] : ctx.errorRows.filter((r) => ctx.col.category[r] === code);
      return el("div", {class: "tax-block", dataset: {category: cat}},
        el("div", {class: "tax-head"}, DD.categoryChip(cat),
          el("span", {class: "strong", text: ` ${DD.fmt.int(rows.length)}`}),
          rows.length ? el("a", {class: "more", text: "list them →", href: DD.viewHref(ctx, "predictions"),
                                 on: {click: () => { ctx.state.predFilter = {category: code}; }}}) : null),
        el("div", {class: "thumb-row"}, rows.slice(0, 30).map((r) => DD.thumb(ctx, r, 36))));
    });
    return DD.section("Error taxonomy",
      tax.rule ? DD.note(tax.rule, "muted") : null,
      el("div", {class: "tax-grid", attrs: {"data-testid": "taxonomy"}}, blocks));
  }

  function issueList(ctx) {
    const issues = ctx.b.label_issues;
    const col = ctx.col;
    let page = 0;
    const body = el("tbody");
    const pager = el("div", {class: "pager"});
    const draw = () => {
      DD.clear(body);
      issues.slice(page * PAGE, (page + 1) * PAGE).forEach((issue, i) => {
        const r = issue.row;
        body.appendChild(el("tr", {dataset: {row: r}},
          el("td", {class: "num muted", text: page * PAGE + i + 1}),
          el("td", {}, DD.thumb(ctx, r, 48)),
          el("td", {class: "mono", text: col.idx[r]}),
          el("td", {class: "strong", text: ctx.className(col.true[r])}),
          el("td", {class: "issue", text: ctx.className(col.suggested_label[r])}),
          el("td", {text: `${ctx.className(col.pred[r])} (${DD.fmt.pct(col.confidence[r], 1)})`}),
          el("td", {class: "num", text: DD.fmt.num(col.label_quality[r], 4)}),
          el("td", {}, DD.categoryChip(ctx.category(r)))));
      });
      const pages = Math.max(1, Math.ceil(issues.length / PAGE));
      DD.pager(pager, page, pages, (p) => { page = p; draw(); });
    };
    draw();
    const head = ["Rank", "Image", "#", "Given label", "Suggested label", "Model prediction", "Label quality", "Category"];
    return DD.section(`Suspected label errors (${issues.length}), most suspicious first`,
      issues.length ? [el("table", {class: "grid issues-table", attrs: {"data-testid": "issues-table"}},
        el("thead", {}, el("tr", {}, head.map((h) => el("th", {text: h})))), body), pager]
        : DD.note("Confident learning flagged no label issues in this split."));
  }

  DD.views.issues = {
    title: "Label issues", icon: "⚑",
    render(root, ctx) {
      root.appendChild(taxonomy(ctx));
      root.appendChild(issueList(ctx));
    },
  };
})(window.DD);
