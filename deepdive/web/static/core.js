// deepdive front end: shared namespace, DOM helpers, data sources. No build step, no modules: the report inlines
// these files in order, so each one adds to window.DD. Data-derived text only ever goes through textContent.
"use strict";
window.DD = window.DD || {};
(function (DD) {
  DD.views = {};   // name -> {title, icon, render(root, ctx), servedOnly: absent from a report}
  DD.VIEW_ORDER = ["overview", "classes", "confusion", "slices", "saliency", "activations", "predictions", "confidence",
                   "robustness", "issues", "dynamics", "embedding", "advice", "compare", "try"];

  // el("div", {class: "x", text: "t", dataset: {row: 3}, on: {click: f}, style: {...}, attrs: {...}}, ...children)
  DD.el = function (tag, props, ...children) {
    const node = document.createElement(tag);
    const p = props || {};
    for (const [key, value] of Object.entries(p)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "style") Object.assign(node.style, value);
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (key === "attrs") for (const [a, v] of Object.entries(value)) node.setAttribute(a, String(v));
      else node[key] = value;
    }
    DD.append(node, children);
    return node;
  };
  DD.append = function (node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };
  DD.clear = function (node) { while (node.firstChild) node.removeChild(node.firstChild); return node; };

  DD.fmt = {
    pct: (x, digits = 2) => (x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + "%"),
    num: (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits)),
    int: (x) => (x === null || x === undefined ? "–" : Math.round(x).toLocaleString("en-US")),
    secs: function (s) {
      if (s === null || s === undefined) return "–";
      if (s < 60) return s.toFixed(1) + " s";
      const m = Math.floor(s / 60);
      return m < 60 ? `${m} min ${Math.round(s - 60 * m)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
    },
    date: (iso) => (iso ? String(iso).replace("T", " ").slice(0, 19) : "–"),
  };

  // Twenty class colours: Tableau 10 first (ten classes get only these), then ten more from Tableau 20 and d3 that
  // stand apart from them; past twenty classes they cycle.
  DD.CLASS_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                     "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#8cd17d", "#b6992d", "#499894", "#d37295",
                     "#79706e", "#d4a6c8", "#17becf", "#6b4c9a"];
  DD.classColor = (c) => DD.CLASS_COLORS[c % DD.CLASS_COLORS.length];

  // A column the bundle packed (bundle.packed): little-endian integers in base64, value = stored / scale, a running
  // sum with delta. (Typed arrays read the platform's byte order: little-endian on every browser platform.)
  DD.unpack = function (p) {
    const bytes = Uint8Array.from(atob(p.data), (c) => c.charCodeAt(0));
    const Type = {uint8: Uint8Array, uint16: Uint16Array, int32: Int32Array, float64: Float64Array}[p.dtype];
    const raw = new Type(bytes.buffer);
    const out = new Array(raw.length);
    let sum = 0;
    for (let i = 0; i < raw.length; i++) {
      sum = p.delta ? sum + raw[i] : raw[i];
      out[i] = p.scale === 1 ? sum : sum / p.scale;
    }
    return out;
  };

  DD.readJSON = function (id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  };
  DD.config = DD.readJSON("dd-config");

  // plotly.js: inlined in the report; the served page loads it on first use, so the first paint need not wait
  // for 4.8 MB of script to be parsed.
  let plotlyPromise = null;
  DD.plotly = function () {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyPromise) {
      plotlyPromise = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = DD.config.plotly_url;
        script.onload = () => resolve(window.Plotly);
        script.onerror = () => reject(new Error("could not load plotly.js"));
        document.head.appendChild(script);
      });
    }
    return plotlyPromise;
  };

  DD.mark = function (name) { try { performance.mark(name); } catch (e) { /* marks are best effort */ } };
  // A performance measure from an input event's timestamp (so input delay counts) to now.
  DD.measureSince = function (name, event) {
    try { performance.measure(name, {start: event.timeStamp, end: performance.now()}); } catch (e) { /* best effort */ }
  };
  // Run fn once the browser has painted what we just put in the DOM.
  DD.afterPaint = (fn) => requestAnimationFrame(() => setTimeout(fn, 0));
  // A measure from an input event, ending once the browser has painted the DOM changes just made.
  DD.measurePainted = (name, event) => DD.afterPaint(() => DD.measureSince(name, event));
  DD.markPainted = (name) => DD.afterPaint(() => DD.mark(name));

  // ---- data sources: the served app fetches JSON/PNG; the report reads inline blocks and data: URIs ----------
  DD.makeSource = function (config) {
    if (config.mode === "report") {
      const bundle = DD.readJSON("dd-bundle");
      return {
        mode: "report",
        listRuns: async () => [bundle.run],
        bundle: async () => bundle,
        saliencyURL: function (b, method, row, which) {
          const k = b.saliency.errorPos.get(row);
          const maps = b.saliency.errors && b.saliency.errors[method];
          const pair = maps && k !== undefined ? maps[k] : null;   // null: not inlined in this report
          return pair ? pair[which === "pred" ? 0 : 1] : null;
        },
        classSaliencyURL: (b, method, cls, kind) => b.saliency["class_" + kind][method][cls],
        activations: async (b, row) => (b.activations.data[String(row)] || null),
        neighbours: async (b, row) => ((b.neighbours || {}).data || {})[String(row)] || null,
        influence: async (b, row) => ((b.influence || {}).data || {})[String(row)] || null,
        robustness: null,   // the bundle's numbers and inlined pictures are all a report has (DD.robustnessLocal)
        channels: async (b, row) => (b.channels.errors || {})[String(row)] || null,   // the errors' only; no maps
        reviews: async (b) => ({reviews: b.reviews || {}}),   // as they stood when the report was written
        tags: async (b) => ({tags: b.tags || {}}),            // likewise
        // Training images: the report holds the ones the Training dynamics view lists (null: not inlined).
        trainingImage: async () => null,
        trainingPictures: async (b, idxs) => Object.fromEntries(idxs.map((i) => [i, b.dynamics.pictures[i]])
          .filter(([, uri]) => uri)),
        trainingReviews: async (b) => ({reviews: b.dynamics.reviews || {}}),
        trainingTags: async (b) => ({tags: b.dynamics.tags || {}}),
      };
    }
    const getJSON = async function (url, init) {
      const res = await fetch(url, init);
      if (!res.ok) {
        let detail = res.statusText;
        try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
        throw new Error(`${res.status}: ${detail}`);
      }
      return res.json();
    };
    const base = (b) => b.urls.base;
    // A verdict on one image's label: PUT it, or DELETE it (verdict null).
    const sendReview = (url, verdict, label) => getJSON(url, verdict === null ? {method: "DELETE"} :
      {method: "PUT", headers: {"Content-Type": "application/json"},
       body: JSON.stringify({verdict, label: verdict === "relabel" ? label : null})});
    const cache = new Map();
    // One fetch per URL (a failed one is forgotten, so it is tried again); fresh: fetch anew.
    const cachedJSON = function (url, fresh) {
      if (fresh || !cache.has(url)) {
        const p = getJSON(url);
        p.catch(() => cache.delete(url));
        cache.set(url, p);
      }
      return cache.get(url);
    };
    return {
      mode: "served",
      listRuns: () => getJSON("/api/runs"),
      deleteRun: (runId) => getJSON(`/api/runs/${encodeURIComponent(runId)}`, {method: "DELETE"}),
      editRun: (runId, edit) => getJSON(`/api/runs/${encodeURIComponent(runId)}`,
        {method: "PATCH", headers: {"Content-Type": "application/json"}, body: JSON.stringify(edit)}),
      // fresh: refetch (a run still training logs more epochs)
      epochs: (runId, fresh) => cachedJSON(`/api/runs/${encodeURIComponent(runId)}/epochs`, fresh),
      steps: (runId, fresh) => cachedJSON(`/api/runs/${encodeURIComponent(runId)}/steps`, fresh),
      histograms: (runId, fresh) => cachedJSON(`/api/runs/${encodeURIComponent(runId)}/histograms`, fresh),
      run: (runId) => getJSON(`/api/runs/${encodeURIComponent(runId)}`),
      bundle: (runId, split) =>
        cachedJSON(`/api/runs/${encodeURIComponent(runId)}/splits/${encodeURIComponent(split)}/bundle`),
      saliencyURL: function (b, method, row, which) {
        const col = b.examples.columns;
        const target = which === "pred" ? col.pred[row] : col.true[row];
        return `${base(b)}/saliency/${method}/row/${row}.png?target=${target}`;
      },
      classSaliencyURL: (b, method, cls, kind) => `${base(b)}/saliency/${method}/class/${kind}/${cls}.png`,
      activations: (b, row) => getJSON(`${base(b)}/activations/${row}`),
      neighbours: (b, row) => cachedJSON(`${base(b)}/neighbours/${row}`),
      influence: (b, row) => cachedJSON(`${base(b)}/influence/${row}`),
      robustness: (b, row) => cachedJSON(`${base(b)}/robustness/${row}`),
      channels: (b, row) => cachedJSON(`${base(b)}/channels/${row}`),
      compare: (runId, split, otherId) => cachedJSON(`/api/runs/${encodeURIComponent(runId)}/splits/` +
        `${encodeURIComponent(split)}/compare/${encodeURIComponent(otherId)}`),
      // A picture from outside the split (the Try view): what the run's model takes, then its answers.
      probeInfo: (b) => cachedJSON(`${base(b)}/probe`),
      probe: (b, body, what) => getJSON(`${base(b)}/probe${what ? "/" + what : ""}`,
        {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)}),
      // People's verdicts on labels live in the workspace's store: read afresh, written one image at a time.
      reviews: (b) => getJSON(`${base(b)}/reviews`),
      tags: (b) => getJSON(`${base(b)}/tags`),
      setTag: (b, row, tag, remove) => getJSON(`${base(b)}/tags/${row}`, {method: remove ? "DELETE" : "PUT",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({tag})}),
      tagRows: (b, rows, tag, remove) => getJSON(`${base(b)}/tags`, {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({rows, tag, remove: Boolean(remove)})}),
      setReview: (b, row, verdict, label) => sendReview(`${base(b)}/reviews/${row}`, verdict, label),
      // Training images (the Training dynamics view), by their index in the dataset's training split.
      trainingImage: (b, idx) => cachedJSON(`${base(b)}/dynamics/${idx}`),
      trainingPictures: (b, idxs) => getJSON(`${base(b)}/dynamics/pictures?idx=${idxs.join(",")}`),
      duplicatePictures: (b, idxs) => getJSON(`${base(b)}/duplicates/pictures?idx=${idxs.join(",")}`),
      trainingReviews: (b) => getJSON(`${base(b)}/dynamics/reviews`),
      setTrainingReview: (b, idx, verdict, label) => sendReview(`${base(b)}/dynamics/reviews/${idx}`, verdict, label),
      trainingTags: (b) => getJSON(`${base(b)}/dynamics/tags`),
      tagTrainingImages: (b, idx, tag, remove) => getJSON(`${base(b)}/dynamics/tags`, {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({idx, tag, remove: Boolean(remove)})}),
      setTrainingTag: (b, idx, tag, remove) => getJSON(`${base(b)}/dynamics/tags/${idx}`, {method: remove ? "DELETE"
        : "PUT", headers: {"Content-Type": "application/json"}, body: JSON.stringify({tag})}),
    };
  };
})(window.DD);
