// Try an image (served only): draw a picture, upload one, or edit an analysed image (its detail panel links here),
// and watch the run's model answer while the strokes go on: all class probabilities (against the image it started
// from), saliency toward the prediction and toward the class it should be, the channels behind the answer, the
// picture under each of the Advice view's probes, every layer's feature maps and, asked for, its nearest training
// images. The server turns the canvas into the model's input (deepdive.web.maps.RunMaps.prepared_picture) and
// runs the model (deepdive.analysis.probe, deepdive.analysis.channels).
"use strict";
(function (DD) {
  const el = DD.el;
  const CANVAS_PX = 280;   // the canvas's longer side, ~10x an MNIST image: strokes land between its pixels
  const UNDO_DEPTH = 30;

  DD.views.try = {
    title: "Try an image", icon: "✎", servedOnly: true,
    render(root, ctx) {
      const box = el("div", {class: "try", attrs: {"data-testid": "try"}});
      root.appendChild(box);
      box.appendChild(DD.note("Asking what the model takes…", "muted"));
      ctx.source.probeInfo(ctx.b).then((info) => {
        DD.clear(box);
        if (!info.available) box.appendChild(DD.note(`Not for this run: ${info.reason}.`, "error"));
        else build(box, ctx, info);
      }).catch((err) => DD.clear(box).appendChild(DD.note(`Could not ask the model: ${err.message}`, "error")));
    },
  };

  function build(box, ctx, info) {
    const st = ctx.state;
    const zoom = Math.max(1, Math.round(CANVAS_PX / Math.max(info.height, info.width)));
    const canvas = el("canvas", {class: "try-canvas", width: info.width * zoom, height: info.height * zoom,
                                 attrs: {"data-testid": "try-canvas", "aria-label": "drawing area"}});
    const g = canvas.getContext("2d", {willReadFrequently: true});
    const alive = () => document.body.contains(canvas);   // false once another view replaced this one
    const undo = [];
    let erasing = false, stroke = null;
    if (st.tryBrush === undefined) st.tryBrush = 2.5;   // in the model's pixels: MNIST strokes are ~2-3 wide
    if (st.tryDigit === undefined) st.tryDigit = info.digit && info.digit_default;
    if (st.tryExpected === undefined) st.tryExpected = null;

    // ---- the picture ------------------------------------------------------------------------------------------
    const blank = () => { g.fillStyle = "#000"; g.fillRect(0, 0, canvas.width, canvas.height); };
    const remember = () => { st.tryPicture = canvas.toDataURL("image/png"); };
    const snapshot = () => {
      undo.push(g.getImageData(0, 0, canvas.width, canvas.height));
      if (undo.length > UNDO_DEPTH) undo.shift();
    };
    const isBlank = () => !g.getImageData(0, 0, canvas.width, canvas.height).data.some((v, i) => i % 4 !== 3 && v > 8);

    // An analysed image, cut from its sprite sheet at exact pixel multiples (the server reads back its pixels).
    function loadRow(row) {
      const im = ctx.b.images;
      const sheet = Math.floor(row / im.per_sheet), k = row % im.per_sheet;
      const img = new Image();
      img.onload = () => {
        g.imageSmoothingEnabled = false;
        g.drawImage(img, (k % im.cols) * im.width, Math.floor(k / im.cols) * im.height, im.width, im.height,
                    0, 0, canvas.width, canvas.height);
        remember();
        changed();
      };
      img.onerror = () => showError(new Error(`could not load the picture of image #${ctx.col.idx[row]}`));
      img.src = ctx.b.images.sheets[sheet];
      st.tryFrom = {row, probs: ctx.names.map((_, c) => ctx.probs[c][row])};
      st.tryExpected = ctx.col.true[row];
      st.tryDigit = false;   // already an image of the split, prepared as its images are
      digitBox.checked = false;
      expected.value = String(st.tryExpected);
    }

    function loadFile(file) {
      if (!file || !/^image\//.test(file.type)) { showError(new Error("that is not an image file")); return; }
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = () => {
        snapshot();
        blank();
        const s = Math.min(canvas.width / img.naturalWidth, canvas.height / img.naturalHeight);
        const w = img.naturalWidth * s, h = img.naturalHeight * s;
        g.imageSmoothingEnabled = true;
        g.drawImage(img, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
        URL.revokeObjectURL(url);
        st.tryFrom = null;
        if (info.digit) { st.tryDigit = true; digitBox.checked = true; }   // a photo needs fitting and centring
        remember();
        changed();
      };
      img.onerror = () => { URL.revokeObjectURL(url); showError(new Error(`could not read ${file.name}`)); };
      img.src = url;
    }

    // ---- drawing ----------------------------------------------------------------------------------------------
    const at = (e) => {
      const r = canvas.getBoundingClientRect();
      return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
    };
    const line = (a, b) => {
      g.strokeStyle = g.fillStyle = erasing ? "#000" : "#fff";
      g.lineWidth = st.tryBrush * zoom;
      g.lineCap = g.lineJoin = "round";
      g.beginPath();
      if (a[0] === b[0] && a[1] === b[1]) {   // a tap: a dot (a zero-length line draws nothing in Chromium)
        g.arc(a[0], a[1], g.lineWidth / 2, 0, 2 * Math.PI);
        g.fill();
      } else {
        g.moveTo(a[0], a[1]); g.lineTo(b[0], b[1]); g.stroke();
      }
    };
    canvas.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      snapshot();
      stroke = at(e);
      line(stroke, stroke);
      changed(true);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!stroke) return;
      const p = at(e);
      line(stroke, p);
      stroke = p;
      changed(true);
    });
    // The stroke's last move was sent already: at its end only the nearest training images follow (their search
    // waits for the stroke to end).
    const end = () => {
      if (!stroke) return;
      stroke = null;
      remember();
      if (st.tryNeighbours) neighbours();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("dragover", (e) => e.preventDefault());
    canvas.addEventListener("drop", (e) => { e.preventDefault(); loadFile(e.dataTransfer.files[0]); });

    // ---- tools ------------------------------------------------------------------------------------------------
    const fileInput = el("input", {type: "file", accept: "image/*", hidden: true,
                                   on: {change: () => { loadFile(fileInput.files[0]); fileInput.value = ""; }}});
    const size = el("input", {type: "range", min: 1, max: 6, step: 0.5, value: st.tryBrush,
                              attrs: {"aria-label": "brush width", "data-testid": "try-brush"},
                              on: {input: () => { st.tryBrush = Number(size.value); sizeLabel.textContent = px(); }}});
    const px = () => `${st.tryBrush} px`;
    const sizeLabel = el("span", {class: "muted small", text: px()});
    const digitBox = el("input", {type: "checkbox", checked: st.tryDigit, attrs: {"data-testid": "try-digit"},
                                  on: {change: () => { st.tryDigit = digitBox.checked; changed(); }}});
    const expected = el("select", {class: "input", attrs: {"data-testid": "try-expected", "aria-label": "it should be"},
                                   on: {change: () => {
                                     st.tryExpected = expected.value === "" ? null : Number(expected.value);
                                     changed();
                                   }}},
      el("option", {value: "", text: "—"}),
      ctx.names.map((name, c) => el("option", {value: c, text: name, selected: st.tryExpected === c})));
    const button = (text, testid, onClick, title) => el("button", {class: "btn small", type: "button", text,
      attrs: {"data-testid": testid, title: title || ""}, on: {click: onClick}});
    const origin = el("div", {class: "try-origin", attrs: {"data-testid": "try-origin"}});

    const undoLast = () => {
      if (!undo.length) return;
      g.putImageData(undo.pop(), 0, 0);
      remember();
      changed();
    };
    // Ctrl+Z / Cmd+Z undoes while this view is on screen (not while typing in a field)
    const onKey = (e) => {
      if (!alive()) { document.removeEventListener("keydown", onKey); return; }
      if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === "z" &&
          !/^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName || "")) {
        e.preventDefault();
        undoLast();
      }
    };
    document.addEventListener("keydown", onKey);

    const tools = el("div", {class: "try-tools"},
      el("div", {class: "toolbar"},
        DD.segmented([{value: "draw", label: "Draw"}, {value: "erase", label: "Erase"}], "draw",
                     (v) => { erasing = v === "erase"; }, "try-mode"),
        el("label", {class: "small"}, "width ", size, " ", sizeLabel)),
      el("div", {class: "toolbar"},
        button("Undo", "try-undo", undoLast, "Ctrl+Z"),
        button("Clear", "try-clear", () => { snapshot(); blank(); st.tryFrom = null; remember(); changed(); }),
        button("Invert", "try-invert", () => {
          snapshot();
          const data = g.getImageData(0, 0, canvas.width, canvas.height);
          for (let i = 0; i < data.data.length; i++) if (i % 4 !== 3) data.data[i] = 255 - data.data[i];
          g.putImageData(data, 0, 0);
          remember();
          changed();
        }, "swap light and dark (MNIST and Fashion-MNIST are light on black)"),
        button("Upload…", "try-upload", () => fileInput.click(), "or drop an image file on the canvas"),
        fileInput),
      info.digit ? el("label", {class: "small", attrs: {title: "as MNIST's digits were: the ink fitted into 20×20 " +
                                                              "and its centre of mass put at the centre"}},
        digitBox, " prepare like an MNIST digit (fit into 20×20, centre by mass)") : null,
      el("label", {class: "small"}, "It should be ", expected),
      origin);

    // ---- the answer -------------------------------------------------------------------------------------------
    const seen = el("div", {class: "try-seen"});
    const probsBox = el("div", {attrs: {"data-testid": "try-probs"}});
    const headline = el("div", {class: "try-headline", attrs: {"data-testid": "try-prediction"}});
    const salBox = el("div", {class: "detail-sal"});
    const nbBox = el("div", {attrs: {"data-testid": "try-neighbours"}});
    const infBox = el("div", {attrs: {"data-testid": "try-influence"}});
    const perturbBox = el("div", {attrs: {"data-testid": "try-perturbed"}});
    const robBox = el("div", {attrs: {"data-testid": "try-robustness"}});
    const channelBox = el("div", {attrs: {"data-testid": "try-channels"}});
    const layersBox = el("div", {class: "layers", attrs: {"data-testid": "try-layers"}});
    const status = el("div", {class: "muted small try-status", attrs: {"data-testid": "try-status"}});
    const methods = ctx.b.saliency.methods;

    box.append(el("div", {class: "try-grid"},
      el("section", {class: "panel"}, el("h2", {text: "Picture"}),
        DD.note(info.digit && info.digit_default ? "Draw a digit, drop or upload a picture, or open any image's " +
          "detail and choose “edit this image”: the answers follow every stroke." :
          "Draw, drop or upload a picture, or open any image's detail and choose “edit this image”: the answers " +
          "follow every stroke.", "muted"),
        canvas, tools),
      el("section", {class: "panel"}, el("h2", {text: "The model's answer"}), status,
        el("div", {class: "try-answer"}, seen, el("div", {class: "try-probs"}, headline, probsBox)),
        methods.length ? [el("h3", {text: "Saliency"}), DD.methodSwitcher(ctx, () => changed()), DD.legend(ctx),
                          salBox] : null)));
    box.append(DD.section("Under the augmentation advice's perturbations", perturbBox));
    box.append(DD.section("What fools it", robBox));
    if ((ctx.b.channels || {}).available) box.append(DD.section("Features behind the answer", channelBox));
    box.append(DD.section("Nearest training images", nbBox));
    if (info.influence) box.append(DD.section("Training images behind the answer", infBox));
    box.append(DD.section("Activations", layersBox));

    function showOrigin() {
      DD.clear(origin);
      const f = st.tryFrom;
      if (!f) return;
      const col = ctx.col;
      origin.append(DD.thumb(ctx, f.row, 42),
        el("span", {class: "small", text: `Started from image #${col.idx[f.row]}: ` +
          `true ${ctx.className(col.true[f.row])}, predicted ${ctx.className(col.pred[f.row])} ` +
          `(${DD.fmt.pct(col.confidence[f.row], 1)})`}),
        button("Back to it", "try-reset", () => { snapshot(); loadRow(f.row); }));
    }

    function showError(err) {
      status.textContent = "";
      status.appendChild(DD.note(err.message, "error"));
    }

    // Probabilities of every class; against the analysed image it started from when there is one.
    function showProbs(r) {
      const want = st.tryExpected, p = r.pred, f = st.tryFrom;
      const ok = want === null ? "" : p === want ? " ok" : " bad";
      DD.append(DD.clear(headline), [el("span", {class: "strong" + ok, text: `${ctx.className(p)}`}),
        el("span", {text: ` ${DD.fmt.pct(r.probs[p], 2)}`}),
        want !== null && p !== want ? el("span", {class: "muted", text: ` · ${ctx.className(want)} ` +
                                                                        DD.fmt.pct(r.probs[want], 2)}) : null]);
      DD.clear(probsBox).append(el("div", {class: "plist"}, ctx.names.map((name, c) => {
        const v = r.probs[c];
        const delta = f ? (v - f.probs[c]) * 100 : null;
        const mark = (c === want ? " true" : "") + (c === p && p !== want ? " pred" : "");
        return el("div", {class: "plist-row try-row" + mark,
                          dataset: {cls: c}},
          el("span", {class: "plist-name", text: name, attrs: {title: name}}),
          el("span", {class: "plist-track"}, el("span", {class: "plist-fill", style: {width: v * 100 + "%"}})),
          el("span", {class: "plist-val", text: DD.fmt.pct(v, 2)}),
          // coloured for the class it should be: green when it gains, red when it loses
          f ? el("span", {class: "plist-delta" + (c !== want ? "" : delta >= 0.05 ? " up" :
                                                  delta <= -0.05 ? " down" : ""),
                          text: Math.abs(delta) < 0.05 ? "·" :
                            `${delta > 0 ? "+" : "−"}${Math.abs(delta).toFixed(1)} pp`,
                          attrs: {title: "change from the image it started from, in percentage points"}}) : null);
      })));
    }

    function showMaps(r) {
      DD.clear(salBox);
      for (const m of r.maps) {
        const label = `toward ${m.target === r.pred ? "predicted" : "expected"} ${ctx.className(m.target)}`;
        salBox.appendChild(el("figure", {class: "sal-fig"},
          el("img", {class: "sal", src: m.image, alt: label, width: 140, height: 140}),
          el("figcaption", {text: label})));
      }
    }

    // The picture under each probe of the Advice view, answered: framed where the answer changes, its class green or
    // red against the class it should be; a click puts one on the canvas to go on from.
    function showPerturbed(r) {
      const want = st.tryExpected;
      const scored = r.perturbed.map((v) => ({...v, pred: v.probs.indexOf(Math.max(...v.probs))}));
      const flips = scored.filter((v) => v.pred !== r.pred);
      const verdict = (v) => (want === null ? "" : v.pred === want ? " ok" : " bad");
      DD.append(DD.clear(perturbBox), [
        el("p", {class: "note", attrs: {"data-testid": "try-perturbed-reading"},
                 text: `${flips.length} of ${scored.length} change the answer (${ctx.className(r.pred)})` +
                       (flips.length ? `: ${flips.map((v) => `${v.label} → ${ctx.className(v.pred)}`).join(", ")}.`
                                     : ".")}),
        el("div", {class: "try-perturbed"}, scored.map((v) => el("figure", {
          class: "try-pert" + (v.pred !== r.pred ? " flip" : ""), dataset: {id: v.id},
          attrs: {title: `${v.label}: ${ctx.className(v.pred)} ${DD.fmt.pct(v.probs[v.pred], 1)}; click to draw on it`},
          on: {click: () => putOnCanvas(v.image)}},
          el("img", {class: "try-pert-img", src: v.image, alt: v.label}),
          el("figcaption", {}, el("span", {text: v.label}),
             el("span", {class: "strong" + verdict(v),
                         text: `${ctx.className(v.pred)} ${DD.fmt.pct(v.probs[v.pred], 0)}`}))))),
        DD.note("The Advice view's probes on this picture, each with the model's answer" +
                (want === null ? "" : ` (green: ${ctx.className(want)}, as it should be)`) +
                "; framed where the answer changes. A click puts that picture on the canvas.", "muted small")]);
    }

    function putOnCanvas(uri) {
      const img = new Image();
      img.onload = () => {
        snapshot();
        g.imageSmoothingEnabled = false;
        g.drawImage(img, 0, 0, canvas.width, canvas.height);
        st.tryDigit = false;   // already prepared as the split's images are
        digitBox.checked = false;
        remember();
        changed();
      };
      img.src = uri;
    }

    // Framed against the class it should be, when one is chosen: green labelled so, red labelled as predicted.
    function showNeighbours(r, pred) {
      const want = st.tryExpected;
      const parts = DD.labelCounts(r.items).map(([c, n]) => `${n} labelled ${ctx.className(c)}`);
      DD.append(DD.clear(nbBox), [el("p", {class: "note", attrs: {"data-testid": "try-neighbours-reading"},
        text: `Its ${r.items.length} nearest among the ${r.reference} (cosine similarity of the model's ` +
              `penultimate features): ${parts.join(", ")}.`}),
        want !== null && pred !== want ?
          DD.note("Framed green: labelled as it should be; red: labelled as predicted.", "muted small") : null,
        DD.neighbourStrip(ctx, r, want === null ? -1 : want, want === null ? -1 : pred, true)]);
    }

    // One request at a time; strokes made meanwhile are sent together once it answers.
    let inFlight = false, dirty = false, nbInFlight = false, nbDirty = false, lastPred = null, lastNb = null;
    let changedAt = 0;   // when the picture last changed: an answer is timed from the change it answers
    const measure = (name, since) => DD.afterPaint(() => {
      try { performance.measure(name, {start: since, end: performance.now()}); } catch (e) { /* best effort */ }
    });
    function body() {
      return {image: canvas.toDataURL("image/png"), digit: st.tryDigit, method: methods.length ? st.method : null,
              expected: st.tryExpected};
    }
    function changed(drawing) {
      changedAt = performance.now();
      showOrigin();
      if (st.tryDigit && isBlank()) {
        status.textContent = "Draw a digit: the answers appear with the first stroke.";
        for (const node of [headline, probsBox, salBox, seen, layersBox, perturbBox, channelBox]) DD.clear(node);
        return;
      }
      status.dataset.settled = "false";   // true again once the answer to the latest picture is shown
      if (inFlight) { dirty = true; } else send();
      if (!drawing && st.tryNeighbours) neighbours();
    }
    async function send() {
      inFlight = true;
      dirty = false;
      const started = performance.now(), asked = changedAt;
      try {
        const r = await ctx.source.probe(ctx.b, body());
        if (!alive()) return;
        measure("dd-try-answer", asked);
        lastPred = r.pred;
        status.textContent = `answered in ${Math.round(performance.now() - started)} ms`;
        DD.clear(seen).append(
          el("img", {class: "try-seen-img", src: r.picture, alt: "the picture as the model sees it"}),
          el("div", {class: "muted small", text: `what the model sees (${info.height}×${info.width})`}));
        showProbs(r);
        showMaps(r);
        showPerturbed(r);
        if (r.channels) {
          DD.renderChannels(ctx, DD.clear(channelBox), r.channels, r.pred,
                            r.channels.other === st.tryExpected ? "as it should be" : "the runner-up");
        }
        if (lastNb) showNeighbours(lastNb, lastPred);   // their framing follows the prediction
        DD.renderLayers(DD.clear(layersBox), r.layers, false);
      } catch (err) {
        if (alive()) showError(err);
      } finally {
        inFlight = false;
        if (dirty && alive()) send(); else status.dataset.settled = "true";
      }
    }
    async function neighbours() {
      if (nbInFlight) { nbDirty = true; return; }
      nbInFlight = true;
      nbDirty = false;
      if (!nbBox.querySelector(".nb-row")) {
        DD.clear(nbBox).appendChild(DD.note("Searching the training images (the first search computes all their " +
                                            "features: seconds to a minute)…", "muted"));
      }
      const asked = changedAt;
      try {
        const r = await ctx.source.probe(ctx.b, body(), "neighbours");
        if (alive()) { lastNb = r; showNeighbours(r, lastPred); measure("dd-try-neighbours", asked); }
      } catch (err) {
        if (alive()) DD.clear(nbBox).appendChild(DD.note(`Could not search them: ${err.message}`, "error"));
      } finally {
        nbInFlight = false;
        if (nbDirty && alive()) neighbours();
      }
    }

    // The training images behind the answer (analysis.influence, TracIn), on request: one pass over all of them
    // (seconds), so not after every stroke.
    async function influence() {
      DD.clear(infBox).appendChild(DD.note("Weighing every training image (a few seconds)…", "muted"));
      try {
        const r = await ctx.source.probe(ctx.b, body(), "influence");
        if (!alive()) return;
        const name = ctx.className(r.label), what = st.tryExpected === null ? "its answer" : "the class it should be";
        DD.append(DD.clear(infBox), [
          el("p", {class: "note", attrs: {"data-testid": "try-influence-reading"}, text: `The training images whose ` +
            `training pulled this picture most toward ${name} (${what}; TracIn at the last layer, the final model):`}),
          DD.neighbourStrip(ctx, {items: r.for}, r.label, r.pred, true, ["score", 0]),
          el("p", {class: "note muted small", text: `and pushed it most away from ${name}:`}),
          DD.neighbourStrip(ctx, {items: r.against}, r.label, r.pred, true, ["score", 0]),
          button("Weigh them again for this picture", "try-find-influence", influence)]);
      } catch (err) {
        if (alive()) DD.clear(infBox).append(DD.note(`Could not weigh them: ${err.message}`, "error"),
                                             button("Try again", "try-find-influence", influence));
      }
    }
    // The smallest turn, shift, zoom, slant, thickness and invisible change that flips the answer, or that makes it
    // the class it should be (analysis.robustness), on request: ~0.3 s, so not after every stroke.
    async function robustness() {
      DD.clear(robBox).appendChild(DD.note("Searching…", "muted"));
      try {
        const r = await ctx.source.probe(ctx.b, body(), "robustness");
        if (!alive()) return;
        DD.append(DD.clear(robBox), [
          el("p", {class: "note", attrs: {"data-testid": "try-robustness-reading"}, text: r.mending ?
            `The smallest change of each kind that makes the model read it as ${ctx.className(r.label)}, the class ` +
            "it should be:" : `The smallest change of each kind that changes its answer, ${ctx.className(r.pred)}:`}),
          el("div", {class: "rob-grid"}, r.families.map((f) => DD.robustnessCard(ctx, f, f, r.mending))),
          button("Search again for this picture", "try-find-robustness", robustness)]);
      } catch (err) {
        if (alive()) DD.clear(robBox).append(DD.note(`Could not search: ${err.message}`, "error"),
                                             button("Try again", "try-find-robustness", robustness));
      }
    }
    robBox.appendChild(button("What is the smallest change that fools it?", "try-find-robustness", robustness,
                              "turns, shifts, zooms, slants and thickness growing until the answer changes, " +
                              "and an invisible change"));

    if (info.influence) {
      infBox.appendChild(button("Which training images taught it this?", "try-find-influence", influence,
                                "one pass over the training images: a few seconds"));
    }

    if (info.neighbours) {
      nbBox.appendChild(button("Find its nearest training images", "try-find-neighbours", () => {
        st.tryNeighbours = true;
        neighbours();
      }, "then again after every stroke"));
    } else {
      nbBox.appendChild(DD.note("This run's analysis has no training images to search.", "muted"));
    }

    blank();
    if (st.tryRow !== undefined && st.tryRow !== null && !st.tryPicture) {
      const row = st.tryRow;
      st.tryRow = null;
      loadRow(row);
    } else if (st.tryPicture) {
      const img = new Image();
      img.onload = () => { g.drawImage(img, 0, 0); changed(); };
      img.src = st.tryPicture;
    } else {
      changed();
    }
  }
})(window.DD);
