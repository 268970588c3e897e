// Image detail drawer: opened by clicking any thumbnail. Shows the image, labels, all probabilities, its nearest
// training images, saliency (predicted vs true class, any method) and the feature maps of every layer.
"use strict";
(function (DD) {
  const el = DD.el;

  // The prediction's probability after the analysis's temperature (analysis.confidence: fitted on the other half
  // of the images), which tells how often such an answer is right where label smoothing keeps p near 0.9.
  function calibrated(ctx, row) {
    const v = (ctx.col.calibrated_confidence || [])[row];
    const t = (ctx.b.summary.confidence || {}).temperature;
    if (v === undefined || v === null || !t || t.value === 1) return null;
    return [el("dt", {text: "Calibrated"}),
            el("dd", {attrs: {"data-testid": "calibrated", title: "after the temperature fitted on the other half " +
                                                                   "of the images (Confidence view)"},
                      text: `${DD.fmt.pct(v, 2)} after temperature scaling`})];
  }

  // The rows to step through from a thumbnail: those of the nearest element that carries a `navRows` list (the
  // predictions table: its filtered rows), else the thumbnails of its strip (captioned or not), in order.
  DD.navRows = function (thumb) {
    for (let node = thumb; node; node = node.parentElement) if (node.navRows) return node.navRows;
    const fig = thumb.parentElement && thumb.parentElement.matches(".thumb-fig");
    const strip = fig ? thumb.parentElement.parentElement : thumb.parentElement;
    return strip ? [...strip.querySelectorAll(":scope > .thumb[data-row], :scope > .thumb-fig > .thumb[data-row]")]
      .map((t) => Number(t.dataset.row)) : null;
  };

  // `list`: the rows the image was opened from (a strip of thumbnails, the filtered predictions), in their order:
  // ‹ › and the arrow keys step through them, as a lightbox does.
  let nav = null;     // {ctx, list, at}
  DD.openDetail = function (ctx, row, list) {
    const box = DD.clear(document.getElementById("detail"));
    const col = ctx.col;
    const t = col.true[row], p = col.pred[row];
    const issue = col.label_issue[row];
    const at = list ? list.indexOf(row) : -1;
    nav = at >= 0 && list.length > 1 ? {ctx, list, at} : null;
    box.hidden = false;
    box.dataset.row = row;
    const step = (d) => el("button", {class: "icon-btn", type: "button", text: d < 0 ? "‹" : "›",
      disabled: !nav || !list[at + d], attrs: {"aria-label": d < 0 ? "previous image" : "next image",
        title: (d < 0 ? "previous" : "next") + " (← →)", "data-testid": d < 0 ? "detail-prev" : "detail-next"},
      on: {click: () => DD.stepDetail(d)}});
    box.appendChild(el("div", {class: "detail-head"},
      el("h2", {text: `Image #${col.idx[row]}`}),
      el("span", {class: "muted small", text: `row ${row} of the ${ctx.b.split} split`}),
      nav ? el("span", {class: "detail-nav"}, step(-1),
        el("span", {class: "small", attrs: {"data-testid": "detail-position"},
                    text: `${DD.fmt.int(at + 1)} of ${DD.fmt.int(list.length)}`}), step(1)) : null,
      el("button", {class: "icon-btn", type: "button", text: "×", attrs: {"aria-label": "close", "data-testid": "detail-close"},
                    on: {click: DD.closeDetail}})));

    const facts = el("dl", {class: "facts"},
      el("dt", {text: "True class"}), el("dd", {text: ctx.className(t)}),
      el("dt", {text: "Predicted"}), el("dd", {class: p === t ? "ok" : "bad", text: `${ctx.className(p)} (${DD.fmt.pct(col.confidence[row], 2)})`}),
      calibrated(ctx, row),
      el("dt", {text: "Category"}), el("dd", {text: ctx.category(row)}),
      el("dt", {text: "Loss"}), el("dd", {text: DD.fmt.num(col.loss[row], 4)}),
      el("dt", {text: "Label issue"}),
      el("dd", {text: issue ? `yes — suggested label ${ctx.className(col.suggested_label[row])}` : "no"}),
      el("dt", {text: "Label quality"}), el("dd", {text: DD.fmt.num(col.label_quality[row], 3)}));
    box.appendChild(el("div", {class: "detail-top"}, DD.thumb(ctx, row, 168, "big"), facts));
    box.appendChild(el("h3", {text: "Class probabilities"}));
    box.appendChild(DD.probList(ctx, row));

    // A person's verdict on its label (served: made here, kept in the workspace; a report: as it was written).
    const reviewBox = el("div", {class: "detail-review"});
    box.appendChild(reviewBox);
    DD.loadReviews(ctx, true).then((reviews) => {
      if (box.dataset.row !== String(row) || (!ctx.source.setReview && !reviews.has(row))) return;
      reviewBox.append(el("h3", {text: "Review of its label"}),
        DD.reviewCell(ctx, row, () => { if (ctx.onReviewsChanged) ctx.onReviewsChanged(); }));
    }).catch((err) => reviewBox.appendChild(DD.note(`Could not load the reviews: ${err.message}`, "error")));

    // Words a person put on it (served: added and removed here; a report: as they were), FiftyOne's tags.
    const tagBox = el("div", {class: "detail-tags", attrs: {"data-testid": "tags"}});
    box.appendChild(tagBox);
    DD.loadTags(ctx, true).then(() => {
      if (box.dataset.row === String(row)) DD.tagEditor(ctx, row, tagBox);
    }).catch((err) => tagBox.appendChild(DD.note(`Could not load the tags: ${err.message}`, "error")));

    const dup = DD.duplicatesOf(ctx);
    if (dup.train.has(row) || dup.split.has(row)) {
      const d = ctx.b.summary.duplicates;
      box.appendChild(el("h3", {text: "Near-duplicate"}));
      box.appendChild(el("div", {class: "detail-dup", attrs: {"data-testid": "detail-duplicate"}},
        ...["train", "split"].filter((kind) => dup[kind].has(row)).map((kind) => {
          const twin = dup[kind].get(row);
          const label = kind === "train" ? twin.label : col.true[twin.row];
          return el("div", {class: "detail-dup-item"}, DD.duplicatePair(ctx, row, kind, 56),
            el("p", {class: "note", text: (kind === "train" ? `Almost the same picture as training image ` +
              `#${twin.idx}` : `Almost the same picture as #${col.idx[twin.row]} of this split`) +
              `, labelled ${ctx.className(label)} (cosine similarity of their pixels ${DD.fmt.num(twin.similarity, 4)}; ` +
              `near-duplicates from ${DD.fmt.num(d.similarity_cut, 4)}). ` + (label !== t ? "The two labels differ: " +
              "one of them is wrong, or the picture is ambiguous." : kind === "train" ? "The model was trained on a " +
              "picture almost the same: its answer here says little about how it generalises." : "")}));
        })));
    }

    const measures = DD.measuresOf(ctx, row);     // the picture's measures against its class (Slices view)
    if (measures) box.append(el("h3", {text: "The picture, measured"}), measures);

    box.appendChild(el("h3", {text: "Nearest training images"}));
    const nb = el("div", {class: "detail-nb", attrs: {"data-testid": "neighbours"}});
    box.appendChild(nb);
    DD.loadNeighbours(ctx, row, nb);
    if (DD.influenceRows(ctx).has(row)) {
      const inf = el("div", {class: "detail-nb", attrs: {"data-testid": "influence"}});
      box.append(el("h3", {text: "Training images behind the mistake"}), inf);
      DD.loadInfluence(ctx, row, inf);
    }

    if (DD.robustnessTried(ctx, row)) {    // one of the pictures the robustness search tried (Robustness view)
      const rob = el("div", {class: "detail-rob", attrs: {"data-testid": "detail-robustness"}});
      box.append(el("h3", {text: p === t ? "What fools it" : "What would make it right"}), rob);
      DD.loadRobustness(ctx, row, rob);
    }

    // Saliency: the predicted class's map next to the true class's (one map when they agree).
    const sal = el("div", {class: "detail-sal"});
    const drawSaliency = () => {
      DD.clear(sal);
      const m = ctx.state.method;
      const maps = [["pred", `toward predicted ${ctx.className(p)}`]];
      if (p !== t) maps.push(["true", `toward true ${ctx.className(t)}`]);
      for (const [which, label] of maps) {
        sal.appendChild(el("figure", {class: "sal-fig"},
          DD.saliencyImage(ctx.source.saliencyURL(ctx.b, m, row, which), label, 140), el("figcaption", {text: label})));
      }
      if (ctx.source.mode === "report" && !ctx.b.saliency.errorPos.has(row)) {
        sal.appendChild(DD.note("This report holds saliency maps for the misclassified images only; " +
                                "`deepdive serve` computes them for any image."));
      }
    };
    box.appendChild(el("h3", {text: "Saliency"}));
    if (ctx.b.saliency.methods.length) {
      box.appendChild(DD.methodSwitcher(ctx, drawSaliency));
      box.appendChild(DD.legend(ctx));
      box.appendChild(sal);
      drawSaliency();
    } else {
      box.appendChild(DD.note("This analysis has no saliency maps (the model could not be loaded when it ran).", "muted"));
    }

    box.appendChild(el("h3", {text: "Features behind the answer"}));
    const channels = el("div", {class: "detail-channels", attrs: {"data-testid": "channels"}});
    box.appendChild(channels);
    DD.loadChannels(ctx, row, channels);

    box.appendChild(el("div", {class: "detail-act-head"}, el("h3", {text: "Activations"}),
      el("a", {href: DD.viewHref(ctx, "activations"), text: "open in Activations view →",
               on: {click: (e) => {
                 ctx.state.activationRow = row;
                 // Already on the Activations view: the hash would not change, so redraw it for this row.
                 if (location.hash === e.currentTarget.getAttribute("href")) { e.preventDefault(); DD.rerender(); }
               }}})));
    const acts = el("div", {class: "detail-acts"});
    box.appendChild(acts);
    DD.loadActivations(ctx, row, acts, true);
    if (DD.views.try && ctx.source.mode === "served") {
      box.appendChild(el("h3", {text: "Change it"}));
      box.appendChild(el("p", {class: "note"}, "Erase or add strokes and watch the answer move: ",
        el("a", {href: DD.viewHref(ctx, "try"), text: "edit this image in Try an image →",
                 attrs: {"data-testid": "try-this-image"},
                 on: {click: (e) => {
                   ctx.state.tryRow = row;
                   ctx.state.tryPicture = null;
                   if (location.hash === e.currentTarget.getAttribute("href")) { e.preventDefault(); DD.rerender(); }
                 }}})));
    }
    box.focus();
  };

  // Tags by row (deepdive.analysis.tags), loaded once per run context (cached) or afresh.
  [DD.tagsOf, DD.loadTags] = DD.rowStore("tags", (ctx) => ctx.source.tags(ctx.b).then((r) => r.tags));
  DD.tagNames = (tags) => [...new Set([...tags.values()].flat())].sort();    // every tag of a Map key -> [tag]
  DD.allTags = (ctx) => DD.tagNames(DD.tagsOf(ctx));

  // The image's tags as chips (× takes one off) and, served, a box to add one (known tags offered as you type).
  DD.tagEditor = (ctx, row, box) => DD.tagChips(box, row, {
    tags: DD.tagsOf(ctx), known: () => DD.allTags(ctx), listId: `dd-tags-${ctx.uid}`, heading: "Tags",
    save: ctx.source.setTag && ((tag, remove) => ctx.source.setTag(ctx.b, row, tag, remove)),
    changed: () => { if (ctx.onTagsChanged) ctx.onTagsChanged(); }});

  // Tag chips of one image, `key` in the Map `tags` (key -> [tag]), in `box`: save(tag, remove) -> {tags} writes one
  // (absent: read-only, and nothing drawn for an untagged image); known() the tags to offer as you type.
  DD.tagChips = function (box, key, {tags, save, known, listId, heading, changed}) {
    const mine = tags.get(key) || [];
    if (!save && !mine.length) { DD.clear(box); return; }
    const status = el("span", {class: "small bad", attrs: {"data-testid": "tag-status"}});
    const put = async (tag, remove) => {
      try {
        const res = await save(tag, remove);
        if (res.tags.length) tags.set(key, res.tags); else tags.delete(key);
        DD.tagChips(box, key, {tags, save, known, listId, heading, changed});
        if (changed) changed();
      } catch (err) {
        status.textContent = err.message;
      }
    };
    const chips = mine.map((t) => el("span", {class: "tag", attrs: {"data-testid": "tag"}}, t,
      save ? el("button", {class: "icon-btn", type: "button", text: "×", attrs: {"aria-label": `remove tag ${t}`},
                           on: {click: () => put(t, true)}}) : null));
    const input = save ? el("input", {class: "input tag-input", placeholder: "add a tag, Enter",
      attrs: {"aria-label": "add a tag", "data-testid": "tag-input", list: listId, maxlength: "40"},
      on: {keydown: (e) => { if (e.key === "Enter" && e.target.value.trim()) put(e.target.value.trim(), false); }}})
      : null;
    DD.append(DD.clear(box), [heading ? el("h3", {text: heading}) : null, el("div", {class: "tag-row"}, ...chips,
      input, save ? el("datalist", {id: listId}, known().filter((t) => !mine.includes(t))
        .map((t) => el("option", {value: t}))) : null, status)]);
  };

  // "tag these…": a button and the form it opens, to put one tag on a set of images or take it off in one request
  // (FiftyOne's tag samples in view). apply(tag, remove) -> {changed}; known() the tags to offer; testid names the
  // button, and with -form, -input, -add, -remove, -status its parts.
  DD.bulkTagForm = function ({label, listId, known, apply, testid}) {
    const form = el("div", {class: "panel toolbar", hidden: true, attrs: {"data-testid": `${testid}-form`}});
    const input = el("input", {class: "input tag-input", placeholder: "tag", attrs: {maxlength: "40",
      "aria-label": label, list: listId, "data-testid": `${testid}-input`}});
    const status = el("span", {class: "small", attrs: {"data-testid": `${testid}-status`}});
    const options = el("datalist", {id: listId});
    const run = async (remove) => {
      const tag = input.value.trim();
      try {
        const res = await apply(tag, remove);
        status.className = "small";
        status.textContent = `${remove ? "took" : "put"} "${tag}" ${remove ? "off" : "on"} ` +
          `${DD.fmt.int(res.changed)} image${res.changed === 1 ? "" : "s"}`;
      } catch (err) {
        status.className = "small bad";
        status.textContent = err.message;
      }
    };
    form.append(el("span", {class: "tool-label", text: label}), input, options,
      el("button", {class: "btn small", type: "button", text: "put it on all", attrs: {"data-testid": `${testid}-add`},
                    on: {click: () => run(false)}}),
      el("button", {class: "btn small", type: "button", text: "take it off all",
                    attrs: {"data-testid": `${testid}-remove`}, on: {click: () => run(true)}}), status);
    const toggle = el("button", {class: "btn small", type: "button", text: "tag these…",
      attrs: {"data-testid": testid}, title: "put a tag on every image listed, or take it off",
      on: {click: () => {
        form.hidden = !form.hidden;
        DD.clear(options).append(...known().map((t) => el("option", {value: t})));
        if (!form.hidden) input.focus();
      }}});
    return {form, toggle};
  };

  DD.closeDetail = function () {
    const box = document.getElementById("detail");
    box.hidden = true;
    DD.clear(box);
    nav = null;
  };
  // The previous (d = -1) or next (+1) image of the list the detail was opened from.
  DD.stepDetail = function (d) {
    if (!nav || nav.list[nav.at + d] === undefined) return;
    DD.openDetail(nav.ctx, nav.list[nav.at + d], nav.list);
  };

  // Show `loading` in `target` while fetch() runs, then empty it: {result}; on failure say `failed: <why>` there and
  // give null.
  async function fetchInto(target, loading, failed, fetch) {
    DD.clear(target).appendChild(DD.note(loading, "muted"));
    try {
      const result = await fetch();
      DD.clear(target);
      return {result};
    } catch (err) {
      DD.clear(target).appendChild(DD.note(`${failed}: ${err.message}`, "error"));
      return null;
    }
  }

  // Fill `target` with the feature maps of every layer for `row` (compact = the drawer's smaller layout).
  DD.loadActivations = async function (ctx, row, target, compact) {
    const got = await fetchInto(target, "Computing activations…", "Could not compute activations",
                                () => ctx.source.activations(ctx.b, row));
    if (!got) return;
    const result = got.result;
    if (!result) {
      target.appendChild(DD.note(`This report holds activations for ${ctx.b.activations.rows.length} precomputed ` +
        "images (errors, class representatives, top label issues); pick one of them, or run `deepdive serve` " +
        "to see any image.", "muted"));
      return;
    }
    DD.renderLayers(target, result.layers, compact);
  };

  // Each layer's name, shape, statistics and feature-map grid (layers as the activations endpoint gives them).
  DD.renderLayers = function (target, layers, compact) {
    for (const layer of layers) {
      const stats = Object.entries(layer.stats || {});
      target.appendChild(el("div", {class: "layer" + (compact ? " compact" : ""), dataset: {layer: layer.name}},
        el("div", {class: "layer-head"},
          el("span", {class: "layer-name", text: layer.name}),
          el("span", {class: "muted small", text: `${layer.type} · ${layer.shape.join("×")}`})),
        el("table", {class: "layer-stats"}, el("tbody", {}, stats.map(([k, v]) =>
          el("tr", {}, el("th", {text: k.replace(/_/g, " ")}),
             el("td", {text: typeof v === "number" ? (Number.isInteger(v) ? DD.fmt.int(v) : DD.fmt.num(v, 3)) : String(v)}))))),
        el("img", {class: "layer-img", src: layer.image, alt: `${layer.name} feature maps`, on: {load: fitLayerImage}})));
    }
  };

  // The channels of the last feature map that weigh most in the row's answer (deepdive.analysis.channels): each
  // with where it fires on the image (served), the class it fires for most and the split's images it fires on most.
  DD.loadChannels = async function (ctx, row, target) {
    const info = ctx.b.channels || {};
    if (!info.available) {
      DD.clear(target).appendChild(DD.note(`None: ${info.reason || "this analysis predates them"}.`, "muted"));
      return;
    }
    const got = await fetchInto(target, "Weighing the channels…", "Could not weigh the channels",
                                () => ctx.source.channels(ctx.b, row));
    if (!got) return;
    const result = got.result;
    if (!result) {
      target.appendChild(DD.note("This report holds them for the errors; `deepdive serve` weighs any image.", "muted"));
      return;
    }
    const p = ctx.col.pred[row];
    DD.renderChannels(ctx, target, result, p, p !== ctx.col.true[row] ? "its label" : "the runner-up");
  };

  // Channels as loadChannels or the Try view got them ({other, toward, against, maps?}) for an answer `p`, weighed
  // against result.other (`versus` says which class that is).
  DD.renderChannels = function (ctx, target, result, p, versus) {
    const info = ctx.b.channels, other = result.other;
    target.appendChild(el("p", {class: "note", attrs: {"data-testid": "channels-reading"},
      text: `The channels of ${info.layer} that lift ${ctx.className(p)} over ${ctx.className(other)} (${versus}) ` +
            "most, and those that hold it back: each channel's gradient × activation, summed over its positions " +
            "(Captum). Beside each: the class it fires for most and the images of this split it fires on most."}));
    const maps = result.maps || {};
    const item = ([k, v]) => el("div", {class: "ch-item", dataset: {channel: k}},
      maps[k] ? el("img", {class: "ch-map", src: maps[k], alt: `where channel ${k} fires on this image`,
                           attrs: {title: "where it fires on this image"}}) : null,
      el("div", {class: "ch-text"},
        el("span", {class: "strong", text: `channel ${k} `}),
        el("span", {class: "ch-val", text: `${v > 0 ? "+" : "−"}${DD.fmt.num(Math.abs(v), 2)}`}),
        el("div", {class: "muted small", text: `fires most for ${ctx.className(info.top_class[k])} ` +
                                               `(${DD.fmt.pct(info.share[k], 0)} of its activation)`})),
      el("div", {class: "ch-top"}, info.top_rows[k].map((r) => DD.thumb(ctx, r, 28))));
    target.appendChild(el("div", {class: "ch-list"}, result.toward.map(item)));
    if (result.against.length) {
      target.appendChild(el("div", {class: "muted small", text: `Holding ${ctx.className(p)} back:`}));
      target.appendChild(el("div", {class: "ch-list"}, result.against.map(item)));
    }
  };

  // What an image's nearest training images back, in words (reading: deepdive.analysis.neighbours.readings).
  function neighbourReading(ctx, reading, t, p) {
    if (reading === "prediction") return `Most are labelled ${ctx.className(p)}, the prediction: the model's ` +
      `features put this image among training ${ctx.className(p)}s. Compare them with it: look-alikes, or ` +
      "training images labelled wrong.";
    if (reading === "label") return p === t ? `Most are labelled ${ctx.className(t)}, as this image is.`
      : `Most are labelled ${ctx.className(t)}, its label: its features sit among its own class, yet the last ` +
        `layer answers ${ctx.className(p)}, a decision at the border.`;
    return "No class holds a majority: the image sits between classes in the model's feature space.";
  }

  // [[label, how many], ...] of nearest training images, the most frequent label first.
  DD.labelCounts = function (items) {
    const counts = new Map();
    for (const item of items) counts.set(item.label, (counts.get(item.label) || 0) + 1);
    return [...counts.entries()].sort((a, b) => b[1] - a[1]);
  };

  // A row's nearest training images as a strip, framed green when labelled as the image is, red when labelled
  // `other` (the prediction, or a label issue's suggested label); captions: label and similarity, or none.
  // A training image whose label its run's training doubted (a negative area under the margin), marked "?".
  // value: what each item's number is and its caption's digits (the nearest images' similarity; the TracIn score
  // of the training images behind an error)
  DD.neighbourStrip = function (ctx, result, t, other, captions, value = ["similarity", 2]) {
    const doubted = DD.doubtedLabels(ctx), [key, digits] = value;
    return el("div", {class: "nb-row" + (captions ? "" : " compact")}, result.items.map((item) => {
      const kind = item.label === t ? " nb-true" : item.label === other ? " nb-pred" : "";
      const name = ctx.className(item.label);
      const doubt = doubted.get(item.idx);
      return el("figure", {class: "nb-fig" + kind + (doubt ? " nb-doubt" : ""), dataset: {idx: item.idx},
                           attrs: {title: `training image #${item.idx}, labelled ${name}, ${key} ` +
                                          DD.fmt.num(item[key], digits + 1) + (doubt ? `; its label is in doubt: ` +
                                          `training answered ${ctx.className(doubt.leaning)} for most of it (AUM ` +
                                          `${DD.fmt.num(doubt.aum, 2)})` : "")}},
        el("img", {class: "nb-img", src: item.image, alt: `training image ${item.idx}, labelled ${name}`}),
        doubt ? el("span", {class: "nb-doubt-mark", text: "?"}) : null,
        captions ? el("figcaption", {}, el("span", {class: "nb-label", text: name}),
                      el("span", {text: DD.fmt.num(item[key], digits)})) : null);
    }));
  };

  // The error rows whose training images the analysis weighed (analysis.influence).
  DD.influenceRows = (ctx) => {
    if (!ctx.influenceRows) ctx.influenceRows = new Set((ctx.b.influence || {}).available ? ctx.b.influence.rows : []);
    return ctx.influenceRows;
  };

  // {training-set index: item} of the training images whose label the run's training doubted (negative AUM; the
  // bundle lists up to 200 of them, lowest first).
  DD.doubtedLabels = function (ctx) {
    if (!ctx.doubted) {
      const d = ctx.b.dynamics || {};
      ctx.doubted = new Map((d.available ? d.flagged : []).map((item) => [item.idx, item]));
    }
    return ctx.doubted;
  };

  // How far the row sits from the training images, against how far they sit from each other (analysis.atypical).
  DD.typicalityText = function (ctx, row) {
    const a = (ctx.b.summary.neighbours || {}).atypical || {}, col = ctx.col;
    if (!a.available || col.knn_distance[row] === null) return "";
    const share = col.atypicality[row];
    return (col.atypical[row] ? "Atypical: " : "Typical: ") + `its nearest training images lie at a mean cosine ` +
      `distance of ${DD.fmt.num(col.knn_distance[row], 3)}, ` +
      (share >= 0.5 ? `farther than those of ${DD.fmt.pct(share, 1)}` : `closer than those of ${DD.fmt.pct(1 - share, 1)}`) +
      ` of ${DD.fmt.int(a.reference_sample)} sampled training images from theirs` +
      (col.atypical[row] ? `, beyond their outlier fence (${DD.fmt.num(a.fence, 3)}).` : ".");
  };

  // Fill `target` with the row's nearest training images, their labels and similarities, and what they back.
  DD.loadNeighbours = async function (ctx, row, target) {
    const info = ctx.b.summary.neighbours || {};
    if (!info.available) {
      DD.clear(target).appendChild(DD.note(info.reason ? `None: ${info.reason}.` :
        "This analysis predates the search for nearest training images; re-run `deepdive analyze` for them.",
        "muted"));
      return;
    }
    const got = await fetchInto(target, "Finding the nearest training images…",
                                "Could not load the nearest training images", () => ctx.source.neighbours(ctx.b, row));
    if (!got) return;
    const result = got.result;
    if (!result && ctx.b.neighbours.note) {
      target.appendChild(DD.note(`This report has no nearest training images: ${ctx.b.neighbours.note}.`, "muted"));
      return;
    }
    if (!result) {
      target.appendChild(DD.note(`This report holds the nearest training images of ` +
        `${Object.keys(ctx.b.neighbours.data).length} precomputed images (errors first); run \`deepdive serve\` ` +
        "to see them for any image.", "muted"));
      return;
    }
    const col = ctx.col, t = col.true[row], p = col.pred[row];
    const parts = DD.labelCounts(result.items).map(([c, n]) =>
      `${n} labelled ${ctx.className(c)}${c === p && p !== t ? " (the prediction)" : c === t ? " (its label)" : ""}`);
    target.appendChild(el("p", {class: "note", attrs: {"data-testid": "neighbours-reading"},
      text: `Its ${result.items.length} nearest ${ctx.b.split === "train" ? "others " : ""}among ` +
            `${DD.fmt.int(info.reference_size)} ${info.reference} ` +
            `(cosine similarity of the model's penultimate features): ${parts.join(", ")}. ` +
            neighbourReading(ctx, result.reading, t, p)}));
    const typical = DD.typicalityText(ctx, row);
    if (typical) target.appendChild(el("p", {class: "note", attrs: {"data-testid": "neighbours-typicality"},
                                          text: typical}));
    const doubted = result.items.filter((item) => DD.doubtedLabels(ctx).has(item.idx)).length;
    if (doubted) {
      target.appendChild(el("p", {class: "note", attrs: {"data-testid": "neighbours-doubted"},
        text: `${doubted} of them (marked ?) carry a label the training itself doubted: for most of it the model ` +
              "answered another class (a negative area under the margin; Training dynamics)."}));
    }
    if (p !== t) target.appendChild(DD.note("Framed green: labelled as this image is; red: labelled as predicted.",
                                            "muted small"));
    target.appendChild(DD.neighbourStrip(ctx, result, t, p, true));
  };

  // The training images behind an error (analysis.influence, TracIn): those whose training pushed it away from its
  // label, toward the mistake, and those that pulled it toward the label. Stored for the analysis' errors.
  DD.loadInfluence = async function (ctx, row, target) {
    const info = ctx.b.summary.influence || {};
    const got = await fetchInto(target, "Loading the training images behind it…",
                                "Could not load the training images behind it", () => ctx.source.influence(ctx.b, row));
    if (!got) return;
    const result = got.result;
    if (!result) {
      target.appendChild(DD.note(ctx.b.influence.note ? `This report does not hold them: ${ctx.b.influence.note}.` :
        `This report holds them for ${Object.keys(ctx.b.influence.data || {}).length} errors (the most confident ` +
        "first); run `deepdive serve` to see them for every error the analysis weighed.", "muted"));
      return;
    }
    const t = ctx.col.true[row], p = ctx.col.pred[row];
    const count = (items, c) => items.filter((item) => item.label === c).length;
    target.append(
      el("p", {class: "note", attrs: {"data-testid": "influence-reading"}, text:
        `Of the ${DD.fmt.int(info.reference_size)} ${info.reference}, the ${result.against.length} whose training ` +
        `pushed this image furthest from its label ${ctx.className(t)} (TracIn: the two loss gradients' product at ` +
        `the last layer, the final model): ${count(result.against, p)} labelled ${ctx.className(p)}, the answer it ` +
        `gave. Where their pictures are not what their label says, the training data taught the mistake.`}),
      DD.neighbourStrip(ctx, {items: result.against}, t, p, true, ["score", 0]),
      el("p", {class: "note muted small", text: `And the ${result.for.length} that pulled it most toward ` +
        `${ctx.className(t)}:`}),
      DD.neighbourStrip(ctx, {items: result.for}, t, p, true, ["score", 0]));
  };

  // Feature-map grids arrive at native resolution: scale them up by a whole factor to about 300 px wide.
  function fitLayerImage(e) {
    const img = e.target;
    // ~300 px wide at a whole zoom, rounded (a 28x28 layer's 175-px grid at 2x, not at 1x beside its pooled
    // layer's 91-px grid at 3x); the card's width caps it (CSS max-width)
    img.style.width = img.naturalWidth * Math.max(1, Math.round(300 / img.naturalWidth)) + "px";
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") DD.closeDetail();
    // arrows step through the list, unless a person is typing or moving a control
    if ((e.key === "ArrowLeft" || e.key === "ArrowRight") && nav && !e.target.closest("input, textarea, select")) {
      e.preventDefault();
      DD.stepDetail(e.key === "ArrowLeft" ? -1 : 1);
    }
  });
})(window.DD);
