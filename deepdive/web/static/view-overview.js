// Overview: what was trained on what, how well, how long; loss/accuracy curves with the early-stopping hint.
"use strict";
(function (DD) {
  const el = DD.el;
  const PAIRS_SHOWN = 24;   // near-duplicate pairs drawn (the bundle has the first 48 training twins' pictures)

  // The summary's early-stopping insight (insight.early_stop, or the insight itself in older summaries).
  DD.earlyStop = function (summary) {
    const ins = summary.insight;
    if (!ins) return null;
    const es = ins.early_stop || ins;
    return es && (es.earliest_epoch !== undefined || es.members) ? es : null;
  };

  function sourceText(ds) {
    if (!ds || !ds.kind) return "–";
    return ds.location ? `${ds.kind}: ${ds.location}` : ds.kind;
  }

  // The precision a run trained in; runs stored before 2026-11-30 kept only the setting ("auto"), so no text.
  function precisionText(amp) {
    return amp === true ? "bf16 autocast" : amp === false ? "fp32" : "";
  }

  // A run trained with people's reviews of its training labels (deepdive train --reviewed-labels), as text, or "".
  function reviewedText(reviewed) {
    if (!reviewed) return "";
    const relabelled = Object.keys(reviewed.relabel || {}).length, left = (reviewed.leave_out || []).length;
    return `reviewed labels: ${DD.fmt.int(relabelled)} relabelled, ${DD.fmt.int(left)} left out`;
  }

  // The epochs a run pruned (the recipe's "prune": from epoch 2 to prune_until of the epochs), as text, or "";
  // an ensemble's members each prune their own epochs.
  function prunedEpochs(cfg) {
    const resolved = cfg.resolved || {};
    const last = Math.floor((resolved.prune_until || 0) * (resolved.epochs || 0));
    if (!(resolved.prune > 0 && last >= 2)) return "";
    return (cfg.ensemble > 1 ? "each member's " : "") + (last > 2 ? `epochs 2-${last}` : "epoch 2");
  }

  function cards(ctx) {
    const run = ctx.b.run, s = ctx.b.summary, cfg = run.config || {};
    const im = ctx.b.images;
    const resolved = cfg.resolved || {}, pruned = prunedEpochs(cfg);
    const shape = `${im.height}×${im.width}${im.channels > 1 ? "×" + im.channels : ""}`;
    return el("div", {class: "cards", attrs: {"data-testid": "overview-cards"}},
      DD.card("Dataset", run.dataset, `${ctx.b.split} split · ${DD.fmt.int(ctx.n)} images · ${shape} · ${ctx.C} classes`),
      DD.card("Model", run.model_arch || "–", `${DD.fmt.int(run.num_params)} parameters`),
      DD.card(`Accuracy (${ctx.b.split})`, DD.fmt.pct(s.accuracy, 2), `${DD.fmt.int(s.error_count)} errors of ` +
              `${DD.fmt.int(s.n)}` + topTwo(s)),
      DD.card("Training time", DD.fmt.secs(run.train_seconds), [`${ctx.b.epochs.length} epochs ` +
        (run.device === "user" ? "in your own loop" : `on ${run.device || "?"}`),
        precisionText(resolved.amp)].filter(Boolean).join(" · ")),
      DD.card("Recipe", cfg.preset || "–", [resolved.optimizer, resolved.batch_size && `batch ${resolved.batch_size}`,
        cfg.seed !== undefined && `seed ${cfg.seed}`, cfg.ensemble > 1 && `ensemble ×${cfg.ensemble}`,
        pruned && `${pruned} pruned`, reviewedText(cfg.reviewed_labels)].filter(Boolean).join(" · ")),
      DD.card("Data source", (run.data_source || {}).kind || "–", sourceText(run.data_source)),
      DD.card("Label issues", DD.fmt.int(ctx.b.label_issues.length), `flagged by confident learning on ${(s.label_issues || {}).source || "the model's probabilities"}`),
      confidenceCard(s.confidence),
      dynamicsCard(ctx.b.dynamics),
      DD.card("Status", run.status, `finished ${DD.fmt.date(run.finished_at)}`));
  }

  function prunedNote(cfg) {
    const epochs = prunedEpochs(cfg), resolved = cfg.resolved || {};
    if (!epochs) return "";
    return ` The recipe pruned ${epochs} (InfoBatch): each left out a random ${DD.fmt.pct(resolved.prune, 0)} of ` +
      "the images the model already fit, so the train line there is over the harder rest and sits higher than a " +
      "whole epoch's would.";
  }

  function curves(Plotly, ctx, lossBox, accBox) {
    const ep = ctx.b.epochs;
    const es = DD.earlyStop(ctx.b.summary);
    const s = DD.epochSeries(ep);    // with gaps between an ensemble's members
    const line = (key, name, color, dash) => ({x: s.x, y: s.series(key), name, mode: "lines+markers",
      line: {color, width: 2, dash}, marker: {size: 5}, connectgaps: false});
    const shapes = [], annotations = [];
    const stopLine = (epoch, text) => {
      shapes.push({type: "line", xref: "x", yref: "paper", x0: epoch, x1: epoch, y0: 0, y1: 1,
                   line: {color: "#7c3aed", width: 2, dash: "dot"}});
      if (text) annotations.push({xref: "x", yref: "paper", x: epoch, y: 1, yanchor: "bottom", showarrow: false,
                                  text, font: {color: "#7c3aed", size: 11}});
    };
    if (es && es.members) {
      for (const m of es.members) {
        if (m.member > 0) shapes.push({type: "line", xref: "x", yref: "paper", x0: m.first_epoch - 0.5, x1: m.first_epoch - 0.5,
                                       y0: 0, y1: 1, line: {color: "#9ca3af", width: 1}});
        annotations.push({xref: "x", yref: "paper", x: m.first_epoch - 0.5, xanchor: "left", y: 0, yanchor: "bottom",
                          showarrow: false, text: `member ${m.member + 1}`, font: {color: "#6b7280", size: 10}});
        if (m.epochs_saved > 0) stopLine(m.earliest_epoch, null);
      }
    } else if (es && es.epochs_saved > 0) {
      stopLine(es.earliest_epoch, `within ${es.tolerance_pp} pp of best from epoch ${es.earliest_epoch}`);
    }
    const xaxis = {title: {text: es && es.members ? "epoch (members one after another)" : "epoch"},
                   ...(ep.length <= 30 ? {dtick: 1} : {})};
    // A run of your own logs what its loop has (run.log): a chart with nothing logged says so instead of drawing axes.
    const logged = (...keys) => ep.some((e) => keys.some((k) => e[k] !== null && e[k] !== undefined));
    const nothing = (box, what) => DD.clear(box).appendChild(DD.note(`No ${what} was logged per epoch ` +
      `(run.log(${what === "loss" ? "train_loss=..., val_loss=..." : "train_acc=..., val_acc=..."}) records it).`,
      "muted"));
    const pLoss = !logged("train_loss", "val_loss") ? nothing(lossBox, "loss") :
      Plotly.newPlot(lossBox, [line("train_loss", "train", "#4e79a7"), line("val_loss", "validation", "#e15759", "dash")],
      DD.plotLayout({title: {text: "Loss per epoch", font: {size: 13}, x: 0.02, xanchor: "left"}, xaxis,
                     yaxis: {title: {text: "cross-entropy"}, automargin: true, type: "log", ...DD.logTicks(ep.flatMap((e) => [e.train_loss, e.val_loss]))}, shapes, annotations}), DD.plotConfig);
    const pAcc = !logged("train_acc", "val_acc") ? nothing(accBox, "accuracy") :
      Plotly.newPlot(accBox, [line("train_acc", "train", "#4e79a7"), line("val_acc", "validation", "#e15759", "dash")],
      DD.plotLayout({title: {text: "Accuracy per epoch", font: {size: 13}, x: 0.02, xanchor: "left"}, xaxis,
                     yaxis: {title: {text: "accuracy"}, automargin: true, tickformat: ".2%"}, shapes, annotations}), DD.plotConfig);
    return Promise.all([pLoss, pAcc]);
  }

  function insightText(es) {
    if (!es) return "No validation accuracy was logged, so there is no early-stopping hint.";
    if (es.members) {
      const n = es.members.length;
      if (es.epochs_saved === 0) return `Each of the ${n} ensemble members reached its best validation accuracy in its last epoch; training longer may still help.`;
      const at = es.members.map((m) => `${m.earliest_member_epoch} of ${m.member_epochs}`).join(", ");
      return `An ensemble of ${n} members, trained one after another, each judged on its own validation curve: ` +
        `they stayed within ${es.tolerance_pp} pp of their best from epochs ${at} on. ` +
        `Stopping each there would have saved ` +
        `${es.epochs_saved} of ${es.epochs_total} epochs` +
        (es.seconds_missing ? "." : `, ${DD.fmt.secs(es.seconds_saved)} (${DD.fmt.pct(es.fraction_saved, 0)} of the training time).`);
    }
    if (es.epochs_saved === 0) return `Validation accuracy peaked in the last epoch (${es.best_epoch}); training longer may still help.`;
    const best = DD.fmt.pct(es.best_val_acc);
    const when = es.earliest_epoch === es.best_epoch
      ? `Validation accuracy reached its best, ${best}, at epoch ${es.best_epoch}. Stopping there `
      : `Validation accuracy was within ${es.tolerance_pp} pp of its best (${best}, epoch ${es.best_epoch}) ` +
        `from epoch ${es.earliest_epoch} on (${DD.fmt.pct(es.earliest_val_acc)} there). Stopping there `;
    return when +
      `would have saved ${es.epochs_saved} of ${es.epochs_total} epochs` +
      (es.seconds_missing ? "." : `, ${DD.fmt.secs(es.seconds_saved)} (${DD.fmt.pct(es.fraction_saved, 0)} of the training time).`);
  }

  // The training labels the training itself doubted (deepdive.analysis.dynamics; the Training dynamics view lists them).
  function dynamicsCard(d) {
    if (!d || !d.available) return null;
    return DD.card("Training labels in doubt", DD.fmt.int(d.negative_aum), `of ${DD.fmt.int(d.images)} training ` +
      `images: a negative area under the margin over ${d.epochs} epochs`);
  }

  // Calibration in one card (deepdive.analysis.confidence; the Confidence view has the rest).
  function confidenceCard(c) {
    if (!c || !c.available) return null;
    const gap = c.mean_confidence - c.accuracy;
    const reading = Math.abs(gap) < 0.01 ? "calibrated" : `${gap < 0 ? "under" : "over"}-confident by ` +
      `${(100 * Math.abs(gap)).toFixed(1)} pp`;
    const t = c.temperature;
    return DD.card("Calibration error (ECE)", DD.fmt.pct(c.ece, 1), reading +
      (t && t.value !== 1 ? ` · ${DD.fmt.pct(t.ece, 2)} at temperature ${DD.fmt.num(t.value, 2)}` : ""));
  }

  function topConfusions(ctx) {
    const list = ctx.b.summary.top_confusions || [];
    if (!list.length) return DD.note("No misclassified images.");
    return el("div", {class: "confusion-list"}, list.slice(0, 6).map((tc) => el("div", {class: "confusion-item"},
      el("div", {class: "confusion-label"},
        el("span", {class: "strong", text: `${ctx.className(tc.true)} → ${ctx.className(tc.pred)}`}),
        el("span", {class: "muted", text: ` ${tc.count} image${tc.count === 1 ? "" : "s"}`})),
      el("div", {class: "thumb-row"}, tc.indices.slice(0, 12).map((r) => DD.thumb(ctx, r, 36))),
      leadingChannel(ctx, tc))));
  }

  // The channel that lifts the wrong answer most in the most of a confusion's errors (deepdive.analysis.channels;
  // the stored errors), with the images it fires on most: the feature the confusion rests on. Null when no
  // channel leads more than one of them.
  function leadingChannel(ctx, tc) {
    const ch = ctx.b.channels || {};
    if (!ch.available) return null;
    const counts = new Map();
    let weighed = 0;
    for (const r of tc.indices) {
      const e = (ch.errors || {})[String(r)];
      if (!e) continue;
      weighed += 1;
      if (e.toward.length) counts.set(e.toward[0][0], (counts.get(e.toward[0][0]) || 0) + 1);
    }
    const [k, n] = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0] || [null, 0];
    if (n < 2) return null;
    return el("div", {class: "confusion-channel small", attrs: {"data-testid": "confusion-channel"}},
      el("span", {class: "muted", attrs: {title: `channel ${k} of ${ch.layer}: the feature that lifts the wrong ` +
                                                 "answer most in these errors (Captum's gradient × activation)"},
              text: `channel ${k} lifts ${ctx.className(tc.pred)} most in ${n} of ${weighed}; it fires most for ` +
                    `${ctx.className(ch.top_class[k])}:`}),
      ch.top_rows[k].slice(0, 6).map((r) => DD.thumb(ctx, r, 22)));
  }

  // Where the errors sit among the training images (deepdive.analysis.neighbours), each count a link to those
  // errors in the predictions table, or nothing.
  function neighbourNote(ctx) {
    const nb = ctx.b.summary.neighbours || {}, e = nb.errors;
    if (!nb.available || !e || !ctx.b.summary.error_count) return null;
    const list = (code, text) => el("a", {href: DD.viewHref(ctx, "predictions"), text,
      attrs: {"data-testid": `neighbours-${code}`},
      on: {click: () => { ctx.state.predFilter = {correct: "wrong", neighbours: code}; }}});
    return el("p", {class: "note", attrs: {"data-testid": "neighbours-summary"}},
      `In the model's feature space (penultimate features, ${nb.k} nearest training images each), `,
      list(0, `${DD.fmt.int(e.prediction)} errors sit among training images of the class it predicted`), ", ",
      list(1, `${DD.fmt.int(e.label)} among their own class`), " (the last layer decided against them) and ",
      list(2, `${DD.fmt.int(e.mixed)} between classes`),
      `. A vote of each image's neighbours gets ${DD.fmt.pct(nb.knn_accuracy, 2)} of the images right ` +
      `(the model: ${DD.fmt.pct(ctx.b.summary.accuracy, 2)}). Any image's detail shows its neighbours.`);
  }

  // Every other metric the epochs logged (run.log(grad_norm=...), the recipe's system/... readings), one small
  // chart each, ordered by name so a "group/" prefix keeps a group together (W&B's panels); system readings last.
  function otherMetrics(ctx) {
    const ep = ctx.b.epochs;
    const system = (k) => k.startsWith("system/");
    const names = DD.epochMetrics(ep).filter((k) => !DD.EPOCH_FIELDS.includes(k))
      .sort((a, b) => system(a) - system(b) || a.localeCompare(b));
    if (!names.length) return null;
    const boxes = names.map((k) => el("div", {class: "chart small-chart", dataset: {metric: k}}));
    const section = DD.section("Other metrics per epoch", el("div", {class: "metric-grid"}, boxes),
      names.some(system) ? DD.note("system/…: the training process as deepdive measured it at each epoch's end " +
        "(CPU time over wall time since the epoch began, 200% being two cores busy; peak memory so far).",
        "muted small") : null);
    section.dataset.testid = "other-metrics";
    const draw = (Plotly) => {
      const s = DD.epochSeries(ep);
      return Promise.all(names.map((k, i) => {
        const y = s.series(k), chart = DD.metricChart(k, y);
        return Plotly.newPlot(boxes[i], [{x: s.x, y, mode: "lines+markers", connectgaps: false, name: k,
          line: {color: system(k) ? "#6b7280" : "#4e79a7", width: 2}, marker: {size: 4}}],
          DD.smallChartLayout(chart.title, {title: {text: "epoch"}, ...(ep.length <= 30 ? {dtick: 1} : {})},
                              chart.yaxis), DD.plotConfig);
      }));
    };
    return {section, draw};
  }

  // What the run logged per training step (the recipe's train loss, accuracy, learning rate and epoch every few
  // steps, run.log_step's): one chart per name, the raw points faint and a smoothed line over them (TensorBoard's
  // look), against the step or, where the run logged them, the epoch or the seconds of training.
  function stepCharts(ctx) {
    const steps = ctx.b.steps || {}, names = DD.stepMetrics(steps);
    if (!names.length) return null;
    const boxes = names.map((k) => el("div", {class: "chart small-chart", dataset: {metric: k}}));
    const averaged = names.filter((k) => steps[k].every > 1);
    let Plotly = null;
    const axes = DD.stepAxes(steps);
    const axis = () => (axes.some((a) => a.value === DD.stepAxis) ? DD.stepAxis : "step");
    const memberOf = DD.epochMembers(ctx.b.epochs);
    const traces = (k, weight) => {
      const s = DD.stepSeries(steps, k, axis(), memberOf), color = DD.noisy(k) ? "#4e79a7" : "#6b7280";
      return [{x: s.x, y: s.y, mode: "lines", name: "logged", line: {color, width: 1}, opacity: 0.3,
               hoverinfo: "skip", visible: DD.noisy(k)},
              {x: s.x, y: DD.smooth(s.y, DD.noisy(k) ? weight : 0), mode: "lines", name: k, line: {color, width: 2}}];
    };
    const layout = (k) => {
      const chart = DD.metricChart(k, steps[k].value, true);
      return DD.smallChartLayout(chart.title, {title: {text: DD.stepAxisTitle(axis())}}, chart.yaxis,
                                 {shapes: DD.epochLines(steps, axis())});
    };
    const draw = (P) => {
      Plotly = P;
      return Promise.all(names.map((k, i) => Plotly.react(boxes[i], traces(k, DD.stepSmoothing), layout(k),
                                                          DD.plotConfig)));
    };
    // a redraw keeps each chart's zoom: only the smoothed trace changes
    const resmooth = (weight) => Plotly && names.forEach((k, i) =>
      DD.noisy(k) && Plotly.restyle(boxes[i], {y: [DD.smooth(DD.stepSeries(steps, k, axis(), memberOf).y, weight)]},
                                 [1]));
    const every = steps[names[0]].step.length > 1 ? steps[names[0]].step[1] - steps[names[0]].step[0] : null;
    const section = DD.section("Per step",
      el("div", {class: "toolbar"}, DD.smoothingSlider(resmooth),
         axes.length > 1 ? DD.stepAxisSwitch(axes, () => Plotly && draw(Plotly)) : null,
         DD.note((ctx.b.run.config || {}).preset && every ?
           `The recipe's train loss and accuracy averaged over each ${every} steps (on the augmented batches, as ` +
           "the epochs' train curves), the learning rate at the last of them. Faint: as logged; solid: smoothed."
           : "Faint: as logged; solid: smoothed (an exponential moving average; 0 turns it off).", "muted small")),
      el("div", {class: "metric-grid"}, boxes),
      averaged.length ? DD.note(`${averaged.join(", ")}: more points than a chart draws well; each point here ` +
        `averages ${steps[averaged[0]].every} consecutive steps (deepdive export RUN steps has them all).`,
        "muted small") : null);
    section.dataset.testid = "step-charts";
    return {section, draw};
  }

  // Each parameter's values and last gradient per epoch, from their histograms (deepdive.train.histograms), as
  // TensorBoard's distributions draw them: the median inside bands that hold the middle 38%, 68%, 86% and all of
  // the values. A table beside: every parameter's spread at the last epoch, its gradient's against its weights'
  // (a layer that stopped learning, or whose gradients vanish, stands out); a click on a row draws it.
  const HIST_BANDS = [[0, 1], [0.07, 0.93], [0.16, 0.84], [0.31, 0.69]];
  DD.histQuantile = function (counts, lo, hi, q) {     // linear within the bin that holds the q-th value
    const n = counts.reduce((a, b) => a + b, 0), width = (hi - lo) / counts.length;
    if (!n) return null;
    let below = 0;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] && below + counts[i] >= q * n) return lo + width * (i + Math.max(0, q * n - below) / counts[i]);
      below += counts[i];
    }
    return hi;
  };
  function weightsSection(ctx) {
    const all = ctx.b.histograms || [];
    if (!all.length) return null;
    const names = [...new Set(all.map((h) => h.name))];
    const of = (name, kind) => all.find((h) => h.name === name && h.kind === kind);
    const pick = el("select", {class: "input", attrs: {"aria-label": "parameter", "data-testid": "hist-param"}},
      names.map((n) => el("option", {value: n, text: n})));
    const charts = {weight: el("div", {class: "chart", attrs: {"data-testid": "hist-weight"}}),
                    grad: el("div", {class: "chart", attrs: {"data-testid": "hist-grad"}})};
    const last = (h) => (h ? h.std[h.std.length - 1] : null);
    const num = (v) => (v === null || v === undefined ? "–" : DD.fmt.num(v, 3));
    const rows = names.map((n) => {
      const w = of(n, "weight"), g = of(n, "grad");
      const size = w ? w.counts[w.counts.length - 1].reduce((a, b) => a + b, 0) : null;
      return el("tr", {class: "clickable", dataset: {param: n}, on: {click: () => { pick.value = n; pick.onchange(); }}},
        el("td", {class: "mono", text: n}), el("td", {class: "num", text: size === null ? "–" : DD.fmt.int(size)}),
        el("td", {class: "num", text: num(last(w))}), el("td", {class: "num", text: num(last(g))}),
        el("td", {class: "num", text: w && g && last(w) ? num(last(g) / last(w)) : "–"}));
    });
    const table = el("table", {class: "grid", attrs: {"data-testid": "hist-table"}},
      el("thead", {}, el("tr", {}, ["parameter", "values", "weights' std", "gradient's std", "gradient / weights"]
        .map((h) => el("th", {text: h})))), el("tbody", {}, rows));
    const section = DD.section("Weights and gradients",
      el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "parameter"}), pick,
        el("span", {class: "muted small", text: "per epoch: the median, in bands holding the middle 38%, 68%, 86% " +
          "and all of the values (TensorBoard's distributions); the gradient is the last step's of each epoch"})),
      el("div", {class: "two-col"}, charts.weight, charts.grad),
      el("details", {}, el("summary", {text: `Every parameter at the last epoch (${names.length})`}), table));
    section.dataset.testid = "weights";
    let Plotly = null;
    const drawOne = (kind) => {
      const h = of(pick.value, kind), box = charts[kind];
      if (!h) { Plotly.purge(box); DD.clear(box).appendChild(DD.note(`No ${kind === "grad" ? "gradient" : "weights"} ` +
                                                                      "logged for this parameter.", "muted")); return null; }
      const color = kind === "grad" ? "#e15759" : "#4e79a7";
      const at = (q) => h.counts.map((c, i) => DD.histQuantile(c, h.lo[i], h.hi[i], q));
      const bands = HIST_BANDS.map(([a, b]) => [at(a), at(b)]), median = at(0.5);     // each epoch's, once
      // an ensemble's members one after another: each member's epochs drawn apart, no band joining two nets
      const members = DD.epochMembers(ctx.b.epochs || []), parts = [];
      h.epoch.forEach((e, i) => {
        if (!i || members.get(e) !== members.get(h.epoch[i - 1])) parts.push([]);
        parts[parts.length - 1].push(i);
      });
      const traces = parts.flatMap((part) => {
        const take = (values) => part.map((i) => values[i]);
        return [...bands.flatMap(([lo, hi], k) => DD.shade(take(h.epoch), take(lo), take(hi), color, 0.12 + 0.12 * k)),
        {x: take(h.epoch), y: take(median), mode: "lines+markers", name: "median", line: {color, width: 2},
         marker: {size: 4}, customdata: part.map((i) => [h.lo[i], h.hi[i], h.mean[i], h.std[i]]), showlegend: false,
         hovertemplate: "epoch %{x}: median %{y:.4g}<br>mean %{customdata[2]:.4g}, std %{customdata[3]:.4g}" +
                        "<br>range %{customdata[0]:.4g} to %{customdata[1]:.4g}<extra></extra>"}];
      });
      return Plotly.react(box, traces, DD.plotLayout({title: {text: `${pick.value}: ${kind === "grad" ? "gradient" :
        "weights"}`, font: {size: 13}, x: 0.02, xanchor: "left"}, xaxis: {title: {text: "epoch"},
        ...(h.epoch.length <= 30 ? {dtick: 1} : {})},
        yaxis: {automargin: true}, showlegend: false, hovermode: "closest"}), DD.plotConfig);
    };
    pick.onchange = () => Promise.all([drawOne("weight"), drawOne("grad")]);
    return {section, draw: (P) => { Plotly = P; return pick.onchange(); }};
  }

  // The images farthest from the training images in the model's feature space (deepdive.analysis.atypical): how
  // many lie beyond the training images' own outlier fence, how many of the errors they hold, the most atypical.
  function atypicalSection(ctx) {
    const a = (ctx.b.summary.neighbours || {}).atypical;
    if (!a || !a.available) return null;
    const n = ctx.n, rest = Math.max(1, n - a.count), shown = a.rows.length;
    const rate = (e, m) => DD.fmt.pct(e / Math.max(1, m), 1);
    return DD.section("Atypical images",
      el("p", {class: "note", attrs: {"data-testid": "atypical-summary"}, text:
        `${DD.fmt.int(a.count)} of the ${DD.fmt.int(n)} images lie farther from the training images than the ` +
        `training images' own outlier fence (the mean cosine distance to their ${(ctx.b.summary.neighbours || {}).k} ` +
        `nearest above ${DD.fmt.num(a.fence, 3)}, Q3 + 1.7 IQR over ${DD.fmt.int(a.reference_sample)} sampled ` +
        `training images, cleanlab Datalab's rule)` + (a.count ? `; ${DD.fmt.int(a.errors)} of the ` +
        `${DD.fmt.int(a.total_errors)} errors are among them: ${rate(a.errors, a.count)} of them are wrong, ` +
        `${rate(a.total_errors - a.errors, rest)} of the rest` : "") +
        `. The ${shown} most atypical, farthest first (framed red: wrong):`}),
      el("div", {class: "thumb-row", attrs: {"data-testid": "atypical-thumbs"}},
        a.rows.map((r) => DD.thumb(ctx, r, 36))),
      el("div", {class: "btn-row"}, el("a", {class: "btn", href: DD.viewHref(ctx, "predictions"),
        attrs: {"data-testid": "to-atypical"}, text: "list the atypical images →",
        on: {click: () => { ctx.state.predFilter = {atypical: "yes", sort: "dist-desc"}; }}})));
  }

  // Images that (almost) repeat a training image or another image of the split, in pixels (analysis.duplicates): a
  // test image with a twin in training tests memory, not generalisation, and twins under two labels show a label
  // error or an ambiguous picture. Conflicting pairs first, then the most similar.
  function duplicatesSection(ctx) {
    const d = ctx.b.summary.duplicates;
    if (!d || !d.available) return null;
    const t = d.train, s = d.split, n = ctx.n, images = ctx.b.split === "train" ? "training images" : "images";
    const pct = (v) => (v === null || v === undefined ? "–" : DD.fmt.pct(v, 2));
    const rule = `cosine similarity of their pixels ${DD.fmt.num(d.similarity_cut, 4)} or more: below ` +
      `${d.threshold} × the median distance to the nearest image, cleanlab Datalab's near-duplicate rule`;
    const twins = ctx.b.split === "train" ? "another training image" : `one of the ${DD.fmt.int(d.reference_size)} ` +
      `${d.reference}`;
    const parts = [`${DD.fmt.int(t.count)} of the ${DD.fmt.int(n)} ${images} are near-duplicates of ${twins} ` +
      `(${rule})` + (t.count ? `; ${DD.fmt.int(t.conflicts)} of them under another label. The model gets ` +
      `${pct(t.accuracy_duplicates)} of them right and ${pct(t.accuracy_rest)} of the rest` +
      (ctx.b.split === "test" ? " (the test accuracy without them)" : "") :
      `; the closest comes to ${DD.fmt.num(d.closest, 4)}`) + "."];
    if (s) parts.push(`${DD.fmt.int(s.count)} ${images} repeat another of this split (${DD.fmt.int(s.pairs_total)} ` +
                      `pair${s.pairs_total === 1 ? "" : "s"}, ${DD.fmt.int(s.conflicts)} under two labels).`);
    const dup = DD.duplicatesOf(ctx);
    const trainRows = t.listed.slice(0, PAIRS_SHOWN).map(([row]) => row);
    const splitRows = s ? s.listed.slice(0, PAIRS_SHOWN).map(([a]) => a) : [];
    const shown = (rows, kind, what) => rows.length ? [
      el("p", {class: "muted small", text: what}),
      el("div", {class: "thumb-row", attrs: {"data-testid": `dup-${kind}`}},
        rows.map((row) => DD.duplicatePair(ctx, row, kind, 36)))] : [];
    const link = (filter, text, testid) => el("a", {class: "btn", href: DD.viewHref(ctx, "predictions"),
      attrs: {"data-testid": testid}, text, on: {click: () => { ctx.state.predFilter = {duplicate: filter}; }}});
    return DD.section("Near-duplicates",
      el("p", {class: "note", attrs: {"data-testid": "duplicates-summary"}, text: parts.join(" ")}),
      ...shown(trainRows, "train", `Each ${ctx.b.split === "train" ? "image" : "image and its training twin"}, ` +
        `captioned with their labels and similarity (framed orange: the labels differ)` +
        (t.count > trainRows.length ? `; the first ${trainRows.length} of ${DD.fmt.int(t.count)}:` : ":")),
      ...shown(splitRows, "split", `Twins within the ${ctx.b.split} split` +
        (s && s.pairs_total > splitRows.length ? `, the first ${splitRows.length} of ${DD.fmt.int(s.pairs_total)} ` +
                                                  "pairs:" : ":")),
      dup.train.size || dup.split.size ? el("div", {class: "btn-row"},
        dup.train.size ? link("train", "list the near-duplicates of training images →", "to-duplicates") : null,
        dup.split.size ? link("split", "list the twins within the split →", "to-split-duplicates") : null) : null);
  }

  // Where the errors gather by what the pictures look like (analysis.slices): the three strongest slices, each with
  // its errors, and the way to the Slices view.
  function slicesSection(ctx) {
    const s = DD.slicesOf(ctx);
    if (!s) return null;
    const top = s.listed.slice(0, 3);
    const head = s.found ? `${DD.fmt.int(s.found)} of ${DD.fmt.int(s.tested)} slices of the pictures (a tail of ` +
      "one measure within a class) hold more errors than the rest of their class at a 5% false discovery rate; " +
      "the strongest:" : `No slice of the pictures (${DD.fmt.int(s.tested)} tried: a tail of one measure within a ` +
      "class) holds more errors than chance would put there at a 5% false discovery rate; the strongest leads:";
    return DD.section("Where the errors gather",
      DD.sliceFindingsNote(s),
      el("p", {class: "note", attrs: {"data-testid": "overview-slices"}, text: head}),
      top.length ? el("ul", {class: "slice-list"}, top.map((item) => {
        const member = new Set(DD.sliceRows(ctx, item));
        return el("li", {},
          el("span", {text: `${DD.sliceText(ctx, s, item)}: ${DD.fmt.int(item.errors)} of ${DD.fmt.int(item.images)} wrong ` +
            `(${DD.fmt.pct(item.rate, 1)}, the rest ${DD.fmt.pct(item.rest_rate, 1)}; q ${DD.qText(item.q)}) `}),
          el("span", {class: "thumb-row inline"}, ctx.errorRows.filter((r) => member.has(r)).slice(0, 6)
            .map((r) => DD.thumb(ctx, r, 28))));
      })) : null,
      el("div", {class: "btn-row"}, el("a", {class: "btn", href: DD.viewHref(ctx, "slices"),
        attrs: {"data-testid": "to-slices"}, text: "every slice and measure →"})));
  }

  // What still fools the model (analysis.robustness): the Robustness view's summary and the way there.
  function robustnessSection(ctx) {
    const s = DD.robustnessOf(ctx);
    if (!s) return null;
    const adv = s.families.find((f) => f.id === "adversarial");
    const e = adv && adv.errors;
    return DD.section("What still fools it", DD.robustnessNote(ctx, s),
      e && e.n && e.median !== null && adv.median !== null ? el("p", {class: "note",
        attrs: {"data-testid": "overview-robustness-errors"}, text: `The errors sit ` +
        `${e.median < adv.median ? "closer to right than the right answers to wrong" : "no closer to right than " +
          "the right answers to wrong"}: ${e.mended} of ${e.n} are made right by an invisible change, half of them ` +
        `by ${DD.sizeText(adv, e.median)} or less (half the right answers flip by ${DD.sizeText(adv, adv.median)}).`})
        : null,
      el("div", {class: "btn-row"}, el("a", {class: "btn", href: DD.viewHref(ctx, "robustness"),
        attrs: {"data-testid": "to-robustness"}, text: "curves, pictures, the errors made right →"})));
  }

  // The training images among those most against the most errors' labels (analysis.influence, TracIn), each with
  // its label, how many errors it is behind, and "?" where the training dynamics doubt its label too.
  function influenceSection(ctx) {
    const inf = ctx.b.summary.influence;
    if (!inf || !inf.available || !(inf.behind || []).length) return null;
    const pictures = (ctx.b.influence || {}).pictures || {};
    const doubted = inf.behind.filter((b) => b[4]).length;
    const weighed = inf.errors >= ctx.b.summary.error_count ? `the ${DD.fmt.int(inf.errors)} errors` :
      `the ${DD.fmt.int(inf.errors)} most confident errors`;
    const panel = el("div", {class: "behind-panel", attrs: {"data-testid": "behind-panel"}});
    const section = DD.section("Training images behind the most errors",
      el("p", {class: "note", attrs: {"data-testid": "influence-summary"}, text:
        `For each of ${weighed}, the ${inf.k} training images whose training pushed it furthest from its label ` +
        "(TracIn with Captum: the product of the two images' loss gradients at the last layer, the final model). " +
        `These ${inf.behind.length} are among them most often` + (inf.doubts_known ? `; ${doubted} carry a label ` +
        "the training itself doubted (?: a negative area under the margin, Training dynamics)" : "") +
        ". A training image behind many errors and not " +
        "what its label says is worth a review. Each caption: its label and the errors it is behind; a click " +
        "shows them" + (reviewable(ctx) ? ", with a verdict to give on its label." : ".")}),
      el("div", {class: "nb-row", attrs: {"data-testid": "influence-behind"}}, inf.behind.map(([idx, label, n, , doubt]) =>
        el("figure", {class: "nb-fig clickable" + (doubt ? " nb-doubt" : ""), dataset: {idx},
                      attrs: {title: `training image #${idx}, labelled ${ctx.className(label)}, among the ${inf.k} ` +
                                     `most against the label of ${n} error${n === 1 ? "" : "s"}`},
                      on: {click: (e) => {
                        e.currentTarget.parentElement.querySelectorAll("figure.picked")
                          .forEach((f) => f.classList.remove("picked"));
                        e.currentTarget.classList.add("picked");
                        behindPanel(ctx, panel, idx, label, pictures[String(idx)]);
                      }}},
          pictures[String(idx)] ? el("img", {class: "nb-img", src: pictures[String(idx)],
                                             alt: `training image ${idx}, labelled ${ctx.className(label)}`}) : null,
          doubt ? el("span", {class: "nb-doubt-mark", text: "?"}) : null,
          el("figcaption", {}, el("span", {class: "nb-label", text: ctx.className(label)}),
             el("span", {text: `×${n}`}))))),
      ctx.b.influence.pictures_note ? DD.note(`No pictures: ${ctx.b.influence.pictures_note}.`, "muted") : null,
      panel);
    return section;
  }

  // A training image's verdicts are kept with the run's training dynamics (the dynamics view's own; a report shows
  // those it holds).
  const reviewable = (ctx) => !!(ctx.b.dynamics || {}).available && !!ctx.source.setTrainingReview;

  // One training image behind errors: its picture, label, the errors it is behind (their thumbnails, a link that
  // lists them), what the training dynamics make of its label, and a verdict on it (served).
  function behindPanel(ctx, panel, idx, label, picture) {
    const b = ctx.b.influence, doubt = DD.doubtedLabels(ctx).get(idx);
    const rows = b.rows.filter((r, k) => b.against[k].includes(idx));
    const review = el("div", {class: "behind-review"});
    DD.append(DD.clear(panel), [
      picture ? el("img", {class: "nb-img big", src: picture, alt: `training image ${idx}`}) : null,
      el("div", {class: "behind-body"},
        el("div", {}, el("span", {class: "mono", text: `#${idx} `}),
           el("span", {class: "strong", text: `labelled ${ctx.className(label)}`}),
           el("span", {class: "muted", text: ` · among the ${(ctx.b.summary.influence || {}).k} training images ` +
             `most against the label of ${rows.length} error${rows.length === 1 ? "" : "s"}:`})),
        el("div", {class: "thumb-row", attrs: {"data-testid": "behind-errors"}}, rows.map((r) => DD.thumb(ctx, r, 32))),
        doubt ? el("p", {class: "note small bad", text: `Its label is in doubt: for most of training the model ` +
          `answered ${ctx.className(doubt.leaning)} (area under the margin ${DD.fmt.num(doubt.aum, 2)}).`}) : null,
        review,
        el("a", {class: "more", href: DD.viewHref(ctx, "predictions"), text: "list these errors →",
                 attrs: {"data-testid": "behind-list"},
                 on: {click: () => { ctx.state.predFilter = {rows, rowsLabel: `behind which training image #${idx} is`}; }}}))]);
    if (!(ctx.b.dynamics || {}).available) return;
    const reviews = ctx.trainingReviews ? Promise.resolve(ctx.trainingReviews) :
      ctx.source.trainingReviews(ctx.b).then((res) => (ctx.trainingReviews =
        new Map(Object.entries(res.reviews).map(([i, v]) => [Number(i), v]))));
    reviews.then((map) => {
      if (!panel.isConnected && !review.isConnected) return;
      if (!reviewable(ctx) && !map.has(idx)) return;     // a report without a verdict on it: nothing to say
      review.append(el("span", {class: "tool-label", text: "its label"}), DD.verdictCell(ctx, {reviews: map, key: idx,
        // a relabel starts at what the errors it is behind are (a 9 labelled 4 behind 9s taken for 4s: 9)
        given: label, proposed: rows.length && ctx.col.true[rows[0]] !== label ? ctx.col.true[rows[0]] :
          (label === 0 ? 1 : 0),
        save: ctx.source.setTrainingReview && ((verdict, to) => ctx.source.setTrainingReview(ctx.b, idx, verdict, to))}));
    }).catch((err) => review.appendChild(DD.note(`Could not load the reviews: ${err.message}`, "error")));
  }

  // The words people put on this split's images (an image's detail, "tag these…"), each with its count and a link to
  // the predictions it lists; filled once the tags are loaded, absent while there are none.
  function tagsSection(ctx) {
    const box = el("section", {class: "panel", hidden: true, attrs: {"data-testid": "overview-tags"}});
    DD.loadTags(ctx, true).then((tags) => {
      // each tag's images and how many of them the model gets wrong: the tag as a slice of the data (FiftyOne's
      // evaluation of a view), e.g. "thin 4 · 12 images, 5 wrong"
      const counts = new Map();
      for (const [row, list] of tags) for (const t of list) {
        const c = counts.get(t) || {n: 0, wrong: 0};
        c.n += 1;
        c.wrong += ctx.col.correct[row] ? 0 : 1;
        counts.set(t, c);
      }
      if (!counts.size) return;
      box.hidden = false;
      DD.clear(box).append(el("h2", {text: "Tags"}), el("div", {class: "tag-row"},
        [...counts.entries()].sort((a, b) => b[1].n - a[1].n || a[0].localeCompare(b[0])).map(([t, c]) =>
          el("a", {class: "tag", href: DD.viewHref(ctx, "predictions"), attrs: {"data-testid": "overview-tag",
                   title: `${DD.fmt.pct(1 - c.wrong / c.n, 1)} of them right`},
                   on: {click: () => { ctx.state.predFilter = {tag: t}; }}},
             `${t} · ${DD.fmt.int(c.n)} image${c.n === 1 ? "" : "s"}, ${DD.fmt.int(c.wrong)} wrong`))),
        DD.note("Words put on images in their detail; each with how many of its images the model gets wrong. " +
                "A click lists them.", "muted small"));
    }).catch(() => {});
    return box;
  }

  // The model's layers in call order (deepdive.analysis.activations.architecture): what the Activations view walks
  // through, with each layer's output shape and share of the parameters. Folded: most readers know their model.
  function layersSection(ctx) {
    const a = ctx.b.summary.architecture;
    if (!a || !a.available) return null;
    const shape = (s) => (s ? s.join("×") : "–");
    const kb = a.param_bytes / 1024;
    const body = el("tbody", {}, a.layers.map((l, i) => el("tr", {},
      el("td", {class: "num muted", text: String(i + 1)}), el("td", {class: "mono", text: l.name}),
      el("td", {text: l.type + (l.calls > 1 ? ` (×${l.calls})` : "")}), el("td", {class: "mono", text: shape(l.output)}),
      el("td", {class: "num", text: l.params ? DD.fmt.int(l.params) : ""}),
      el("td", {class: "num muted", text: l.params ? DD.fmt.pct(l.params / Math.max(1, a.total_params), 1) : ""}),
      el("td", {class: "mono small muted", text: l.details}))));
    const frozen = a.total_params - a.trainable_params;
    return el("section", {class: "panel", attrs: {"data-testid": "layers"}}, el("details", {},
      el("summary", {class: "strong", text: `Model layers: ${a.layers.length} in call order, ` +
        `${DD.fmt.int(a.total_params)} parameters (${kb >= 1024 ? `${(kb / 1024).toFixed(1)} MB` : `${Math.round(kb)} KB`}` +
        `${frozen ? `, ${DD.fmt.int(frozen)} frozen` : ""}), input ${shape(a.input)}`}),
      el("table", {class: "grid compact layers-table"},
        el("thead", {}, el("tr", {}, ["#", "Layer", "Type", "Output", "Parameters", "Share", "Settings"]
          .map((h) => el("th", {text: h})))), body),
      a.other_params ? DD.note(`${DD.fmt.int(a.other_params)} parameters sit outside these layers (used in the ` +
        "model's own forward).", "muted small") : null));
  }

  // the near misses: top-2 accuracy (deepdive.analysis.ranking), where the analysis has it
  function topTwo(s) {
    const t = ((s.ranking || {}).top_k || []).find((x) => x.k === 2);
    return t ? ` · top-2 ${DD.fmt.pct(t.accuracy, 2)}` : "";
  }

  // What a run's training logged, as the Overview shows it and the run page of a run not (yet) analysed: the curves
  // with the early-stopping hint, the per-step charts, every other metric, the weights and gradients. ctx.b needs
  // run (with its config), epochs, steps, histograms and summary (an analysis's; {} without one). Returns
  // {sections, draw(Plotly)}.
  DD.trainingSections = function (ctx) {
    const lossBox = el("div", {class: "chart", attrs: {"data-testid": "loss-chart"}});
    const accBox = el("div", {class: "chart", attrs: {"data-testid": "acc-chart"}});
    const es = DD.earlyStop(ctx.b.summary);
    const sections = [DD.section("Training curves",
      el("div", {class: "insight" + (es && es.epochs_saved ? " hint" : ""), attrs: {"data-testid": "insight"}},
         el("span", {class: "insight-icon", text: "i"}), el("span", {text: insightText(es)})),
      el("div", {class: "two-col"}, lossBox, accBox),
      // deepdive's own runs: say what the two lines measure (runs logged through the API define their own)
      (ctx.b.run.config || {}).preset ? el("p", {class: "note muted", attrs: {"data-testid": "curves-note"},
        text: "Train: mean over each epoch's augmented training batches, measured while they trained. " +
              "Validation: the held-out images, unaugmented, after the epoch. Both losses are cross-entropy " +
              "against the true labels (runs trained before 2026-11-30 logged the label-smoothed objective as " +
              "their train loss instead, which stays above ~0.5)." + prunedNote(ctx.b.run.config)})
        : null)];
    const parts = [stepCharts(ctx), otherMetrics(ctx), weightsSection(ctx)].filter(Boolean);
    sections.push(...parts.map((part) => part.section));
    return {sections, draw: (Plotly) => Promise.all([curves(Plotly, ctx, lossBox, accBox),
                                                      ...parts.map((part) => part.draw(Plotly))])};
  };

  DD.views.overview = {
    title: "Overview", icon: "◧",
    render(root, ctx) {
      if (ctx.b.run.notes) {      // what a person wrote about the run (deepdive edit, the runs page)
        root.appendChild(el("div", {class: "panel run-notes-panel", attrs: {"data-testid": "overview-notes"}},
          el("span", {class: "tool-label", text: "Notes"}), el("span", {class: "pre-line", text: ctx.b.run.notes})));
      }
      root.appendChild(cards(ctx));
      const notes = ctx.b.summary.notes || [];
      if (notes.length) root.appendChild(el("div", {class: "panel notes"}, notes.map((n) => DD.note(String(n), "muted"))));
      const training = DD.trainingSections(ctx);
      DD.append(root, training.sections);
      const tax = (ctx.b.summary.taxonomy || {}).total || {};
      root.appendChild(el("div", {class: "two-col"},
        DD.section("Most frequent confusions", topConfusions(ctx)),
        DD.section("Why the errors happen", el("div", {class: "cards small"},
          Object.entries(tax).map(([cat, count]) => DD.card(cat, DD.fmt.int(count), DD.fmt.pct(count / Math.max(1, ctx.b.summary.error_count), 0) + " of errors"))),
          neighbourNote(ctx),
          el("div", {class: "btn-row"},
            el("a", {class: "btn", href: DD.viewHref(ctx, "issues"), text: "label issues and error taxonomy →"}),
            ctx.b.summary.confidence ? el("a", {class: "btn", href: DD.viewHref(ctx, "confidence"),
              attrs: {"data-testid": "to-confidence"}, text: "which images to check first →"}) : null))));
      DD.append(root, [slicesSection(ctx), robustnessSection(ctx), influenceSection(ctx), atypicalSection(ctx),
                       duplicatesSection(ctx), tagsSection(ctx), layersSection(ctx)]);
      // First meaningful paint: the cards and the insight. The charts follow once plotly.js is in.
      DD.markPainted("dd-overview-painted");
      DD.afterPaint(() => DD.plotly().then(training.draw).then(() => DD.markPainted("dd-charts-painted"))
        .catch((err) => training.sections[0].appendChild(DD.note(err.message, "error"))));
    },
  };
})(window.DD);
