// Predictions table: every row of the split, grouped by true class then predicted class, with filters, sorting
// and probability bars. Virtual scrolling keeps 10k+ rows smooth: only the visible rows are in the DOM.
"use strict";
(function (DD) {
  const el = DD.el;
  const ROW_H = 44;
  const OVERSCAN = 8;

  // Row orders, each computed once per run context when first asked for. The trust scores' orders are the
  // Confidence view's (analysis.confidence.review_order): least trusted first, ties by the second key, then by row.
  function ascending(ctx, key, tie) {
    return Array.from({length: ctx.n}, (_, i) => i)
      .sort((a, b) => key[a] - key[b] || (tie ? tie[a] - tie[b] : 0) || a - b);
  }
  const ORDERS = {
    group: (ctx, col) => ctx.byConfidence.slice()
      .sort((a, b) => col.true[a] - col.true[b] || col.pred[a] - col.pred[b]),
    "conf-desc": (ctx) => ctx.byConfidence,
    "conf-asc": (ctx, col) => ascending(ctx, col.confidence),
    "margin-asc": (ctx, col) => ascending(ctx, col.margin),
    "entropy-desc": (ctx, col) => ascending(ctx, col.entropy.map((v) => -v)),
    "agree-asc": (ctx, col) => ascending(ctx, col.neighbour_agreement, col.confidence),
    "dist-desc": (ctx, col) => ascending(ctx, col.knn_distance.map((v) => -v), col.confidence),   // most atypical first
    "loss-desc": (ctx, col) => ascending(ctx, col.loss.map((v) => -v)),
  };
  function order(ctx, key) {
    ctx.orders = ctx.orders || {};
    if (!ctx.orders[key]) ctx.orders[key] = (ORDERS[key] || ORDERS.group)(ctx, ctx.col);
    return ctx.orders[key];
  }

  // The rows passing the filter f, in the order of f.sort.
  DD.filterRows = function (ctx, f) {
    const col = ctx.col;
    const has = (v) => v !== undefined && v !== null && v !== "" && v !== "all";
    const t = has(f.true) ? Number(f.true) : null, p = has(f.pred) ? Number(f.pred) : null;
    const cat = has(f.category) ? Number(f.category) : null;
    const review = has(f.review) ? f.review : null;   // "any", "none" or a verdict: people's reviews of the labels
    const nb = has(f.neighbours) ? Number(f.neighbours) : null;   // what the nearest training images back
    // a reliability bin of the Confidence view: "raw:<b>" or "scaled:<b>" (after the temperature)
    const bin = f.bin ? f.bin.split(":") : null;
    const binCol = bin ? (bin[0] === "scaled" ? col.cal_bin : col.conf_bin) : null, binNo = bin ? Number(bin[1]) : null;
    const confMax = has(f.confMax) ? Number(f.confMax) : null;   // the Confidence view's threshold: at or below
    // a list of rows: a selection in the Embedding view, the errors a training image is behind (Overview)
    const picked = Array.isArray(f.rows) ? new Set(f.rows) : null;
    // a slice or a tenth of a measure (Slices view); one this run lacks lists nothing
    const sliced = has(f.slice) || has(f.tenth) ? new Set(DD.sliceFilterRows(ctx, f) || []) : null;
    // the right answers a change flips up to a size (Robustness view): "<family>:<size>"
    const fooled = has(f.fooled) ? new Set(DD.fooledRows(ctx, f.fooled) || []) : null;
    // a point of a precision-recall curve (Per class view): the images whose probability for pclass is >= pmin
    const pclass = has(f.pclass) ? Number(f.pclass) : null, pmin = has(f.pmin) ? Number(f.pmin) : null;
    const reviews = DD.reviewsOf(ctx);
    const tag = has(f.tag) ? String(f.tag) : null, tags = DD.tagsOf(ctx);   // "any", "none" or one tag
    // near-duplicates (analysis.duplicates): "train" (of a training image), "split" (of another image here), "none"
    const dupKind = has(f.duplicate) ? String(f.duplicate) : null, dup = DD.duplicatesOf(ctx);
    const out = [];
    for (const r of order(ctx, f.sort || "group")) {
      if (t !== null && col.true[r] !== t) continue;
      if (p !== null && col.pred[r] !== p) continue;
      if (f.correct === "correct" && !col.correct[r]) continue;
      if (f.correct === "wrong" && col.correct[r]) continue;
      if (f.issue === "yes" && !col.label_issue[r]) continue;
      if (f.issue === "no" && col.label_issue[r]) continue;
      if (cat !== null && col.category[r] !== cat) continue;
      if (nb !== null && col.neighbours[r] !== nb) continue;
      if (tag !== null) {
        const mine = tags.get(r);
        if (tag === "any" ? !mine : tag === "none" ? mine : !mine || !mine.includes(tag)) continue;
      }
      if (f.atypical === "yes" && !col.atypical[r]) continue;
      if (f.atypical === "no" && col.atypical[r]) continue;
      if (dupKind !== null && (dupKind === "none" ? dup.train.has(r) || dup.split.has(r) : !dup[dupKind].has(r))) continue;
      if (binCol && binCol[r] !== binNo) continue;
      if (confMax !== null && col.confidence[r] > confMax) continue;
      if (picked && !picked.has(r)) continue;
      if (sliced && !sliced.has(r)) continue;
      if (fooled && !fooled.has(r)) continue;
      if (pclass !== null && pmin !== null && !(ctx.probs[pclass][r] >= pmin)) continue;
      if (review !== null) {
        const v = reviews.get(r);
        if (review === "none" ? v : review === "any" ? !v : !v || v.verdict !== review) continue;
      }
      out.push(r);
    }
    return out;
  };

  // Rows plus (when grouped) a header item before each (true, pred) group.
  function items(ctx, rows, grouped) {
    if (!grouped) return rows;
    const col = ctx.col, list = [];
    for (let i = 0; i < rows.length;) {
      const t = col.true[rows[i]], p = col.pred[rows[i]];
      let j = i;
      while (j < rows.length && col.true[rows[j]] === t && col.pred[rows[j]] === p) j++;
      list.push({t, p, count: j - i});
      for (let k = i; k < j; k++) list.push(rows[k]);
      i = j;
    }
    return list;
  }

  function rowNode(ctx, r) {
    const col = ctx.col;
    const ok = col.correct[r];
    const issue = col.label_issue[r];
    return el("div", {class: "vrow" + (ok ? "" : " wrong"), dataset: {row: r}},
      DD.thumb(ctx, r, 36),
      el("span", {class: "mono", text: col.idx[r]}),
      el("span", {class: "cname", text: ctx.className(col.true[r]), attrs: {title: ctx.className(col.true[r])}}),
      el("span", {class: "cname " + (ok ? "ok" : "bad"), text: ctx.className(col.pred[r]),
                  attrs: {title: ctx.className(col.pred[r])}}),
      el("span", {class: "conf"}, el("span", {class: "conf-track"}, el("span", {class: "conf-fill", style: {width: col.confidence[r] * 100 + "%"}})),
         el("span", {class: "num", text: DD.fmt.pct(col.confidence[r], 1)})),
      DD.probBars(ctx, r),
      el("span", {class: "cat-cell"}, DD.categoryChip(ctx.category(r)), tagLine(ctx, r)),
      el("span", {class: "issue-cell " + (issue ? "issue" : "muted")},
         issue ? `→ ${ctx.className(col.suggested_label[r])}` : "–", reviewBadge(ctx, r)),
      el("span", {class: "num", text: DD.fmt.num(col.loss[r], 3)}));
  }

  // The row's tags (an image's detail, "tag these…"), on one line under its category.
  function tagLine(ctx, r) {
    const tags = DD.tagsOf(ctx).get(r);
    return tags ? el("span", {class: "row-tags", title: tags.join(", "), attrs: {"data-testid": "row-tags"},
                              text: tags.join(" · ")}) : null;
  }

  // A person's verdict on the row's label, if any (the reviews of this split, DD.loadReviews), in lower case:
  // "relabel → 6", "label right", "ambiguous" (only the verdict's first letter: class names keep theirs).
  function reviewBadge(ctx, r) {
    const v = DD.reviewsOf(ctx).get(r);
    if (!v) return null;
    const text = DD.reviewText(ctx, v);
    return el("span", {class: "pill review-badge", attrs: {"data-testid": "review-badge"},
                       text: text[0].toLowerCase() + text.slice(1)});
  }

  function headerNode(ctx, item) {
    return el("div", {class: "vgroup" + (item.t === item.p ? "" : " wrong")},
      el("span", {class: "strong", text: `true ${ctx.className(item.t)} → predicted ${ctx.className(item.p)}`}),
      el("span", {class: "muted", text: ` ${DD.fmt.int(item.count)} image${item.count === 1 ? "" : "s"}`}));
  }

  function select(label, options, value, onChange, testid) {
    const node = el("select", {class: "input", attrs: {"data-testid": testid}, on: {change: (e) => onChange(node.value, e)}},
      options.map(([v, text]) => el("option", {value: String(v), text, selected: String(v) === String(value ?? "all")})));
    return el("label", {class: "filter"}, el("span", {class: "tool-label", text: label}), node);
  }

  // A filter another view set (a reliability bin or the threshold of the Confidence view, a selection in the
  // Embedding view, a point of a class's precision-recall curve), with a button that drops it.
  function chip(text, testid, clear) {
    const node = el("span", {class: "pill", attrs: {"data-testid": testid}}, `${text} `,
      el("button", {class: "icon-btn", type: "button", text: "×", style: {fontSize: "14px"},
                    attrs: {"aria-label": "drop this filter", "data-testid": `${testid}-clear`},
                    on: {click: () => { node.remove(); clear(); }}}));
    return node;
  }
  function binText(ctx, bin) {
    const [mode, b] = bin.split(":");
    const bins = (ctx.b.summary.confidence || {}).bins || 15;
    return `${mode === "scaled" ? "calibrated confidence" : "confidence"} ${DD.fmt.num(Number(b) / bins, 2)}–` +
      `${DD.fmt.num((Number(b) + 1) / bins, 2)}`;
  }

  // The filter lives in the address too (#/r/<run>/<split>/predictions/<query>): a filtered list is a link to
  // bookmark or send, and the back button returns to it. Only what differs from the defaults goes in; an
  // embedding selection (rows) only while it is short enough for a link.
  const DEFAULTS = {true: "all", pred: "all", correct: "all", issue: "all", category: "all", review: "all",
                    neighbours: "all", atypical: "all", duplicate: "all", tag: "all", sort: "group"};
  // filters other views set, shown as removable chips
  const CHIPS = ["bin", "confMax", "pclass", "pmin", "slice", "tenth", "fooled"];
  const MAX_LINKED_ROWS = 500;
  function filterQuery(f) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) {
      if (v === undefined || v === null || !(k in DEFAULTS || CHIPS.includes(k) || k === "rows")) continue;
      if (k === "rows") { if (v.length <= MAX_LINKED_ROWS) q.set(k, v.join(",")); continue; }
      if (DEFAULTS[k] !== String(v)) q.set(k, String(v));
    }
    return q.toString();
  }
  function parseQuery(text) {
    const f = {};
    for (const [k, v] of new URLSearchParams(text)) {
      if (k === "rows") f.rows = v.split(",").filter(Boolean).map(Number).filter(Number.isInteger);
      else if (k in DEFAULTS || CHIPS.includes(k)) f[k] = v;
    }
    return f;
  }
  function setAddress(ctx, f) {
    const q = filterQuery(f);
    try {      // replaceState: no hashchange, so no redraw; a browser that refuses it (a file:// page) keeps the old one
      history.replaceState(history.state, "", DD.viewHref(ctx, "predictions") + (q ? "/" + q : ""));
    } catch (e) { /* the filter still works, only the address does not follow it */ }
  }

  // The listed rows as a CSV file, made in the page (a report has no server): one line per image, in the order
  // shown, with its labels' names, scores, category, label issue, tags and every class probability.
  function downloadCsv(ctx, rows) {
    const col = ctx.col, tags = DD.tagsOf(ctx);
    const cell = (v) => {
      let text = v === null || v === undefined ? "" : String(v);
      // a name or tag that a spreadsheet would run as a formula (=, +, -, @) is kept as text
      if (/^[=+\-@\t\r]/.test(text) && !Number.isFinite(Number(text))) text = "'" + text;
      return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
    };
    const head = ["row", "idx", "true", "true_name", "pred", "pred_name", "confidence", "margin", "loss", "correct",
                  "category", "label_issue", "suggested_label", "suggested_name", "tags",
                  ...ctx.names.map((_, c) => `p${c}`)];
    const lines = rows.map((r) => [r, col.idx[r], col.true[r], ctx.className(col.true[r]), col.pred[r],
      ctx.className(col.pred[r]), col.confidence[r], col.margin[r], col.loss[r], col.correct[r] ? "true" : "false",
      ctx.category(r), col.label_issue[r] ? "true" : "false", col.suggested_label[r],
      ctx.className(col.suggested_label[r]), (tags.get(r) || []).join("; "),
      ...ctx.probs.map((p) => p[r])].map(cell).join(","));
    const blob = new Blob([[head.join(","), ...lines].join("\n") + "\n"], {type: "text/csv"});
    const link = el("a", {href: URL.createObjectURL(blob), download: `${ctx.b.run.name}-${ctx.b.split}-predictions.csv`});
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  const hasAgreement = (ctx) => (ctx.col.neighbour_agreement || []).some((v) => v !== null);
  const hasDistance = (ctx) => (ctx.col.knn_distance || []).some((v) => v !== null);
  const hasAtypical = (ctx) => ((ctx.b.summary.neighbours || {}).atypical || {}).available;

  DD.views.predictions = {
    title: "Predictions", icon: "≣",
    takeArg(ctx, query) {     // the address's filter, unless it is the one on screen (which may hold a long selection)
      if (filterQuery(ctx.state.predFilter || {}) !== new URLSearchParams(query).toString()) {
        ctx.state.predFilter = parseQuery(query);
      }
    },
    render(root, ctx) {
      const f = Object.assign({true: "all", pred: "all", correct: "all", issue: "all", category: "all", review: "all",
                               neighbours: "all", atypical: "all", duplicate: "all", tag: "all", sort: "group"},
                              ctx.state.predFilter);
      ctx.state.predFilter = f;
      const classOpts = [["all", "any"], ...ctx.names.map((n, c) => [c, n])];
      const catOpts = [["all", "any"], ...ctx.b.examples.categories.map((n, c) => [c, n])];
      const set = (key) => (v, event) => { f[key] = v; apply(event); };
      const count = el("span", {class: "row-count", attrs: {"data-testid": "row-count"}});
      // the known tags, and the one asked for (a link's) while the tags load or if no image has it any more
      const tagOptions = () => {
        const known = DD.allTags(ctx), asked = String(f.tag);
        const extra = ["all", "any", "none"].includes(asked) || known.includes(asked) ? [] : [asked];
        return [["all", "all"], ["any", "tagged"], ["none", "not tagged"], ...[...known, ...extra].map((t) => [t, t])];
      };
      const tagSelect = select("Tag", tagOptions(), f.tag, set("tag"), "filter-tag");
      // Served: one tag on (or off) every image the filters list, in one request.
      const bulk = ctx.source.tagRows ? DD.bulkTagForm({label: "tag the listed images",
        listId: `dd-bulk-tags-${ctx.uid}`, known: () => DD.allTags(ctx), testid: "tag-listed",
        apply: async (tag, remove) => {
          const res = await ctx.source.tagRows(ctx.b, scroller.navRows || [], tag, remove);
          const tags = DD.tagsOf(ctx);
          tags.clear();
          for (const [row, list] of Object.entries(res.tags)) tags.set(Number(row), list);
          refreshTags();
          return res;
        }}) : null;
      root.appendChild(el("div", {class: "panel toolbar filters"},
        select("True", classOpts, f.true, set("true"), "filter-true"),
        select("Predicted", classOpts, f.pred, set("pred"), "filter-pred"),
        select("Result", [["all", "all"], ["correct", "correct"], ["wrong", "wrong"]], f.correct, set("correct"), "filter-correct"),
        select("Label issue", [["all", "all"], ["yes", "flagged"], ["no", "not flagged"]], f.issue, set("issue"), "filter-issue"),
        select("Category", catOpts, f.category, set("category"), "filter-category"),
        // people's reviews (served: the workspace's, refetched below; a report: those it was written with)
        ctx.source.mode === "served" || Object.keys(ctx.b.reviews || {}).length ?
          select("Review", [["all", "all"], ["any", "reviewed"], ["relabel", "relabel"], ["keep", "label right"],
                            ["ambiguous", "ambiguous"], ["none", "not reviewed"]], f.review, set("review"), "filter-review")
          : null,
        // analysis.neighbours.READINGS, by code: which answer most of an image's nearest training images carry
        (ctx.b.summary.neighbours || {}).available ?
          select("Neighbours", [["all", "any"], [0, "mostly the wrong answer"], [1, "mostly its label"],
                                [2, "no majority"]], f.neighbours, set("neighbours"), "filter-neighbours") : null,
        // beyond the training images' outlier fence in the model's feature space (analysis.atypical)
        hasAtypical(ctx) ? select("Atypical", [["all", "all"], ["yes", "atypical"], ["no", "typical"]], f.atypical,
                                  set("atypical"), "filter-atypical") : null,
        // a near-duplicate in pixels of a training image, or of another image of the split (analysis.duplicates)
        (ctx.b.summary.duplicates || {}).available ? select("Duplicate", [["all", "all"], ["train", "of a training image"],
          ...(ctx.b.summary.duplicates.split ? [["split", "of another image here"]] : []), ["none", "none"]],
          f.duplicate, set("duplicate"), "filter-duplicate") : null,
        // the words people put on images (an image's detail); the list fills once the tags are loaded
        ctx.source.mode === "served" || Object.keys(ctx.b.tags || {}).length ? tagSelect : null,
        select("Sort", [["group", "true → predicted, confidence"], ["conf-desc", "confidence ↓"], ["conf-asc", "confidence ↑"],
                        ["margin-asc", "margin ↑"], ["entropy-desc", "entropy ↓"],
                        ...(hasAgreement(ctx) ? [["agree-asc", "neighbours' agreement ↑"]] : []),
                        ...(hasDistance(ctx) ? [["dist-desc", "most atypical first"]] : []),
                        ["loss-desc", "loss ↓"]], f.sort, set("sort"), "sort"),
        f.bin ? chip(binText(ctx, f.bin), "filter-bin", () => { delete f.bin; apply(); }) : null,
        f.confMax !== undefined && f.confMax !== null ? chip(`confidence ≤ ${Number(f.confMax).toFixed(4)}`, "filter-conf-max",
                              () => { delete f.confMax; apply(); }) : null,
        f.pclass !== undefined && f.pmin !== undefined ?
          chip(`p(${ctx.className(Number(f.pclass))}) ≥ ${Number(f.pmin).toFixed(ctx.b.examples.prob_decimals)}`,
               "filter-pmin",
               () => { delete f.pclass; delete f.pmin; apply(); }) : null,
        f.slice !== undefined || f.tenth !== undefined ?
          chip(DD.sliceFilterText(ctx, f) || "a slice this analysis does not have", "filter-slice",
               () => { delete f.slice; delete f.tenth; apply(); }) : null,
        f.fooled !== undefined ? chip(DD.fooledText(ctx, f.fooled) || "a change this analysis did not try",
                                      "filter-fooled", () => { delete f.fooled; apply(); }) : null,
        Array.isArray(f.rows) ? chip(`${DD.fmt.int(f.rows.length)} ${f.rowsLabel || "images picked"}`,
                                     "filter-rows",
                                     () => { delete f.rows; apply(); }) : null,
        el("button", {class: "btn small", type: "button", text: "reset", attrs: {"data-testid": "filter-reset"},
                      on: {click: () => { ctx.state.predFilter = {}; setAddress(ctx, {}); DD.rerender(); }}}),
        el("button", {class: "btn small", type: "button", text: "CSV", attrs: {"data-testid": "download-csv",
                      title: "download the listed images, in this order, as CSV (the columns of deepdive export " +
                             "RUN predictions that the page holds)"},
                      on: {click: () => downloadCsv(ctx, scroller.navRows || [])}}),
        bulk ? bulk.toggle : null,
        count));
      if (bulk) root.appendChild(bulk.form);

      const head = el("div", {class: "vhead"}, ["", "#", "True", "Predicted", "Confidence", "Probabilities (0…" + (ctx.C - 1) + ")",
                                                "Category", "Label issue", "Loss"].map((h) => el("span", {text: h})));
      const spacer = el("div", {class: "vspacer"});
      const scroller = el("div", {class: "vscroll", attrs: {"data-testid": "pred-table"}}, spacer);
      root.appendChild(el("div", {class: "panel vtable"}, head, scroller));

      let list = [], drawn = "";
      const draw = (force) => {
        const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_H) - OVERSCAN);
        const last = Math.min(list.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW_H) + OVERSCAN);
        const key = first + ":" + last;
        if (!force && key === drawn) return;
        drawn = key;
        const frag = document.createDocumentFragment();
        for (let i = first; i < last; i++) {
          const item = list[i];
          const node = typeof item === "number" ? rowNode(ctx, item) : headerNode(ctx, item);
          node.style.top = i * ROW_H + "px";
          frag.appendChild(node);
        }
        DD.clear(spacer).appendChild(frag);
      };
      // A click anywhere on a row opens its detail (a click on its thumbnail already does, app-wide).
      scroller.addEventListener("click", (e) => {
        const row = e.target.closest(".vrow");
        if (row && !e.target.closest(".thumb")) DD.openDetail(ctx, Number(row.dataset.row), scroller.navRows);
      });
      let pending = false;
      scroller.addEventListener("scroll", () => {
        if (pending) return;
        pending = true;
        requestAnimationFrame(() => { pending = false; draw(false); });
      });

      function apply(event) {
        setAddress(ctx, f);
        const rows = DD.filterRows(ctx, f);
        scroller.navRows = rows;      // an image's detail steps through them (‹ ›, arrow keys)
        list = items(ctx, rows, f.sort === "group");
        count.dataset.count = rows.length;
        count.textContent = `${DD.fmt.int(rows.length)} of ${DD.fmt.int(ctx.n)} images`;
        spacer.style.height = list.length * ROW_H + "px";
        scroller.scrollTop = 0;
        draw(true);
        if (!rows.length) spacer.appendChild(DD.note("No image matches these filters."));
        if (event) DD.measurePainted("dd-filter", event);   // change → the filtered rows are on screen
      }
      apply();
      // tags: the filter's list, and the rows again when it filters by them (an image's detail may add some)
      const refreshTags = () => {
        if (!scroller.isConnected) return;
        const node = tagSelect.querySelector("select");
        DD.clear(node).append(...tagOptions().map(([v, text]) => el("option", {value: v, text,
                                                                             selected: v === String(f.tag)})));
        if (f.tag !== "all") apply(); else draw(true);    // the rows' tag lines
      };
      ctx.onTagsChanged = refreshTags;
      DD.loadTags(ctx, true).then(refreshTags).catch(() => {});
      if (ctx.source.mode === "served" || Object.keys(ctx.b.reviews || {}).length) {
        DD.loadReviews(ctx).then(() => {
          if (!scroller.isConnected) return;
          if (f.review !== "all") apply(); else draw(true);   // the rows' review badges
        }).catch(() => {});
      }
    },
  };
})(window.DD);
