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

  const VERDICTS = [["relabel", "Relabel", "the label is wrong: it should be the one picked"],
                    ["keep", "Label right", "the given label is right"],
                    ["ambiguous", "Ambiguous", "even a person cannot tell"]];

  // A review in words: "Relabel → 6", "Label right" or "Ambiguous" (the report's cell, the predictions' badge).
  DD.reviewText = (ctx, review) => VERDICTS.find(([v]) => v === review.verdict)[1] +
    (review.verdict === "relabel" ? ` → ${ctx.className(review.label)}` : "");

  // The reviews of this split's images, {row: review}, one Map per context (the Label issues view and the image
  // detail share it); loadReviews refetches it from the workspace (a report: as it was written), or with `cached`
  // takes the last load (the detail panel: no request per image opened, and no reload racing a save in flight).
  [DD.reviewsOf, DD.loadReviews] = DD.rowStore("reviews", (ctx) => ctx.source.reviews(ctx.b).then((r) => r.reviews));

  // The label a relabel proposes: the suggested one, else the model's answer, else the first other class.
  function proposed(ctx, r) {
    const col = ctx.col, t = col.true[r];
    for (const c of [col.suggested_label[r], col.pred[r]]) if (c !== undefined && c >= 0 && c !== t) return c;
    return t === 0 ? 1 : 0;
  }

  // The served dashboard's review cell: a person's verdict on one image's label, saved in the workspace (all runs
  // of the dataset show it). Clicking the active verdict again forgets it; onChange runs after each save.
  DD.reviewCell = (ctx, r, onChange) => DD.verdictCell(ctx, {
    reviews: DD.reviewsOf(ctx), key: r, given: ctx.col.true[r], proposed: proposed(ctx, r), onChange,
    save: ctx.source.setReview && ((verdict, label) => ctx.source.setReview(ctx.b, r, verdict, label))});

  // The verdict buttons for any image: reviews (a Map key -> review), given (its label), proposed (the label a
  // relabel starts at), save(verdict | null, label) -> {review} (absent: read-only, a report).
  DD.verdictCell = function (ctx, {reviews, key, given, proposed: start, save, onChange}) {
    const cell = el("div", {class: "review", attrs: {"data-testid": "review"}, dataset: {row: key}});
    if (!save) {   // a report: the reviews as they were, read-only
      const review = reviews.get(key);
      cell.textContent = review ? DD.reviewText(ctx, review) : "–";
      return cell;
    }
    const draw = (message) => {
      const review = reviews.get(key);
      const pick = el("select", {class: "input small", attrs: {"aria-label": "right label"},
                                 on: {change: () => { if (review && review.verdict === "relabel") send("relabel"); }}},
        ctx.b.class_names.map((name, c) => el("option", {value: c, text: name, disabled: c === given,
          selected: c === (review && review.label !== null ? review.label : start)})));
      const send = async (verdict) => {
        const label = Number(pick.value);
        const same = review && review.verdict === verdict && (verdict !== "relabel" || review.label === label);
        try {
          const res = await save(same ? null : verdict, label);
          if (res.review) reviews.set(key, res.review); else reviews.delete(key);
          draw(same ? "forgotten" : "saved");
          if (onChange) onChange();
        } catch (err) {
          draw(`not saved: ${err.message}`);
        }
      };
      DD.append(DD.clear(cell), [VERDICTS.map(([verdict, label, title]) => el("button", {
        type: "button", class: "btn small" + (review && review.verdict === verdict ? " active" : ""), text: label,
        title, dataset: {verdict}, on: {click: () => send(verdict)}})), pick,
        message ? el("span", {class: "muted small", text: message}) : null]);
    };
    draw();
    return cell;
  };

  function reviewSummary(ctx, issues, reviews) {
    const flagged = issues.filter((i) => reviews.has(i.row)).length;
    const counts = VERDICTS.map(([v, label]) => `${[...reviews.values()].filter((x) => x.verdict === v).length} ` +
      label.toLowerCase());
    const where = ctx.source.setReview ? `Reviews are kept in the workspace for every run of ${ctx.b.run.dataset}` :
      `Reviews as they stood when this report was written (${DD.fmt.date(ctx.b.generated_at)})`;
    return `Reviewed ${DD.fmt.int(flagged)} of ${DD.fmt.int(issues.length)} flagged here (in this split: ` +
      `${counts.join(", ")}). ${reviewedAccuracy(ctx, reviews)}${where}; export them with: deepdive export ` +
      `${ctx.b.run.id} reviews --split ${ctx.b.split} --out reviews.csv`;
  }

  // Accuracy against the labels as reviewed (a relabelled image scored against its new label, an ambiguous one
  // left out, a kept one as it was): how much of the error count is the labels' rather than the model's.
  function reviewedAccuracy(ctx, reviews) {
    const relabelled = [...reviews].filter(([, v]) => v.verdict === "relabel");
    const left = [...reviews].filter(([, v]) => v.verdict === "ambiguous");
    if (!relabelled.length && !left.length) return "";
    const col = ctx.col;
    let wrong = ctx.errorRows.length, n = ctx.n;
    for (const [r, v] of relabelled) wrong += (col.pred[r] !== v.label) - (col.pred[r] !== col.true[r]);
    for (const [r] of left) { n -= 1; wrong -= col.pred[r] !== col.true[r]; }
    return `Against the reviewed labels (${relabelled.length} relabelled, ${left.length} ambiguous left out) ` +
      `accuracy reads ${DD.fmt.pct(1 - wrong / n, 2)}, ${DD.fmt.int(wrong)} errors of ${DD.fmt.int(n)} ` +
      `(as given: ${DD.fmt.pct(1 - ctx.errorRows.length / ctx.n, 2)}). `;
  }

  // A flagged image's nearest training images, filled in when they arrive: green, labelled as given; red, labelled
  // as suggested. A report holds them for the top-ranked issues only ("–" for the others).
  function neighbourCell(ctx, r) {
    const td = el("td", {class: "nb-cell", attrs: {"data-testid": "issue-neighbours"}, dataset: {row: r}});
    ctx.source.neighbours(ctx.b, r).then((result) => {
      td.appendChild(result ? DD.neighbourStrip(ctx, result, ctx.col.true[r], ctx.col.suggested_label[r], false)
        : el("span", {class: "muted", text: "–", title: "not in this report: deepdive serve shows them"}));
    }).catch((err) => td.appendChild(el("span", {class: "muted", text: "–", title: err.message})));
    return td;
  }

  function issueList(ctx) {
    const issues = ctx.b.label_issues;
    const col = ctx.col;
    // served: reviews are made here; a report shows the ones it was written with, if any
    const withReviews = ctx.source.mode === "served" || Object.keys(ctx.b.reviews || {}).length > 0;
    const withNeighbours = !!(ctx.b.summary.neighbours || {}).available;
    const nbCells = new Map();   // kept across redraws (each key press redraws the page of rows)
    const nbCell = (r) => nbCells.get(r) || nbCells.set(r, neighbourCell(ctx, r)).get(r);
    const reviews = DD.reviewsOf(ctx);
    const summary = el("p", {class: "muted small", attrs: {"data-testid": "review-summary"}});
    const showSummary = () => { summary.textContent = reviewSummary(ctx, issues, reviews); };
    let page = 0, current = 0;   // current: the row (index into issues) the review keys act on
    let loaded = false;          // the keys wait for the stored reviews, so a verdict is not overwritten by them
    const body = el("tbody");
    const pager = el("div", {class: "pager"});
    const draw = () => {
      DD.clear(body);
      issues.slice(page * PAGE, (page + 1) * PAGE).forEach((issue, i) => {
        const r = issue.row;
        body.appendChild(el("tr", {class: page * PAGE + i === current ? "current" : "", dataset: {row: r}},
          el("td", {class: "num muted", text: page * PAGE + i + 1}),
          el("td", {}, DD.thumb(ctx, r, 48)),
          el("td", {class: "mono", text: col.idx[r]}),
          el("td", {class: "strong", text: ctx.className(col.true[r])}),
          el("td", {class: "issue", text: ctx.className(col.suggested_label[r])}),
          el("td", {text: `${ctx.className(col.pred[r])} (${DD.fmt.pct(col.confidence[r], 1)})`}),
          el("td", {class: "num", text: DD.fmt.num(col.label_quality[r], 4)}),
          el("td", {}, DD.categoryChip(ctx.category(r))),
          withNeighbours ? nbCell(r) : null,
          withReviews ? el("td", {}, DD.reviewCell(ctx, r, () => { showSummary(); draw(); })) : null));
      });
      const pages = Math.max(1, Math.ceil(issues.length / PAGE));
      DD.pager(pager, page, pages, (p) => { page = p; current = p * PAGE; draw(); });
    };
    draw();
    // Review by keyboard, as labelling tools do: ↓/↑ (or j) move, r / k / a give the verdict and move on.
    const KEYS = {r: "relabel", k: "keep", a: "ambiguous"};
    const move = (to) => {
      current = Math.max(0, Math.min(issues.length - 1, to));
      page = Math.floor(current / PAGE);
      draw();
      const tr = body.querySelector("tr.current");
      if (tr) tr.scrollIntoView({block: "nearest"});
    };
    const onKey = (e) => {
      if (!body.isConnected) { document.removeEventListener("keydown", onKey); return; }
      const detailOpen = !document.getElementById("detail").hidden;
      if (!loaded || !ctx.source.setReview || detailOpen || e.ctrlKey || e.metaKey || e.altKey ||
          e.target.closest("input, select, textarea")) return;
      if (e.key === "ArrowDown" || e.key === "j") move(current + 1);
      else if (e.key === "ArrowUp") move(current - 1);
      else if (KEYS[e.key]) {
        const button = body.querySelector(`tr.current button[data-verdict="${KEYS[e.key]}"]`);
        if (!button) return;
        button.click();
        move(current + 1);
      } else return;
      e.preventDefault();
    };
    if (withReviews && issues.length) {
      document.addEventListener("keydown", onKey);
      summary.textContent = "Loading reviews…";
      // a review made in the image detail redraws this list
      ctx.onReviewsChanged = () => { if (body.isConnected) { showSummary(); draw(); } };
      DD.loadReviews(ctx).then(() => {
        loaded = true;
        showSummary();
        draw();
      }).catch((err) => { summary.textContent = `Could not load the reviews: ${err.message}`; });
    }
    const head = ["Rank", "Image", "#", "Given label", "Suggested label", "Model prediction", "Label quality", "Category",
                  ...(withNeighbours ? ["Nearest training images"] : []), ...(withReviews ? ["Your review"] : [])];
    const listReviewed = el("a", {class: "more", text: "list every reviewed image of this split →",
      href: DD.viewHref(ctx, "predictions"), attrs: {"data-testid": "list-reviewed"},
      on: {click: () => { ctx.state.predFilter = {review: "any"}; }}});
    return DD.section(`Suspected label errors (${issues.length}), most suspicious first`,
      withReviews && issues.length ? [summary, listReviewed, ctx.source.setReview ? el("p", {class: "muted small",
        text: "Keys: ↓ / ↑ move between images · r relabel (to the label picked) · k label right · a ambiguous"}) : null]
        : null,
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
