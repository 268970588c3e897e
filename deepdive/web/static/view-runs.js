// The workspace's runs (served mode's home page): the table, and the ticked runs' training curves overlaid.
"use strict";
(function (DD) {
  const el = DD.el;
  const COMPARE_FIRST = 5;      // the newest runs start ticked, so the page opens on a comparison
  const POLL_MS = 5000;         // how often the page refreshes while a run is training
  DD.runsGroupBy = "none";      // how the compared runs are grouped (DD.GROUP_BY), kept across redraws

  // Validation accuracy and loss per epoch of every ticked run, one colour per run (train loss dotted).
  async function drawComparison(source, runs, ticked, box, live) {
    const chosen = runs.filter((r) => ticked.has(r.id));
    const token = (box.dataset.token = String(Number(box.dataset.token || 0) + 1));
    if (!chosen.length) {
      DD.clear(box).appendChild(DD.note("Tick runs in the table to overlay their training curves.", "muted"));
      return;
    }
    let epochs, steps;
    try {
      const fresh = chosen.map((r) => live.delete(r.id));     // still training: fetch anew
      [epochs, steps] = await Promise.all([Promise.all(chosen.map((r, i) => source.epochs(r.id, fresh[i]))),
                                           Promise.all(chosen.map((r, i) => source.steps(r.id, fresh[i])))]);
    } catch (err) {
      if (box.dataset.token === token) DD.clear(box).appendChild(DD.note("Could not load the curves: " + err.message, "error"));
      return;
    }
    const Plotly = await DD.plotly();
    if (box.dataset.token !== token || !box.isConnected) return;   // a newer tick redrew it meanwhile
    const acc = [], loss = [], empty = [];
    // Grouped (W&B's grouping): one colour per group, its mean drawn over the range of its runs.
    const groups = DD.runsGroupBy !== "none" ? DD.groupRuns(chosen, DD.runsGroupBy).map((g, k) => ({...g,
      color: DD.classColor(k), at: g.runs.map((r) => chosen.indexOf(r)),
      label: `${g.key} · ${g.runs.length} run${g.runs.length === 1 ? "" : "s"}`})) : null;
    chosen.forEach((r, i) => { if (!epochs[i].length) empty.push(r.name); });
    if (groups) {
      for (const g of groups) {
        const series = (key) => g.at.filter((i) => epochs[i].length).map((i) => {
          const s = DD.epochSeries(epochs[i]);
          return {x: s.x, y: s.series(key)};
        });
        acc.push(...DD.bandTraces(DD.groupBand(series("val_acc")), g.label, g.color));
        loss.push(...DD.bandTraces(DD.groupBand(series("val_loss")), g.label, g.color),
                  {...DD.bandTraces(DD.groupBand(series("train_loss")), g.label + " (train)", g.color, "dot", false)[0],
                   showlegend: false});
      }
    }
    chosen.forEach((r, i) => {
      if (groups || !epochs[i].length) return;
      const s = DD.epochSeries(epochs[i]);
      const color = DD.classColor(runs.indexOf(r));      // the colour of the run's tick box
      const name = `${r.name} · ${r.id.slice(-6)}`;
      const line = (key, dash, show, suffix) => ({x: s.x, y: s.series(key), name: name + suffix, legendgroup: r.id,
        showlegend: show, mode: "lines+markers", line: {color, width: 2, dash}, marker: {size: 4}, connectgaps: false});
      acc.push(line("val_acc", undefined, true, ""));
      loss.push(line("val_loss", undefined, true, ""), line("train_loss", "dot", false, " (train)"));
    });
    // The charts stay in place across redraws (Plotly.react updates them), so a live refresh does not flicker.
    let accBox = box.querySelector('[data-testid="compare-acc"]'), lossBox = box.querySelector('[data-testid="compare-loss"]');
    let anyBox = box.querySelector('[data-testid="compare-any"]'), pick = box.querySelector('[data-testid="compare-metric"]');
    let smoothing = box.querySelector(".compare-smoothing");
    if (!accBox) {
      accBox = el("div", {class: "chart", attrs: {"data-testid": "compare-acc"}});
      lossBox = el("div", {class: "chart", attrs: {"data-testid": "compare-loss"}});
      anyBox = el("div", {class: "chart", attrs: {"data-testid": "compare-any"}});
      pick = el("select", {class: "input", attrs: {"aria-label": "metric", "data-testid": "compare-metric"}});
      smoothing = el("span", {class: "compare-smoothing"}, DD.smoothingSlider(() => pick.onchange()),
                     DD.stepAxisSwitch(DD.STEP_AXES, () => pick.onchange()));
      DD.clear(box).append(el("div", {class: "two-col"}, accBox, lossBox), DD.note("", "muted small"),
        el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "any metric"}), pick, smoothing,
          el("span", {class: "muted small", text: "every metric the ticked runs logged per epoch, and per step: the " +
            "curves' columns, the recipe's system readings, your own run.log(name=...) and run.log_step(...)"})),
        anyBox);
    }
    // No ticked run logged an epoch (models logged with log_evaluation alone): no empty axes; the note says so.
    accBox.parentElement.hidden = empty.length === chosen.length;
    // Any metric the ticked runs logged, overlaid: the choice survives redraws while the runs still log it. Those
    // logged per step are "step:<name>", drawn smoothed against the step.
    const perStep = DD.stepMetrics(Object.assign({}, ...steps)).map((k) => "step:" + k);
    const names = DD.epochMetrics(epochs.flat()).concat(perStep);
    const keep = names.includes(pick.value) ? pick.value : names.find((k) => !DD.EPOCH_FIELDS.includes(k)) || names[0];
    DD.clear(pick).append(...names.map((k) => el("option", {value: k, selected: k === keep,
      text: k.startsWith("step:") ? `${k.slice(5)} · per step` : k})));
    pick.value = keep;
    pick.parentElement.hidden = anyBox.hidden = !names.length;
    pick.onchange = drawAny;      // this redraw's runs and epochs
    function drawAny() {
      const key = pick.value, stepKey = key && key.startsWith("step:") ? key.slice(5) : null;
      smoothing.hidden = !stepKey;
      if (!key) return Plotly.purge(anyBox);
      // a run's curve of this metric: {x, y}, smoothed if per step; null where the run logged none
      const curve = (i) => {
        if (stepKey) {
          if (!steps[i][stepKey]) return null;
          const s = DD.stepSeries(steps[i], stepKey, DD.stepAxis, DD.epochMembers(epochs[i]));
          return s ? {x: s.x, y: DD.smooth(s.y, DD.noisy(stepKey) ? DD.stepSmoothing : 0)} : null;
        }
        const s = DD.epochSeries(epochs[i]);
        return {x: s.x, y: s.series(key)};
      };
      const traces = groups ? groups.flatMap((g) => {
        const series = g.at.map(curve).filter((c) => c && c.y.some((v) => v !== null));
        if (!series.length) return [];
        // against training time no two runs share an x: each is resampled onto all of their times first
        const timed = stepKey && DD.stepAxis === "train_seconds";
        return DD.bandTraces(DD.groupBand(timed ? DD.resample(series) : series), g.label, g.color);
      }) : chosen.map((r, i) => {
        const line = {color: DD.classColor(runs.indexOf(r)), width: 2}, name = `${r.name} · ${r.id.slice(-6)}`;
        if (stepKey) {       // against the epoch or the time, a run that logged none per step has no line
          const s = steps[i][stepKey] ? DD.stepSeries(steps[i], stepKey, DD.stepAxis, DD.epochMembers(epochs[i]))
            : null;
          return s ? {x: s.x, y: DD.smooth(s.y, DD.noisy(stepKey) ? DD.stepSmoothing : 0), name, mode: "lines", line}
            : {x: [], y: []};
        }
        const s = DD.epochSeries(epochs[i]);
        return {x: s.x, y: s.series(key), name, mode: "lines+markers", line, marker: {size: 4}, connectgaps: false};
      }).filter((t) => t.y.some((v) => v !== null));
      const chart = DD.metricChart(stepKey || key, traces.flatMap((t) => t.y), Boolean(stepKey));
      return Plotly.react(anyBox, traces, {...layout(chart.title, chart.yaxis,
        stepKey ? {title: {text: DD.stepAxisTitle(DD.stepAxis)}} : null), showlegend: true}, DD.plotConfig);
    }
    box.querySelector(".note").textContent = empty.length === chosen.length ?
      `No epochs logged yet for: ${empty.join(", ")}.` : "Solid: validation; dotted: train (mean over each epoch's augmented " +
      "batches). An ensemble's members follow one another along the epoch axis." + (groups ? " Grouped: each " +
      "line is the mean of the group's runs at each epoch or step, shaded between the least and the greatest of " +
      "them (against training time, each run interpolated onto the times of the others)." : "") +
      (empty.length ? ` No epochs logged yet for: ${empty.join(", ")}.` : "");
    const longest = Math.max(...epochs.map((ep) => ep.length));
    const layout = (title, yaxis, xaxis) => DD.plotLayout({title: {text: title, font: {size: 13}, x: 0.02,
      xanchor: "left"}, xaxis: xaxis || {title: {text: "epoch"}, ...(longest <= 30 ? {dtick: 1} : {})},
      yaxis: {automargin: true, ...yaxis},
      hovermode: "closest", legend: {orientation: "h", y: -0.25, x: 0}});
    const losses = epochs.flat().flatMap((e) => [e.train_loss, e.val_loss]);
    await Promise.all([
      Plotly.react(accBox, acc, layout("Validation accuracy per epoch", {title: {text: "accuracy"}, tickformat: ".2%"}),
                     DD.plotConfig),
      Plotly.react(lossBox, loss, layout("Loss per epoch", {title: {text: "cross-entropy"}, type: "log", ...DD.logTicks(losses)}),
                     DD.plotConfig),
      drawAny(),
    ]);
    DD.mark("dd-compare-painted");
  }

  // The ticked runs' groups in numbers, as the bench reports seeds: runs, test accuracy (mean, median, range,
  // standard deviation over the runs that have one) and the median training time.
  function groupTable(runs, ticked, box) {
    const chosen = runs.filter((r) => ticked.has(r.id));
    if (DD.runsGroupBy === "none" || !chosen.length) { DD.clear(box); return; }
    const stats = (values) => {
      const v = values.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
      if (!v.length) return null;
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      const mid = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
      const sd = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : null;
      return {n: v.length, mean, median: mid, lo: v[0], hi: v[v.length - 1], sd};
    };
    const pct = (v) => DD.fmt.pct(v, 2);
    const rows = DD.groupRuns(chosen, DD.runsGroupBy).map((g, k) => {
      const acc = stats(g.runs.map((r) => r.test_accuracy)), time = stats(g.runs.map((r) => r.train_seconds));
      return el("tr", {dataset: {group: g.key}},
        el("td", {}, el("span", {class: "swatch", style: {background: DD.classColor(k)}}), g.key),
        el("td", {class: "num", text: DD.fmt.int(g.runs.length)}),
        el("td", {class: "num", text: acc ? pct(acc.mean) : "–"}),
        el("td", {class: "num", text: acc ? pct(acc.median) : "–"}),
        el("td", {class: "num", text: acc ? (acc.n > 1 ? `${pct(acc.lo)}–${pct(acc.hi)}` : pct(acc.lo)) : "–"}),
        el("td", {class: "num", text: acc && acc.sd !== null ? `${DD.fmt.num(acc.sd * 100, 3)} pp` : "–"}),
        el("td", {class: "num", text: time ? DD.fmt.secs(time.median) : "–"}));
    });
    DD.clear(box).append(el("table", {class: "grid", attrs: {"data-testid": "group-table"}},
      el("thead", {}, el("tr", {}, ["Group", "Runs", "Test accuracy: mean", "median", "min–max", "std",
                                    "Train time: median"].map((h) => el("th", {text: h})))),
      el("tbody", {}, rows)));
  }

  // Two ticked runs: a link to their mistakes side by side (the Compare view), the older as A, the newer as B.
  function pairLink(runs, ticked, box) {
    DD.clear(box);
    const pair = runs.filter((r) => ticked.has(r.id));
    const say = (text) => box.appendChild(el("span", {class: "muted small", text}));
    if (pair.length !== 2) { say("Tick two analysed runs to compare their mistakes image by image."); return; }
    const [b, a] = pair;   // newest first
    const split = a.splits.includes("test") && b.splits.includes("test") ? "test" :
      a.splits.find((s) => b.splits.includes(s));
    if (a.dataset !== b.dataset) {
      say(`${a.name} and ${b.name} are on different datasets: no mistakes to compare.`);
      return;
    }
    if (!split) { say("Analyse both runs (deepdive analyze) to compare their mistakes image by image."); return; }
    box.appendChild(el("a", {class: "btn small", attrs: {"data-testid": "compare-pair-link"},
      text: `Compare their mistakes: ${a.name} → ${b.name} (${split})`,
      href: `#/r/${encodeURIComponent(a.id)}/${encodeURIComponent(split)}/compare/${encodeURIComponent(b.id)}`}));
  }

  // Test accuracy against one setting of the runs' configurations (W&B's parallel view, one axis at a time): the
  // settings offered are those that differ between runs with an accuracy; numbers on a linear axis, the rest as
  // categories. Each point has its run's curve colour.
  function paramsPanel(runs, box) {
    const scored = runs.map((r, i) => [r, i])
      .filter(([r]) => r.test_accuracy !== null && r.test_accuracy !== undefined);
    const keys = [...new Set(scored.flatMap(([r]) => Object.keys(r.params || {})))].filter((k) =>
      new Set(scored.map(([r]) => JSON.stringify((r.params || {})[k]))).size > 1).sort();
    if (scored.length < 2 || !keys.length) {
      DD.clear(box).append(DD.note(scored.length < 2 ? "Two or more runs with a test accuracy are needed to set " +
        "their settings against it." : "The runs with a test accuracy share every setting.", "muted"));
      return;
    }
    const prefer = ["resolved.lr", "preset", "resolved.epochs", "seed"].find((k) => keys.includes(k)) || keys[0];
    const chart = el("div", {class: "chart", attrs: {"data-testid": "params-chart"}});
    const draw = async (key) => {
      const have = scored.filter(([r]) => r.params && r.params[key] !== undefined);
      const numeric = have.every(([r]) => typeof r.params[key] === "number");
      const Plotly = await DD.plotly();
      await Plotly.react(chart, [{x: have.map(([r]) => numeric ? r.params[key] : String(r.params[key])),
        y: have.map(([r]) => r.test_accuracy), text: have.map(([r]) => `${r.name} · ${r.id.slice(-6)}`),
        mode: "markers", type: "scatter", hovertemplate: "%{text}<br>%{x}: %{y:.2%}<extra></extra>",
        marker: {size: 10, color: have.map(([, i]) => DD.classColor(i))}}],
      DD.plotLayout({xaxis: {title: {text: key}, type: numeric ? "linear" : "category", automargin: true},
        yaxis: {title: {text: "test accuracy"}, tickformat: ".2%", automargin: true}, hovermode: "closest",
        showlegend: false}), DD.plotConfig);
      chart.dataset.key = key;
    };
    const pick = el("select", {class: "input", attrs: {"aria-label": "setting", "data-testid": "params-key"},
      on: {change: (e) => draw(e.target.value)}},
      keys.map((k) => el("option", {value: k, text: k, selected: k === prefer})));
    DD.clear(box).append(el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "setting"}), pick,
      el("span", {class: "muted small", text: `${keys.length} setting${keys.length === 1 ? "" : "s"} differ ` +
        `between the ${scored.length} runs with a test accuracy`})), chart);
    draw(prefer);
  }

  // Delete one run, once the person confirms; the page then lists the runs left.
  async function deleteRun(source, run, button) {
    const what = `Delete run ${run.name} (${run.id})? Its folder, predictions and analyses go for good; ` +
      "reviews of the dataset's images stay with the images.";
    if (!window.confirm(what)) return;
    button.disabled = true;
    try {
      await source.deleteRun(run.id);
    } catch (err) {
      button.disabled = false;
      button.replaceWith(DD.note(`Could not delete: ${err.message}`, "error"));
      return;
    }
    DD.rerender();
  }

  // The name cell: the name, the start of the notes, and (served) a pencil that opens a form for both.
  function nameCell(source, run) {
    const short = (text) => (text.length > 90 ? text.slice(0, 89) + "…" : text);
    const notes = run.notes ? el("div", {class: "muted small run-notes", title: run.notes,
      attrs: {"data-testid": "run-notes"}, text: short(run.notes)}) : null;
    const cell = el("td", {}, el("a", {class: "strong", text: run.name, href: `#/run/${encodeURIComponent(run.id)}`,
                                       title: "its training: curves, per-step charts, weights and gradients",
                                       attrs: {"data-testid": "run-link"}}));
    if (source.editRun) {
      cell.append(el("button", {class: "icon-btn small-icon", text: "✎", title: "rename, or write notes",
        attrs: {"aria-label": `edit ${run.name}`, "data-testid": "edit-run"},
        on: {click: () => editForm(source, run, cell)}}));
    }
    DD.append(cell, [notes]);
    return cell;
  }

  function editForm(source, run, cell) {
    const name = el("input", {class: "input", value: run.name,
      attrs: {"aria-label": "run name", "data-testid": "edit-name"}});
    const notes = el("textarea", {class: "input run-notes-input", rows: 3,
      placeholder: "notes: what you tried, what you saw",
      attrs: {"aria-label": "run notes", "data-testid": "edit-notes"}});
    notes.value = run.notes || "";
    const status = el("span", {class: "small"});
    const save = async () => {
      try {
        await source.editRun(run.id, {name: name.value, notes: notes.value});
      } catch (err) {
        status.className = "small bad";
        status.textContent = err.message;
        return;
      }
      DD.rerender();
    };
    DD.clear(cell).append(el("div", {class: "run-edit"}, name, notes, el("div", {},
      el("button", {class: "btn small", text: "Save", attrs: {"data-testid": "edit-save"}, on: {click: save}}),
      el("button", {class: "btn small", text: "Cancel", on: {click: () => DD.rerender()}}), status)));
    name.focus();
  }

  // One run's training, whether analysed or not (W&B's run page): its record, what it logged per epoch and per
  // step, its weights and gradients, and where its deep dive is. While it trains the page follows it, redrawn
  // when an epoch lands or its status changes.
  DD.views.run = {
    title: "Run",
    render: async function (root, source, runId) {
      const title = root.appendChild(el("h1", {class: "view-title", text: "Run"}));
      // the record and epochs tell whether anything changed; the steps and histograms are fetched for a redraw only
      const head = (fresh) => Promise.all([source.run(runId), source.epochs(runId, fresh)]);
      const rest = (fresh) => Promise.all([source.steps(runId, fresh), source.histograms(runId, fresh)]);
      const load = (fresh) => Promise.all([head(fresh), rest(fresh)]).then(([a, b]) => [...a, ...b]);
      let got;
      try {
        got = await load(false);
      } catch (err) {
        if (title.isConnected) root.appendChild(DD.note(`Could not load run ${runId}: ${err.message}`, "error"));
        return;
      }
      if (!title.isConnected) return;
      const body = root.appendChild(el("div"));
      const draw = async ([run, epochs, steps, histograms]) => {
        const ctx = {b: {run, epochs, steps, histograms, summary: {insight: run.insight}, split: null}, state: {}};
        document.title = `${run.name} · run · deepdive`;
        title.textContent = run.name;
        const facts = el("div", {class: "panel toolbar run-facts", attrs: {"data-testid": "run-facts"}},
          el("span", {class: "status " + run.status, text: run.status}),
          el("span", {class: "mono small", text: run.id}),
          el("span", {class: "small", text: run.recipe || "logged through the Python API"}),
          el("span", {class: "small", text: `${DD.fmt.int(epochs.length)} epoch${epochs.length === 1 ? "" : "s"}` +
            (run.test_accuracy !== null && run.test_accuracy !== undefined ?
              ` · test accuracy ${DD.fmt.pct(run.test_accuracy, 2)}` : "") +
            (run.train_seconds ? ` · ${DD.fmt.secs(run.train_seconds)} of training` : "")}),
          ...(run.splits.length ? run.splits.map((s) => el("a", {class: "btn small", text: `deep dive: ${s}`,
            href: `#/r/${encodeURIComponent(run.id)}/${encodeURIComponent(s)}/overview`})) :
            [el("span", {class: "muted small", attrs: {"data-testid": "run-next"}, text: run.status === "running" ?
              `training… this page follows it` : run.resumable ? `unfinished: deepdive resume ${run.id}` :
              run.status === "finished" ? `not analysed: deepdive analyze ${run.id}` : "no model to analyse"})]));
        const training = DD.trainingSections(ctx);
        DD.clear(body).append(facts, ...(run.notes ? [el("div", {class: "panel run-notes-panel"},
          el("span", {class: "tool-label", text: "Notes"}), el("span", {class: "pre-line", text: run.notes}))] : []),
          ...training.sections);
        await training.draw(await DD.plotly());
        DD.mark("dd-run-painted");
      };
      await draw(got);
      // while it trains: poll, and redraw when an epoch lands or the record changes (it finishes, fails)
      const poll = () => setTimeout(async () => {
        if (!body.isConnected) return;
        let next;
        try {
          next = await head(true);
          if (next[1].length !== got[1].length || JSON.stringify(next[0]) !== JSON.stringify(got[0])) {
            next = [...next, ...await rest(true)];
          } else next = null;
        } catch (err) { poll(); return; }
        if (!body.isConnected) return;
        if (next) {
          got = next;
          await draw(got);
        }
        if (got[0].status === "running") poll();
      }, POLL_MS);
      if (got[0].status === "running") poll();
    },
  };

  DD.views.runs = {
    title: "Runs",
    render: async function (root, source) {
      const title = root.appendChild(el("h1", {class: "view-title", text: "Runs"}));
      let runs;
      try {
        runs = await source.listRuns();
      } catch (err) {
        if (title.isConnected) root.appendChild(DD.note("Could not list the runs: " + err.message, "error"));
        return;
      }
      if (!title.isConnected) return;   // another route replaced this page while the list was loading
      if (!runs.length) {
        root.appendChild(DD.note("No runs in this workspace yet. Train one with `deepdive train`, then " +
                                 "`deepdive analyze latest`."));
        return;
      }
      const ticked = new Set(runs.slice(0, COMPARE_FIRST).map((r) => r.id));
      const live = new Set();          // runs whose epochs to fetch afresh on the next redraw (still training)
      const compareBox = el("div", {attrs: {"data-testid": "compare"}});
      const pairBox = el("div", {class: "toolbar", attrs: {"data-testid": "compare-pair"}});
      const groupBox = el("div", {attrs: {"data-testid": "groups"}});
      const groupPick = el("select", {class: "input", attrs: {"aria-label": "group the runs by",
                                                                "data-testid": "group-by"},
        on: {change: (e) => { DD.runsGroupBy = e.target.value; redraw(); }}},
        Object.entries(DD.GROUP_BY).map(([k, text]) => el("option", {value: k, text, selected: k === DD.runsGroupBy})));
      const redraw = () => {
        pairLink(runs, ticked, pairBox);
        groupTable(runs, ticked, groupBox);
        return drawComparison(source, runs, ticked, compareBox, live)
          .catch((err) => DD.clear(compareBox).appendChild(DD.note(err.message, "error")));
      };
      const cells = (r, i) => [
        el("td", {}, el("input", {type: "checkbox", checked: ticked.has(r.id),
          attrs: {"aria-label": `compare ${r.name}`, "data-testid": "compare-tick"},
          style: {accentColor: DD.classColor(i)},
          on: {change: (e) => { if (e.target.checked) ticked.add(r.id); else ticked.delete(r.id); redraw(); }}})),
        nameCell(source, r),
        el("td", {class: "mono", text: r.id}),
        el("td", {text: r.dataset}),
        el("td", {class: "small", text: r.recipe || "–"}),
        el("td", {}, el("span", {class: "status " + r.status, text: r.status})),
        el("td", {class: "num", text: DD.fmt.pct(r.test_accuracy, 2)}),
        el("td", {class: "num", text: DD.fmt.int(r.num_params)}),
        el("td", {class: "num", text: r.train_seconds ? DD.fmt.secs(r.train_seconds) : "–"}),   // 0: none logged
        el("td", {text: DD.fmt.date(r.created_at)}),
        el("td", {}, r.splits.length ? r.splits.map((s) => el("a", {
          class: "btn small", text: `open ${s}`,
          href: `#/r/${encodeURIComponent(r.id)}/${encodeURIComponent(s)}/overview`,
        })) : el("span", {class: "muted small", text: r.status === "running" ? "training…" :
          r.resumable ? `unfinished: deepdive resume ${r.id}` :
          r.status === "finished" ? `not analysed: deepdive analyze ${r.id}` : "no model to analyse"})),
        el("td", {}, r.status === "running" || !source.deleteRun ? null : el("button", {class: "btn small danger",
          text: "delete",
          title: "delete this run: its folder, predictions and analyses (asks first)",
          attrs: {"aria-label": `delete ${r.name}`, "data-testid": "delete-run"},
          on: {click: (e) => deleteRun(source, r, e.target)}}))];
      // Sortable columns (header, run field, first direction); the page opens newest first, as listed.
      const columns = [["", null], ["Name", "name", 1], ["Run id", "id", 1], ["Dataset", "dataset", 1],
        ["Recipe", "recipe", 1], ["Status", "status", 1], ["Test accuracy", "test_accuracy", -1],
        ["Parameters", "num_params", -1], ["Train time", "train_seconds", 1], ["Created", "created_at", -1],
        ["Deep dive", null], ["", null]];
      const sort = {key: "created_at", dir: -1};
      const filter = el("input", {type: "search", class: "input runs-filter",
        placeholder: "filter: name, id, dataset, recipe, status, notes",
        attrs: {"aria-label": "filter the runs", "data-testid": "runs-filter"}, on: {input: () => drawRows()}});
      const shown = el("span", {class: "muted small", attrs: {"data-testid": "runs-shown"}});
      const heads = columns.map(([label, key, first]) => el("th", {
        text: label, class: key ? "sortable" : "",
        attrs: key ? {"data-sort": key, tabindex: "0", title: `Click to sort by ${label.toLowerCase()}`} : {},
        on: key ? {click: () => resort(key, first), keydown: (e) => { if (e.key === "Enter") resort(key, first); }}
          : {},
      }));
      const tbody = el("tbody");
      // Rows keep the colour of their place in the server's list (the curves' colours), whatever the order shown.
      function drawRows() {
        const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
        const hay = (r) => [r.name, r.id, r.dataset, r.recipe || "", r.status, r.notes || ""].join(" ")
          .toLowerCase();
        const value = (r) => (r[sort.key] === null || r[sort.key] === undefined ? null : r[sort.key]);
        const order = runs.map((r, i) => i).filter((i) => words.every((w) => hay(runs[i]).includes(w)))
          .sort((a, b) => {
            const x = value(runs[a]), y = value(runs[b]);
            if (x === null || y === null) return (x === null) - (y === null) || a - b;
            return sort.dir * (typeof x === "string" ? x.localeCompare(y) : x - y) || a - b;
          });
        heads.forEach((th, i) => {
          const key = columns[i][1];
          if (key) th.setAttribute("aria-sort", key !== sort.key ? "none" : sort.dir > 0 ? "ascending" : "descending");
        });
        DD.clear(tbody).append(...order.map((i) => el("tr", {dataset: {run: runs[i].id}}, cells(runs[i], i))));
        shown.textContent = order.length === runs.length ? `${runs.length} run${runs.length === 1 ? "" : "s"}` :
          `${order.length} of ${runs.length} runs`;
      }
      function resort(key, first) {
        sort.dir = key === sort.key ? -sort.dir : first;
        sort.key = key;
        drawRows();
      }
      drawRows();
      const table = el("table", {class: "grid runs-table", attrs: {"data-testid": "runs-table"}},
        el("thead", {}, el("tr", {}, heads)), tbody);
      root.appendChild(el("div", {class: "panel"}, el("div", {class: "toolbar runs-tools"}, filter, shown), table));
      root.appendChild(DD.section("Compare training curves", pairBox,
        el("div", {class: "toolbar"}, el("span", {class: "tool-label", text: "group"}), groupPick,
          el("span", {class: "muted small", text: "the ticked runs, as one curve per group: its mean over the range " +
                                                    "of its runs"})), groupBox, compareBox));
      const paramsBox = el("div", {attrs: {"data-testid": "params"}});
      root.appendChild(DD.section("Settings against test accuracy", paramsBox));
      paramsPanel(runs, paramsBox);
      redraw();

      // While a run trains, its row and curves follow it, like a live dashboard: poll the list, refetch the
      // epochs of the runs that were training, and redraw. A run that appears or disappears re-renders the page.
      const poll = () => setTimeout(async () => {
        if (!table.isConnected) return;
        let latest;
        try { latest = await source.listRuns(); } catch (err) { poll(); return; }
        if (!table.isConnected) return;
        if (latest.map((r) => r.id).join() !== runs.map((r) => r.id).join()) { DD.rerender(); return; }
        let changed = false;
        runs.forEach((r, i) => {
          if (r.status !== "running") return;
          live.add(r.id);
          changed = changed || JSON.stringify(r) !== JSON.stringify(latest[i]);
          runs[i] = latest[i];
        });
        // the rows only when a run's record changed (it finished, say), and not under a person's hands: an open
        // form, a hover, a selection stay; the curves follow every poll
        if (changed && !tbody.querySelector(".run-edit")) drawRows();
        await redraw();
        if (latest.some((r) => r.status === "running")) poll();
      }, POLL_MS);
      if (runs.some((r) => r.status === "running")) poll();
    },
  };
})(window.DD);
