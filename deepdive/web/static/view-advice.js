// Augmentation advice from the robustness probes, and its verification by retraining when present.
"use strict";
(function (DD) {
  const el = DD.el;

  // A JSON value as readable text/DOM: numbers rounded, objects as nested key/value lists.
  function value(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? DD.fmt.int(v) : DD.fmt.num(v, 4);
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (Array.isArray(v)) return v.every((x) => typeof x !== "object" || x === null) ? v.map(value).join(", ") : el("div", {}, v.map(value));
    if (typeof v === "object") return kv(v);
    return String(v);
  }
  function kv(obj, skip) {
    return el("dl", {class: "kv"}, Object.entries(obj).filter(([k]) => !(skip || []).includes(k)).map(([k, v]) =>
      [el("dt", {text: k.replace(/_/g, " ")}), el("dd", {}, value(v))]));
  }

  const TITLE_KEYS = ["title", "name", "augmentation", "suggestion", "action"];
  const TEXT_KEYS = ["reason", "rationale", "why", "description", "message", "text"];
  const pick = (obj, keys) => keys.find((k) => typeof obj[k] === "string");

  function suggestion(item, i) {
    const titleKey = pick(item, TITLE_KEYS), textKey = pick(item, TEXT_KEYS);
    return el("div", {class: "advice-item", attrs: {"data-testid": "advice-item"}},
      el("h3", {}, el("span", {class: "advice-rank", text: i + 1}), titleKey ? item[titleKey] : `suggestion ${i + 1}`),
      textKey ? el("p", {class: "note", text: item[textKey]}) : null,
      kv(item, [titleKey, textKey]));
  }

  DD.views.advice = {
    title: "Advice", icon: "✚",
    render(root, ctx) {
      const advice = ctx.b.advice;
      if (!advice) {
        root.appendChild(DD.note("This analysis has no augmentation advice (the model could not be loaded for the " +
                                 "robustness probes).", "error"));
        return;
      }
      const items = Array.isArray(advice) ? advice : (advice.suggestions || advice.recommendations || []);
      root.appendChild(DD.section("Suggested augmentations, strongest evidence first",
        items.length ? items.map(suggestion) : DD.note("The probes found no weakness an augmentation would address.")));
      const rest = Array.isArray(advice) ? null : Object.fromEntries(Object.entries(advice).filter(([k]) =>
        !["suggestions", "recommendations"].includes(k)));
      if (rest && Object.keys(rest).length) root.appendChild(DD.section("Robustness probes", kv(rest)));
      const ver = ctx.b.verification;
      root.appendChild(DD.section("Verification", ver ? el("div", {attrs: {"data-testid": "verification"}}, kv(ver))
        : DD.note(`Not verified yet. Retrain with the top suggestion and compare: deepdive verify-advice ${ctx.b.run.id}`, "muted")));
    },
  };
})(window.DD);
