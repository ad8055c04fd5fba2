// Settlement: the periods (run one, close one), a period's statements with their CSV and PDF,
// the inter-partner matrix as a heat map, and reconciliation of a partner's file.
import { download, gql, outcome, upload } from "./api.js";
import { busy, field, h, money, points, say, sayAndGo, span, table, utcDay, when } from "./ui.js";

const PERIODS = `{ settlementPeriods(first: 24) { edges { node {
  id periodStart periodEnd kind status runAt closedAt operatorMargin { amount currency } } } } }`;

const status = (p) => (p.status === "closed"
  ? h("span", { class: "badge ok" }, "Closed")
  : h("span", { class: "badge warn" }, "Open"));

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

export async function periodsView(main) {
  const d = await gql(PERIODS);
  const periods = d.settlementPeriods.edges.map((e) => e.node);
  const today = new Date();
  const first = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - 1, 1));
  const last = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1));
  const start = h("input", { type: "date", name: "start", required: true, value: isoDay(first) });
  const end = h("input", { type: "date", name: "end", required: true, value: isoDay(last) });
  const form = h("form", { class: "inline", "aria-labelledby": "run-title" },
    field("First day", start),
    field("Ends before", end),
    h("button", { type: "submit" }, "Run settlement"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      const r = await gql(`mutation($input: RunSettlementInput!) { runSettlement(input: $input) {
        __typename ... on RunSettlementSuccess { period { id } } ... on Error { code message } } }`,
        { input: { periodStart: utcDay(start.value), periodEnd: utcDay(end.value) } });
      const { period } = outcome(r.runSettlement);
      sayAndGo("The period was computed. Check its statements, then close it.", `#/settlement/${period.id}`);
    });
  });
  main.replaceChildren(
    h("h1", {}, "Settlement"),
    h("section", { class: "panel" },
      h("h2", { id: "run-title" }, "Run a period"),
      h("p", { class: "hint" }, "Days in UTC; the end day is not included. Running an open period again recomputes it."),
      form),
    h("section", { class: "panel", "aria-labelledby": "periods" },
      h("h2", { id: "periods" }, "Periods"),
      table(null, [
        { label: "Period", value: (p) => h("a", { href: `#/settlement/${p.id}` }, span(p.periodStart, p.periodEnd)) },
        { label: "Status", value: status },
        { label: "Computed", value: (p) => when(p.runAt) },
        { label: "Closed", value: (p) => when(p.closedAt) },
        { label: "Operator margin", num: true, value: (p) => money(p.operatorMargin) },
      ], periods, { empty: "No settlement period yet." })));
}

const PERIOD = `query($id: ID!) { settlementPeriod(id: $id) {
  id periodStart periodEnd status runAt closedAt contentHash operatorMargin { amount currency }
  breakagePoints operatorIssuedPoints
  statements { partner { id name } issuedPoints redeemedPoints issuanceCharge { amount currency }
    reimbursement { amount currency } net { amount currency } }
  matrix { points value { amount currency } issuer { id name } redeemer { id name } }
} }`;

function heatMap(cells) {
  if (!cells.length) return h("p", { class: "muted" }, "No points changed hands in this period.");
  const name = (p) => (p ? p.name : "Operator");
  const key = (p) => (p ? p.id : "operator");
  const issuers = new Map(), redeemers = new Map(), at = new Map();
  for (const c of cells) {
    issuers.set(key(c.issuer), name(c.issuer));
    redeemers.set(key(c.redeemer), name(c.redeemer));
    at.set(`${key(c.issuer)}|${key(c.redeemer)}`, c);
  }
  const max = Math.max(...cells.map((c) => c.points), 1);
  const cols = [...redeemers.entries()];
  const cell = (i, r) => {
    const c = at.get(`${i}|${r}`);
    const td = h("td", { class: "cell" }, c ? points(c.points) : "0");
    const f = c ? c.points / max : 0;
    // From near-white to deep blue; white text once the blue is dark enough.
    td.style.backgroundColor = `hsl(217 80% ${Math.round(97 - f * 60)}%)`;
    if (f > 0.45) td.style.color = "#fff";
    if (c) td.title = `${name(c.issuer)} → ${name(c.redeemer)}: ${points(c.points)} points, ${money(c.value)}`;
    return td;
  };
  return h("div", { class: "table-wrap" }, h("table", { class: "heat" },
    h("caption", {}, "Points issued by the row's partner and accepted by the column's"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Issuer \\ accepted at"), cols.map(([, n]) => h("th", { scope: "col", class: "num" }, n)))),
    h("tbody", {}, [...issuers.entries()].map(([i, n]) => h("tr", {}, h("th", { scope: "row" }, n), cols.map(([r]) => cell(i, r)))))));
}

const LINE_STATUS = {
  matched: "Agrees", mismatched: "Points or amount differ",
  missing_in_ledger: "In the file, not in the ledger", missing_in_file: "In the ledger, not in the file",
};

function reconciliationReport(report, partnerName) {
  const total = report.mismatched + report.missing_in_ledger + report.missing_in_file;
  return h("div", { id: "reconciliation-report", "aria-live": "polite" },
    h("h3", {}, `${partnerName}: ${report.filename || "file"}`),
    h("div", { class: "kpis" },
      h("div", { class: "kpi" }, "Agree", h("b", {}, points(report.matched))),
      h("div", { class: "kpi" }, "Differ", h("b", {}, points(report.mismatched))),
      h("div", { class: "kpi" }, "Not in the ledger", h("b", {}, points(report.missing_in_ledger))),
      h("div", { class: "kpi" }, "Not in the file", h("b", {}, points(report.missing_in_file)))),
    total === 0
      ? h("p", {}, h("span", { class: "badge ok" }, "No discrepancies"), " The file agrees with the ledger.")
      : table("Discrepancies", [
        { label: "Order", value: (l) => l.order_ref || "—" },
        { label: "Kind", value: (l) => l.kind },
        { label: "What", value: (l) => LINE_STATUS[l.status] || l.status },
        { label: "File points", num: true, value: (l) => points(l.file_points) },
        { label: "Ledger points", num: true, value: (l) => points(l.ledger_points) },
        { label: "File amount", num: true, value: (l) => l.file_amount ?? "—" },
        { label: "Ledger amount", num: true, value: (l) => l.ledger_amount ?? "—" },
        { label: "File lines", value: (l) => (l.file_lines || []).join(", ") || "—" },
      ], report.lines),
    report.next ? h("p", { class: "hint" }, "More discrepancies than shown: download them through the API.") : null);
}

export async function periodView(main, id) {
  const d = await gql(PERIOD, { id });
  const p = d.settlementPeriod;
  if (!p) {
    main.replaceChildren(h("h1", {}, "Period not found"), h("p", {}, h("a", { href: "#/settlement" }, "Back to the periods")));
    return;
  }
  const file = (st, fmt) => {
    const b = h("button", { type: "button", class: "quiet", "aria-label": `Download the ${fmt.toUpperCase()} statement of ${st.partner.name}` }, fmt.toUpperCase());
    b.addEventListener("click", () => busy(b, async () => {
      await download(`/settlement/periods/${p.id}/statements/${st.partner.id}.${fmt}`,
        `statement-${st.partner.name.replace(/[^A-Za-z0-9]+/g, "-")}-${p.periodStart.slice(0, 10)}.${fmt}`);
      say(`The ${fmt.toUpperCase()} statement of ${st.partner.name} was downloaded.`);
    }));
    return b;
  };
  const close = h("button", { type: "button" }, "Close and seal this period");
  close.addEventListener("click", () => busy(close, async () => {
    const r = await gql(`mutation($input: CloseSettlementPeriodInput!) { closeSettlementPeriod(input: $input) {
      __typename ... on Error { code message } } }`, { input: { periodId: p.id } });
    outcome(r.closeSettlementPeriod);
    await periodView(main, id);
    say("The period is closed and sealed.");
  }));
  const partnerSelect = h("select", { name: "partner", required: true },
    p.statements.map((st) => h("option", { value: st.partner.id }, st.partner.name)));
  const fileInput = h("input", { type: "file", name: "file", accept: ".csv,text/csv", required: true });
  const reportSlot = h("div");
  const reconForm = h("form", { class: "stack" },
    field("Partner", partnerSelect),
    field("The partner's file (CSV)", fileInput, "Header order_ref,kind,points,amount, then one line per event; at most 5 MB."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Reconcile")));
  reconForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(reconForm, async () => {
      const partner = partnerSelect.value;
      const report = await upload(
        `/settlement/periods/${p.id}/reconciliations?partner_id=${encodeURIComponent(partner)}&status=mismatched,missing_in_ledger,missing_in_file`,
        fileInput.files[0]);
      reportSlot.replaceChildren(reconciliationReport(report, partnerSelect.selectedOptions[0].textContent));
      say("The file was matched against the ledger.");
    });
  });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/settlement" }, "← Settlement")),
    h("h1", {}, `Period ${span(p.periodStart, p.periodEnd)}`),
    h("section", { class: "panel" },
      h("div", { class: "kpis" },
        h("div", { class: "kpi" }, "Status", h("b", {}, p.status === "closed" ? "Closed" : "Open")),
        h("div", { class: "kpi" }, "Operator margin", h("b", {}, money(p.operatorMargin))),
        h("div", { class: "kpi" }, "Points expired", h("b", {}, points(p.breakagePoints))),
        h("div", { class: "kpi" }, "Operator-issued points", h("b", {}, points(p.operatorIssuedPoints)))),
      h("dl", { class: "facts" },
        h("dt", {}, "Computed"), h("dd", {}, when(p.runAt)),
        h("dt", {}, "Closed"), h("dd", {}, when(p.closedAt)),
        p.contentHash ? [h("dt", {}, "Seal"), h("dd", {}, h("code", {}, p.contentHash.slice(0, 16) + "…"))] : null),
      p.status === "closed" ? null : h("div", { class: "actions" }, close)),
    h("section", { class: "panel", "aria-labelledby": "statements" },
      h("h2", { id: "statements" }, "Statements"),
      table(null, [
        { label: "Partner", value: (st) => st.partner.name },
        { label: "Issued", num: true, value: (st) => points(st.issuedPoints) },
        { label: "Accepted", num: true, value: (st) => points(st.redeemedPoints) },
        { label: "Charge", num: true, value: (st) => money(st.issuanceCharge) },
        { label: "Reimbursement", num: true, value: (st) => money(st.reimbursement) },
        { label: "Net", num: true, value: (st) => money(st.net) },
        { label: "Download", value: (st) => h("div", { class: "row-actions" }, file(st, "csv"), file(st, "pdf")) },
      ], p.statements, { empty: "No partner had points in this period." })),
    h("section", { class: "panel", "aria-labelledby": "matrix" },
      h("h2", { id: "matrix" }, "Between partners"),
      heatMap(p.matrix)),
    h("section", { class: "panel", "aria-labelledby": "recon" },
      h("h2", { id: "recon" }, "Reconciliation"),
      p.statements.length ? reconForm : h("p", { class: "muted" }, "No statement to reconcile."),
      reportSlot));
}
