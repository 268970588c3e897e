// Boot and hash router: #/ lists the runs, #/r/<run id>/<split>/<view>[/<arg>] shows one view of a run's deep dive
// (a view with `takeArg` reads the optional last part, e.g. the run Compare sets beside this one).
"use strict";
(function (DD) {
  const el = DD.el;
  const config = DD.config;
  const source = DD.makeSource(config);
  const contexts = new Map();
  let current = null;   // the context of the run on screen
  let routeCount = 0;   // a route that finishes loading after a newer one started draws nothing

  DD.viewHref = (ctx, view) => `#/r/${encodeURIComponent(ctx.b.run.id)}/${encodeURIComponent(ctx.b.split)}/${view}`;
  DD.go = (ctx, view) => { location.hash = DD.viewHref(ctx, view); };

  function parseHash() {
    let parts;
    try {
      parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    } catch (e) {
      return null;   // a malformed %-escape: show the runs (or, in a report, its run)
    }
    if (parts[0] === "r" && parts.length >= 3) {
      return {runId: parts[1], split: parts[2], view: parts[3] || "overview", arg: parts[4]};
    }
    if (parts[0] === "run" && parts[1]) return {runPage: parts[1]};     // a run's training, analysed or not
    return null;
  }

  async function contextFor(runId, split) {
    const key = runId + "\u0000" + split;
    if (!contexts.has(key)) contexts.set(key, DD.prepare(await source.bundle(runId, split), source));
    return contexts.get(key);
  }

  function renderNav(ctx, view) {
    const nav = DD.clear(document.getElementById("sidenav"));
    if (!ctx) { nav.hidden = true; return; }
    nav.hidden = false;
    const badges = {issues: ctx.b.label_issues.length, predictions: ctx.n,
                    dynamics: ctx.b.dynamics.available ? ctx.b.dynamics.negative_aum : undefined};
    for (const name of DD.VIEW_ORDER) {
      const v = DD.views[name];
      if (v.servedOnly && ctx.source.mode !== "served") continue;
      nav.appendChild(el("a", {class: "nav-item" + (name === view ? " active" : ""), href: DD.viewHref(ctx, name),
                               dataset: {view: name}},
        el("span", {class: "nav-icon", text: v.icon}), el("span", {class: "nav-label", text: v.title}),
        badges[name] !== undefined ? el("span", {class: "nav-badge", text: DD.fmt.int(badges[name])}) : null));
    }
  }

  function renderCrumbs(ctx) {
    const crumbs = DD.clear(document.getElementById("crumbs"));
    if (source.mode === "served") crumbs.appendChild(el("a", {href: "#/", text: "Runs"}));
    if (!ctx) return;
    const run = ctx.b.run;
    crumbs.appendChild(el("span", {class: "crumb-sep", text: "/"}));
    crumbs.appendChild(el("span", {class: "crumb-run", text: run.name, attrs: {"data-testid": "run-name"}}));
    crumbs.appendChild(el("span", {class: "crumb-id", text: run.id}));
    crumbs.appendChild(el("span", {class: "pill", text: `${ctx.b.split} split · ${DD.fmt.int(ctx.n)} image${ctx.n === 1 ? "" : "s"}`}));
    document.getElementById("topbar-note").textContent = source.mode === "report" ?
      `static report · generated ${DD.fmt.date(ctx.b.generated_at)}` : "";
  }

  async function route() {
    const main = document.getElementById("main");
    const token = ++routeCount;
    const target = parseHash();
    if (!target && source.mode === "report") {
      location.replace(`#/r/${encodeURIComponent(config.run_id)}/${encodeURIComponent(config.split)}/overview`);
      return;
    }
    DD.closeDetail();
    DD.tooltip.hide();
    if (!target || (target.runPage && source.mode !== "served")) {
      current = null;
      renderNav(null);
      renderCrumbs(null);
      document.title = "deepdive · runs";
      const root = DD.clear(main);
      root.dataset.view = "runs";
      DD.views.runs.render(root, source);
      return;
    }
    if (target.runPage) {
      current = null;
      renderNav(null);
      renderCrumbs(null);
      const root = DD.clear(main);
      root.dataset.view = "run";
      DD.views.run.render(root, source, target.runPage);
      return;
    }
    let ctx;
    try {
      ctx = await contextFor(target.runId, target.split);
    } catch (err) {
      if (token !== routeCount) return;
      renderNav(null);
      delete main.dataset.view;
      DD.clear(main).appendChild(DD.note(`Could not load run ${target.runId} (${target.split}): ${err.message}`, "error"));
      return;
    }
    if (token !== routeCount) return;
    const known = DD.views[target.view] && !(DD.views[target.view].servedOnly && source.mode !== "served");
    const view = known ? target.view : "overview";
    if (view === target.view && target.arg && DD.views[view].takeArg) DD.views[view].takeArg(ctx, target.arg);
    current = ctx;
    renderNav(ctx, view);
    renderCrumbs(ctx);
    document.title = `${ctx.b.run.name} · ${DD.views[view].title} · deepdive`;
    const root = DD.clear(main);
    root.dataset.view = view;
    root.appendChild(el("h1", {class: "view-title", text: DD.views[view].title}));
    DD.views[view].render(root, ctx);
    main.scrollTop = 0;
  }

  // Any thumbnail anywhere opens its detail, with the thumbnails beside it (its strip, its cell) to step through.
  function openFromEvent(e) {
    const thumb = e.target.closest(".thumb[data-row]");
    if (!thumb || !current || thumb.matches(".big, .nodetail")) return false;
    DD.openDetail(current, Number(thumb.dataset.row), DD.navRows(thumb));
    return true;
  }
  document.addEventListener("click", openFromEvent);
  document.addEventListener("keydown", (e) => { if (e.key === "Enter" && openFromEvent(e)) e.preventDefault(); });
  DD.rerender = route;
  window.addEventListener("hashchange", route);
  route();
})(window.DD);
