// The workspace's runs (served mode's home page).
"use strict";
(function (DD) {
  const el = DD.el;

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
      const head = ["Name", "Run id", "Dataset", "Status", "Test accuracy", "Parameters", "Train time", "Created",
                    "Deep dive"];
      const table = el("table", {class: "grid runs-table", attrs: {"data-testid": "runs-table"}},
        el("thead", {}, el("tr", {}, head.map((h) => el("th", {text: h})))),
        el("tbody", {}, runs.map((r) => el("tr", {dataset: {run: r.id}},
          el("td", {class: "strong", text: r.name}),
          el("td", {class: "mono", text: r.id}),
          el("td", {text: r.dataset}),
          el("td", {}, el("span", {class: "status " + r.status, text: r.status})),
          el("td", {class: "num", text: DD.fmt.pct(r.test_accuracy, 2)}),
          el("td", {class: "num", text: DD.fmt.int(r.num_params)}),
          el("td", {class: "num", text: DD.fmt.secs(r.train_seconds)}),
          el("td", {text: DD.fmt.date(r.created_at)}),
          el("td", {}, r.splits.length ? r.splits.map((s) => el("a", {
            class: "btn small", text: `open ${s}`,
            href: `#/r/${encodeURIComponent(r.id)}/${encodeURIComponent(s)}/overview`,
          })) : el("span", {class: "muted small", text: `not analysed: deepdive analyze ${r.id}`}))))));
      root.appendChild(el("div", {class: "panel"}, table));
    },
  };
})(window.DD);
