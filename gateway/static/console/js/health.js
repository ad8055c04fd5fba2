// Health: the latest settlement and expiry runs, requests and error rates of this server.
import { gql } from "./api.js";
import { h, points, span, table, when } from "./ui.js";

const Q = `{
  settlementPeriods(first: 5) { edges { node { id periodStart periodEnd status runAt closedAt } } }
  operatorHealth { lastExpiry { at recordedAt points actor }
    requests { route requests clientErrors serverErrors } }
}`;

const pct = (n, total) => (total ? `${((100 * n) / total).toFixed(n && n < total / 1000 ? 2 : 1)} %` : "—");

export async function healthView(main) {
  const d = await gql(Q);
  const periods = d.settlementPeriods.edges.map((e) => e.node);
  const lastRun = periods.map((p) => p.runAt).filter(Boolean).sort().pop();
  const expiry = d.operatorHealth.lastExpiry;
  const reqs = d.operatorHealth.requests;
  const total = reqs.reduce((a, r) => a + r.requests, 0);
  const errors = reqs.reduce((a, r) => a + r.serverErrors, 0);
  main.replaceChildren(
    h("h1", {}, "Health"),
    h("div", { class: "grid two" },
      h("section", { class: "panel", "aria-labelledby": "h-settle" },
        h("h2", { id: "h-settle" }, "Settlement runs"),
        h("p", {}, lastRun ? `Last computed ${when(lastRun)}.` : "No settlement has run yet."),
        table("Latest periods", [
          { label: "Period", value: (p) => h("a", { href: `#/settlement/${p.id}` }, span(p.periodStart, p.periodEnd)) },
          { label: "Computed", value: (p) => when(p.runAt) },
          { label: "Closed", value: (p) => (p.closedAt ? when(p.closedAt) : h("span", { class: "badge warn" }, "Open")) },
        ], periods, { empty: "" })),
      h("section", { class: "panel", "aria-labelledby": "h-expiry" },
        h("h2", { id: "h-expiry" }, "Points expiry"),
        expiry
          ? h("dl", { class: "facts" },
            h("dt", {}, "Expired up to"), h("dd", {}, when(expiry.at)),
            h("dt", {}, "Run at"), h("dd", {}, when(expiry.recordedAt)),
            h("dt", {}, "Points expired"), h("dd", {}, points(expiry.points)),
            h("dt", {}, "By"), h("dd", {}, expiry.actor))
          : h("p", {}, "No points have expired yet."))),
    h("section", { class: "panel", "aria-labelledby": "h-req" },
      h("h2", { id: "h-req" }, "Requests to this server since it started"),
      h("div", { class: "kpis" },
        h("div", { class: "kpi" }, "Requests", h("b", {}, points(total))),
        h("div", { class: "kpi" }, "Server errors", h("b", {}, `${points(errors)} (${pct(errors, total)})`))),
      table(null, [
        { label: "Route", value: (r) => h("code", {}, r.route) },
        { label: "Requests", num: true, value: (r) => points(r.requests) },
        { label: "Refused (4xx)", num: true, value: (r) => `${points(r.clientErrors)} · ${pct(r.clientErrors, r.requests)}` },
        { label: "Server errors (5xx)", num: true, value: (r) => (r.serverErrors
          ? h("span", { class: "badge bad" }, `${points(r.serverErrors)} · ${pct(r.serverErrors, r.requests)}`)
          : "0") },
      ], reqs, { empty: "No requests yet." }),
      h("p", { class: "hint" }, "Each server process counts its own; the full series are at /metrics.")));
}
