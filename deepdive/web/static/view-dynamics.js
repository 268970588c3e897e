// Training dynamics: how the model's answer for each training image moved while it trained (summary.dynamics,
// deepdive.analysis.dynamics). A data map of every training image (confidence against variability of its label's
// probability over the epochs), the labels in doubt (a negative area under the margin, the likeliest errors first)
// with a verdict to give each, the most ambiguous and the hardest, and how training went per epoch and class.
"use strict";
(function (DD) {
  const el = DD.el;
  const SVG = "http://www.w3.org/2000/svg";
  const SELECTION_PICTURES = 60;
  const PAGE = 30;   // training images per page of a list

  // The label's probability at each epoch as a sparkline: a dot per epoch the image was trained in, red where the
  // model's answer was another class than the label it trained under; a dashed line at 0.5.
  function sparkline(item, width = 132, height = 34) {
    const t = item.trajectory;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("class", "spark");
    const n = t.p_true.length;
    const x = (i) => 3 + (n > 1 ? (i * (width - 6)) / (n - 1) : (width - 6) / 2);
    const y = (p) => height - 3 - p * (height - 6);
    const add = (tag, attrs) => {
      const node = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      svg.appendChild(node);
      return node;
    };
    add("line", {x1: 0, x2: width, y1: y(0.5), y2: y(0.5), stroke: "#d1d5db", "stroke-dasharray": "3 3"});
    const pts = t.p_true.map((p, i) => (p === null ? null : `${x(i).toFixed(1)},${y(p).toFixed(1)}`)).filter(Boolean);
    add("polyline", {points: pts.join(" "), fill: "none", stroke: "#6b7280", "stroke-width": 1.2});
    t.p_true.forEach((p, i) => {
      if (p === null) return;
      const wrong = t.pred[i] !== null && t.pred[i] !== item.label;
      add("circle", {cx: x(i), cy: y(p), r: 2, fill: wrong ? "#dc2626" : "#16a34a"});
    });
    const title = document.createElementNS(SVG, "title");
    title.textContent = "the label's probability at each epoch (green: answered right, red: another class)";
    svg.appendChild(title);
    return svg;
  }

  // How often the image was taken for another class, and for which: "taken for 7 in 22 of 24 epochs".
  function takenFor(ctx, item) {
    const t = item.trajectory;
    const wrong = t.pred.filter((p) => p !== null && p !== item.label).length;
    if (!wrong) return `answered ${ctx.className(item.label)} in every one of its ${item.epochs} epochs`;
    const alone = t.pred.filter((p) => p === item.leaning).length === wrong;
    return alone ? `taken for ${ctx.className(item.leaning)} in ${wrong} of ${item.epochs} epochs`
      : `wrong in ${wrong} of ${item.epochs} epochs, mostly taken for ${ctx.className(item.leaning)}`;
  }

  function picture(uri, size) {
    const style = {width: size + "px", height: size + "px"};
    return uri ? el("img", {class: "dyn-img", src: uri, alt: "training image", style})
      : el("div", {class: "dyn-img missing", style,
                   title: "no picture: a report holds those of the listed images only (deepdive serve shows " +
                          "any); a run whose dataset cannot be loaded, or logged without its train_data, has " +
                          "none"});
  }

  // The training images' tags (deepdive.analysis.tags.training_tags), by index, loaded once per run context.
  const [trainingTagsOf, loadTrainingTags] = DD.rowStore("trainingTags",
    (ctx) => ctx.source.trainingTags(ctx.b).then((r) => r.tags));
  const knownTags = (ctx) => DD.tagNames(trainingTagsOf(ctx));

  // A card's tags: served, added and taken off there (kept with the image, as the test images' tags); a report shows
  // them as they were.
  function tagBox(ctx, idx) {
    const box = el("div", {class: "dyn-tags", dataset: {idx}, attrs: {"data-testid": "dyn-tags"}});
    loadTrainingTags(ctx, true).then(() => fillTagBox(ctx, box))
      .catch((err) => box.appendChild(DD.note(`Could not load the tags: ${err.message}`, "error")));
    return box;
  }
  function fillTagBox(ctx, box) {
    const idx = Number(box.dataset.idx);
    DD.tagChips(box, idx, {tags: trainingTagsOf(ctx), listId: `dd-train-tags-${ctx.uid}`, known: () => knownTags(ctx),
      save: ctx.source.setTrainingTag && ((tag, remove) => ctx.source.setTrainingTag(ctx.b, idx, tag, remove)),
      changed: () => ctx.onTrainingTagsChanged && ctx.onTrainingTagsChanged()});
  }

  // One training image: picture, label, what it was taken for, the readings, the sparkline, its tags, and (if
  // reviews are on) a verdict on its label.
  function card(ctx, item, uri, withReview) {
    const relabelled = item.label !== item.given;
    const proposedLabel = item.leaning >= 0 && item.leaning !== item.given ? item.leaning : (item.given === 0 ? 1 : 0);
    return el("div", {class: "dyn-card", dataset: {idx: item.idx}, attrs: {"data-testid": "dyn-card"}},
      picture(uri, 64),
      el("div", {class: "dyn-body"},
        el("div", {},
          el("span", {class: "mono", text: `#${item.idx} `}),
          el("span", {class: "strong", text: `labelled ${ctx.className(item.given)}`}),
          relabelled ? el("span", {class: "muted", text: ` (trained as ${ctx.className(item.label)})`}) : null),
        el("div", {class: item.leaning >= 0 ? "bad small" : "muted small", text: takenFor(ctx, item)}),
        el("div", {class: "muted small", text: `AUM ${DD.fmt.num(item.aum, 2)} · confidence ` +
          `${DD.fmt.num(item.confidence, 2)} · variability ${DD.fmt.num(item.variability, 2)} · forgotten ` +
          `${item.forgets}× · ` +
          (item.learned === null ? "never learned for good" : `learned for good at epoch ${item.learned}`)}),
        sparkline(item),
        tagBox(ctx, item.idx),
        withReview ? DD.verdictCell(ctx, {reviews: ctx.trainingReviews, key: item.idx, given: item.given,
          proposed: proposedLabel,
          save: ctx.source.setTrainingReview &&
            ((verdict, label) => ctx.source.setTrainingReview(ctx.b, item.idx, verdict, label))}) : null));
  }

  function insight(ctx, d) {
    const r = d.regions, t = d.thresholds;
    const cl = d.cleanlab;
    return el("div", {attrs: {"data-testid": "dynamics-summary"}},
      el("p", {class: "insight hint"}, el("span", {},
        `${DD.fmt.int(d.images)} training images over ${d.epochs} epochs` +
          `${d.members > 1 ? ` of ${d.members} members` : ""}: `,
        el("span", {class: "strong", text: `${DD.fmt.int(d.negative_aum)} with a negative area under the margin`}),
        " (the model ranked another class above their label for most of training: labels in doubt, the likeliest " +
        "errors lowest), " +
        `${DD.fmt.int(r.hard)} hard to learn, ${DD.fmt.int(r.ambiguous)} ambiguous, ${DD.fmt.int(r.easy)} easy; ` +
        `${DD.fmt.int(d.forgotten)} were forgotten at least once (right at one epoch, wrong at the next) and ` +
        `${DD.fmt.int(d.never_learned)} were never learned for good.`)),
      DD.note("Read at each image's own training step, on the copy it was trained on (augmented where training " +
        `augments), before that step's update. Hard: its label's mean probability below ${t.hard_confidence}; ` +
        `ambiguous: that probability's standard deviation over the epochs ${t.ambiguous_variability} or more ` +
        "(Swayamdipta et al. 2020, data maps). AUM: the label's logit less the largest other one, averaged over the " +
        "epochs (Pleiss et al. 2020); forgetting: Toneva et al. 2019." +
        (d.curve.some((c) => c.trained < 0.9 * d.images) ? " Some epochs trained on a pruned share of the images; an " +
          "image's readings count only the epochs that trained on it." : ""), "muted small"),
      cl ? DD.note(`Confident learning on the train split (cleanlab, K-fold) flagged ${DD.fmt.int(cl.flagged)} ` +
        `training images; ${DD.fmt.int(cl.both)} of them have a negative AUM here.`, "muted small") : null);
  }

  // The data map: every training image, coloured by the share of epochs it was answered right.
  function mapPanel(ctx, d) {
    const m = ctx.dynamicsMap || (ctx.dynamicsMap = Object.fromEntries(Object.entries(d.map)
      .map(([key, column]) => [key, DD.unpack(column)])));
    const plot = el("div", {class: "chart tall", attrs: {"data-testid": "dynamics-map"}});
    const bar = el("span", {class: "selection-bar"});
    const box = el("div", {class: "selection", attrs: {"data-testid": "dynamics-selection"}});
    const inspect = el("div", {class: "dyn-inspect", attrs: {"data-testid": "dynamics-inspect"}});
    const drag = DD.segmented([{value: "zoom", label: "zoom"}, {value: "select", label: "box select"},
                               {value: "lasso", label: "lasso select"}], "zoom",
      (mode) => DD.plotly().then((Plotly) => Plotly.relayout(plot, {dragmode: mode})), "dynamics-drag");
    const byIdx = new Map();
    for (const key of ["flagged", "ambiguous", "hard"]) for (const item of d[key]) byIdx.set(item.idx, item);

    // Each click and selection supersedes the ones before it whose pictures are still on their way.
    let clicks = 0, selections = 0;
    const showOne = async (k) => {
      const idx = m.idx[k], mine = ++clicks;
      DD.clear(inspect).append(el("span", {class: "muted small", text: `training image #${idx}…`}));
      let item = byIdx.get(idx), uri = d.pictures[idx];
      try {
        const got = await ctx.source.trainingImage(ctx.b, idx);
        if (got) { item = got.image; uri = got.picture; }
      } catch (err) {
        if (mine === clicks) DD.clear(inspect).append(DD.note(err.message, "error"));
        return;
      }
      if (mine !== clicks) return;
      if (item) { DD.clear(inspect).append(card(ctx, item, uri, !!ctx.trainingReviews)); return; }
      DD.clear(inspect).append(el("div", {class: "dyn-card"}, picture(null, 64), el("div", {class: "dyn-body"},
        el("div", {}, el("span", {class: "mono", text: `#${idx} `}),
          el("span", {class: "strong", text: `labelled ${ctx.className(m.label[k])}`})),
        el("div", {class: "muted small", text: `confidence ${DD.fmt.num(m.confidence[k], 3)} · variability ` +
          `${DD.fmt.num(m.variability[k], 3)} · right in ${DD.fmt.pct(m.correctness[k], 0)} of its epochs`}),
        DD.note("Its picture and per-epoch answers: deepdive serve.", "muted small"))));
    };

    const showSelection = async (ks) => {
      const mine = ++selections;
      DD.clear(bar);
      DD.clear(box);
      if (!ks.length) {
        bar.append(el("span", {class: "muted small", text: "No selection: choose box or lasso select, then drag " +
                                                             "over the points; click a point for its answers."}));
        return;
      }
      ks.sort((a, b) => m.confidence[a] - m.confidence[b] || m.idx[a] - m.idx[b]);
      const byClass = new Map();
      for (const k of ks) byClass.set(m.label[k], (byClass.get(m.label[k]) || 0) + 1);
      // served: one tag on (or off) every selected image, in one request
      const bulk = ctx.source.tagTrainingImages ? DD.bulkTagForm({label: "tag the selected training images",
        listId: `dd-train-bulk-${ctx.uid}`, known: () => knownTags(ctx), testid: "tag-selected",
        apply: async (tag, remove) => {
          const res = await ctx.source.tagTrainingImages(ctx.b, ks.map((k) => m.idx[k]), tag, remove);
          const tags = trainingTagsOf(ctx);
          tags.clear();
          for (const [idx, list] of Object.entries(res.tags)) tags.set(Number(idx), list);
          ctx.onTrainingTagsChanged();
          return res;
        }}) : null;
      bar.append(el("span", {class: "strong",
                             attrs: {"data-testid": "dynamics-selection-count", "data-count": ks.length},
                             text: `${DD.fmt.int(ks.length)} training image${ks.length === 1 ? "" : "s"} selected`}),
        el("span", {class: "muted", text: "labels: " + [...byClass].sort((a, b) => b[1] - a[1] || a[0] - b[0])
          .map(([c, k]) => `${ctx.className(c)} ×${DD.fmt.int(k)}`).join(", ")}), bulk ? bulk.toggle : null);
      if (bulk) box.append(bulk.form);
      const shown = ks.slice(0, SELECTION_PICTURES);
      let pics = {};
      try {
        pics = await ctx.source.trainingPictures(ctx.b, shown.map((k) => m.idx[k]));
      } catch (err) {
        if (mine === selections) box.append(DD.note(err.message, "error"));
        return;
      }
      if (mine !== selections) return;
      const have = shown.filter((k) => pics[m.idx[k]]);
      const missing = shown.length - have.length;
      DD.append(box, [
        el("div", {class: "thumbs-cell"}, have.map((k) => el("figure", {class: "thumb-fig dyn-pick",
          title: `#${m.idx[k]}`, on: {click: () => showOne(k)}}, picture(pics[m.idx[k]], 40),
          el("figcaption", {text: `${ctx.className(m.label[k])} · ${DD.fmt.num(m.confidence[k], 2)}`})))),
        DD.note("the least confident first" +
          (ks.length > shown.length ? `: ${shown.length} of ${DD.fmt.int(ks.length)}` : "") +
          (missing ? `; ${missing} not in this report (deepdive serve shows them)` : ""), "muted small")]);
    };

    // Each tag on training images with its count; a click lists its images as a selection does.
    const kOf = new Map(m.idx.map((idx, k) => [idx, k]));
    const tagLine = el("div", {class: "tag-row", attrs: {"data-testid": "dynamics-tag-line"}});
    const drawTagLine = () => {
      const byTag = new Map();
      for (const [idx, list] of trainingTagsOf(ctx)) for (const t of list) {
        if (!byTag.has(t)) byTag.set(t, []);
        byTag.get(t).push(idx);
      }
      DD.append(DD.clear(tagLine), byTag.size ? [el("span", {class: "tool-label", text: "Tagged"}),
        [...byTag].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0])).map(([t, idxs]) =>
          el("button", {class: "tag tag-btn", type: "button", attrs: {"data-testid": "dynamics-tag"},
                        text: `${t} · ${DD.fmt.int(idxs.length)}`, title: "list these training images",
                        on: {click: () => showSelection(idxs.map((i) => kOf.get(i)).filter((k) => k !== undefined))}}))]
        : []);
    };
    // a tag put on or taken off (a card, a selection): the line and every card's tags again
    ctx.onTrainingTagsChanged = () => {
      drawTagLine();
      for (const node of document.querySelectorAll('[data-testid="dyn-tags"]')) fillTagBox(ctx, node);
    };
    loadTrainingTags(ctx, true).then(drawTagLine).catch(() => {});

    const panel = DD.section("Data map: every training image",
      DD.note("Each point is one training image: up, its label's mean probability over the epochs; right, how much " +
        "that probability swung; colour, the share of epochs the model answered it right. Easy images sit top left; " +
        "mislabelled ones sink to the bottom, where the model kept answering another class, beside images that are " +
        "merely hard.", "muted"),
      el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "Drag to"}), drag, bar), tagLine,
      el("div", {class: "dyn-map-row"}, plot, inspect), box);
    showSelection([]);
    DD.plotly().then((Plotly) => {
      const trace = {type: "scattergl", mode: "markers", x: m.variability, y: m.confidence,
        customdata: m.idx.map((_, k) => k),
        marker: {size: 4, opacity: 0.6, color: m.correctness, cmin: 0, cmax: 1,
                 colorscale: [[0, "#dc2626"], [0.5, "#f59e0b"], [1, "#16a34a"]],
                 colorbar: {title: {text: "right", side: "right"}, thickness: 10, tickformat: ".0%"}},
        unselected: {marker: {opacity: 0.1}},
        text: m.idx.map((idx, k) => `#${idx} · ${ctx.className(m.label[k])}`),
        hovertemplate: "%{text}<br>confidence %{y:.3f} · variability %{x:.3f}<br>right in %{marker.color:.0%} of " +
                       "its epochs<extra></extra>"};
      Plotly.newPlot(plot, [trace], DD.plotLayout({hovermode: "closest", margin: {l: 56, r: 10, t: 10, b: 44},
        xaxis: {title: {text: "variability (std of the label's probability)"}, zeroline: false},
        yaxis: {title: {text: "confidence (mean probability)"}, zeroline: false, range: [-0.02, 1.02]},
        shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: d.thresholds.hard_confidence,
                  y1: d.thresholds.hard_confidence, line: {color: "#9ca3af", dash: "dot", width: 1}},
                 {type: "line", yref: "paper", y0: 0, y1: 1, x0: d.thresholds.ambiguous_variability,
                  x1: d.thresholds.ambiguous_variability, line: {color: "#9ca3af", dash: "dot", width: 1}}]}),
        DD.plotConfig);
      plot.on("plotly_click", (ev) => showOne(ev.points[0].customdata));
      plot.on("plotly_selected", (ev) => showSelection(ev ? ev.points.map((pt) => pt.customdata) : []));
      plot.on("plotly_deselect", () => showSelection([]));
    }).catch((err) => plot.replaceWith(DD.note(err.message, "error")));
    return panel;
  }

  // Share of the trained images answered right per epoch, and their label's mean probability.
  function curvePanel(ctx, d) {
    const plot = el("div", {class: "chart", attrs: {"data-testid": "dynamics-curve"}});
    DD.plotly().then((Plotly) => {
      const s = DD.epochSeries(d.curve);
      Plotly.newPlot(plot, [
        {type: "scatter", mode: "lines+markers", name: "answered right", x: s.x, y: s.series("right"),
         line: {color: "#16a34a"}, hovertemplate: "%{y:.2%}"},
        {type: "scatter", mode: "lines+markers", name: "label's mean probability", x: s.x, y: s.series("p_true"),
         line: {color: "#4e79a7"}, hovertemplate: "%{y:.3f}"}],
      DD.plotLayout({xaxis: {title: {text: "epoch"}, dtick: d.curve.length > 30 ? undefined : 1},
                     yaxis: {tickformat: ".0%"}}), DD.plotConfig);
    }).catch((err) => plot.replaceWith(DD.note(err.message, "error")));
    const head = ["Class", "Images", "Mean confidence", "Hard", "Ambiguous", "Negative AUM", "Forgotten",
                  "Never learned"];
    const table = el("table", {class: "grid", attrs: {"data-testid": "dynamics-classes"}},
      el("thead", {}, el("tr", {}, head.map((h) => el("th", {text: h})))),
      el("tbody", {}, d.per_class.map((c) => el("tr", {},
        el("td", {class: "strong", text: c.name}), el("td", {class: "num", text: DD.fmt.int(c.images)}),
        el("td", {class: "num", text: DD.fmt.num(c.confidence, 3)}), el("td", {class: "num", text: DD.fmt.int(c.hard)}),
        el("td", {class: "num", text: DD.fmt.int(c.ambiguous)}),
        el("td", {class: "num", text: DD.fmt.int(c.negative_aum)}),
        el("td", {class: "num", text: DD.fmt.int(c.forgotten)}),
        el("td", {class: "num", text: DD.fmt.int(c.never_learned)})))));
    return DD.section("How training went, image by image",
      DD.note("Per epoch, the share of the images trained in it that the model answered right at their step " +
        "(augmented), and their label's mean probability; per class, the counts of the readings above.", "muted"),
      plot, table);
  }

  // total: how many there are where the bundle lists the first of them only (the labels in doubt: at most 200)
  function listPanel(ctx, d, key, title, text, withReview, total) {
    const items = d[key];
    const count = total > items.length ? `the first ${DD.fmt.int(items.length)} of ${DD.fmt.int(total)}`
      : DD.fmt.int(items.length);
    const grid = el("div", {class: "dyn-grid", attrs: {"data-testid": `dynamics-${key}`}});
    const pager = el("div", {class: "pager"});
    const draw = (page) => {
      DD.append(DD.clear(grid), items.slice(page * PAGE, (page + 1) * PAGE)
        .map((item) => card(ctx, item, d.pictures[item.idx], withReview)));
      if (items.length > PAGE) DD.pager(pager, page, Math.ceil(items.length / PAGE), draw);
    };
    draw(0);
    return DD.section(`${title} (${count})`, DD.note(text, "muted"),
      items.length ? [grid, pager] : DD.note("None.", "muted"),
      d.pictures_note ? DD.note(d.pictures_note, "error") : null);
  }

  DD.views.dynamics = {
    title: "Training dynamics", icon: "↯",
    render(root, ctx) {
      const d = ctx.b.dynamics;
      if (!d || !d.available) {
        root.appendChild(DD.section("Training dynamics", DD.note(`No training dynamics: ${(d && d.reason) ||
          "this analysis predates them (re-run: deepdive analyze)"}.`, "muted")));
        return;
      }
      root.appendChild(DD.section("Training dynamics", insight(ctx, d)));
      root.appendChild(mapPanel(ctx, d));
      // Verdicts on the flagged images are given once the stored ones are in (so none is drawn as unset first).
      const served = !!ctx.source.setTrainingReview;
      const flaggedText = "The training images with a negative area under the margin, lowest first: for most of " +
        "training the model gave another class a higher score than the label. The lowest are the likeliest label " +
        "errors; further up come images that are hard rather than mislabelled, the more of them the fewer the " +
        "epochs and the harder the data. " + (!served ? "Reviews as they stood when this report was written."
          : ctx.b.run.dataset === "custom" ? "A verdict here is kept in the workspace with this run (its training " +
            "images are yours, indexed as you logged them); deepdive export RUN dynamics lists each image's readings."
          : `A verdict here is kept in the workspace with the other reviews of ${ctx.b.run.dataset}'s training ` +
            "images; deepdive train --reviewed-labels trains with them.");
      const flagged = listPanel(ctx, d, "flagged", "Training labels in doubt", flaggedText, false, d.negative_aum);
      root.appendChild(flagged);
      root.appendChild(listPanel(ctx, d, "ambiguous", "Most ambiguous", "The images whose label's probability swung " +
        "most from epoch to epoch (not among those above): the model kept changing its mind.", false));
      root.appendChild(listPanel(ctx, d, "hard", "Hardest of the rest", "The lowest mean probability of the label " +
        "among the hard-to-learn images not listed above.", false));
      root.appendChild(curvePanel(ctx, d));
      if (served || Object.keys(d.reviews || {}).length) {
        ctx.source.trainingReviews(ctx.b).then((res) => {
          ctx.trainingReviews = new Map(Object.entries(res.reviews).map(([idx, review]) => [Number(idx), review]));
          if (flagged.isConnected) {
            flagged.replaceWith(listPanel(ctx, d, "flagged", "Training labels in doubt", flaggedText, true,
                                          d.negative_aum));
          }
        }).catch((err) => flagged.appendChild(DD.note(`Could not load the reviews: ${err.message}`, "error")));
      }
    },
  };
})(window.DD);
