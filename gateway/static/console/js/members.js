// Members: look one up by card number or email; its balance and history.
import { gql } from "./api.js";
import { busy, field, h, points, when } from "./ui.js";

const LOOKUP = `query($card: String, $email: String, $after: String) {
  memberLookup(cardNumber: $card, email: $email) {
    id cardNumber email name balance { available pending onHold debt }
    activity(first: 20, after: $after) { edges { node { kind points orderRef at reason counterpartyCard } }
      pageInfo { hasNextPage endCursor } } } }`;

const KINDS = {
  earn: "Earned", bonus: "Bonus", reversal: "Refund (points taken back)", capture: "Paid with points",
  reward: "Reward", return: "Refund (points given back)", expiry: "Expired",
  transfer_in: "Received from a member", transfer_out: "Given to a member", adjustment: "Adjustment",
};

export async function membersView(main, query = "") {
  const q = h("input", { name: "q", required: true, value: query, autocomplete: "off",
    placeholder: "7000 0000 0000 0005 or anna@example.com" });
  const result = h("div", { id: "member-result" });
  const form = h("form", { class: "inline", role: "search" },
    field("Card number or email", q),
    h("button", { type: "submit" }, "Find member"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = q.value.trim();
    if (location.hash !== `#/members/${encodeURIComponent(value)}`) {
      location.hash = `#/members/${encodeURIComponent(value)}`;
    } else {
      busy(form, () => show(result, value));
    }
  });
  main.replaceChildren(h("h1", {}, "Members"), h("section", { class: "panel" }, form), result);
  if (query) await busy(form, () => show(result, query));
}

async function show(result, value) {
  const vars = value.includes("@") ? { email: value } : { card: value.replace(/[\s-]/g, "") };
  const d = await gql(LOOKUP, vars);
  const m = d.memberLookup;
  if (!m) {
    result.replaceChildren(h("p", { class: "panel" }, "No member has this card number or email."));
    return;
  }
  const rows = m.activity.edges.map((e) => e.node);
  const body = h("tbody");
  const more = h("button", { type: "button", class: "quiet" }, "Show older");
  let cursor = m.activity.pageInfo.endCursor;
  more.hidden = !m.activity.pageInfo.hasNextPage;
  const addRows = (items) => body.append(...items.map((a) => h("tr", {},
    h("td", { "data-label": "When" }, when(a.at)),
    h("td", { "data-label": "What" }, KINDS[a.kind] || a.kind),
    h("td", { "data-label": "Reference" }, [a.orderRef, a.reason, a.counterpartyCard].filter(Boolean).join(" · ") || "—"),
    h("td", { class: "num", "data-label": "Points" }, (a.points > 0 ? "+" : "") + points(a.points)))));
  addRows(rows);
  more.addEventListener("click", () => busy(more, async () => {
    const next = (await gql(LOOKUP, { ...vars, after: cursor })).memberLookup.activity;
    addRows(next.edges.map((e) => e.node));
    cursor = next.pageInfo.endCursor;
    more.hidden = !next.pageInfo.hasNextPage;
  }));
  const b = m.balance;
  result.replaceChildren(
    h("section", { class: "panel", "aria-labelledby": "member-name" },
      h("h2", { id: "member-name" }, m.name || m.email || "Member"),
      h("dl", { class: "facts" },
        h("dt", {}, "Card"), h("dd", {}, m.cardNumber.replace(/(\d{4})(?=\d)/g, "$1 ")),
        h("dt", {}, "Email"), h("dd", {}, m.email || "—")),
      h("h3", {}, "Balance"),
      h("div", { class: "kpis" },
        h("div", { class: "kpi" }, "Available", h("b", {}, points(b.available))),
        h("div", { class: "kpi" }, "Pending", h("b", {}, points(b.pending))),
        h("div", { class: "kpi" }, "On hold", h("b", {}, points(b.onHold))),
        b.debt ? h("div", { class: "kpi" }, "Owed", h("b", {}, points(b.debt))) : null)),
    h("section", { class: "panel", "aria-labelledby": "member-history" },
      h("h2", { id: "member-history" }, "History"),
      rows.length
        ? h("div", { class: "table-wrap" }, h("table", { class: "cards" },
          h("thead", {}, h("tr", {}, ["When", "What", "Reference", "Points"].map((t, i) => h("th", { scope: "col", class: i === 3 ? "num" : null }, t)))),
          body))
        : h("p", { class: "muted" }, "No movements yet."),
      h("div", { class: "actions" }, more)));
}
