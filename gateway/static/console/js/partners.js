// Partners: the list and a new partner; one partner's agreements, earn rule and OAuth clients.
import { gql, outcome } from "./api.js";
import { busy, day, dec, field, h, money, say, sayAndGo, table, when } from "./ui.js";

const SCOPES = [
  ["points:earn", "Award points for purchases"],
  ["points:redeem", "Accept points as payment"],
  ["catalog:write", "Publish rewards and offers"],
  ["settlement:read", "Read its settlement statements"],
];

const PARTNERS = `{ partners(first: 500) { id name category currency holdDays } }`;

export async function partnersView(main) {
  const { partners } = await gql(PARTNERS);
  const name = h("input", { name: "name", required: true, maxlength: 200, autocomplete: "off" });
  const category = h("input", { name: "category", required: true, maxlength: 100, placeholder: "fuel, grocery, cinema…" });
  const currency = h("input", { name: "currency", required: true, value: "RUB", pattern: "[A-Za-z]{3}", maxlength: 3, size: 4 });
  const form = h("form", { class: "stack", "aria-labelledby": "new-partner" },
    h("h2", { id: "new-partner" }, "New partner"),
    field("Name", name),
    field("Category", category),
    field("Currency of its purchases", currency, "Three letters, ISO 4217 (e.g. RUB, EUR)."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create partner")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(form, async () => {
      const d = await gql(`mutation($input: CreatePartnerInput!) { createPartner(input: $input) {
        __typename ... on CreatePartnerSuccess { partner { id name } } ... on Error { code message } } }`,
        { input: { name: name.value.trim(), category: category.value.trim(), currency: currency.value.trim().toUpperCase() } });
      const { partner } = outcome(d.createPartner);
      sayAndGo(`${partner.name} was created. Next: its agreement, earn rule and API client.`, `#/partners/${partner.id}`);
    });
  });
  main.replaceChildren(
    h("h1", {}, "Partners"),
    h("div", { class: "grid two" },
      h("section", { class: "panel", "aria-labelledby": "partner-list" },
        h("h2", { id: "partner-list" }, `${partners.length} partner${partners.length === 1 ? "" : "s"}`),
        table(null, [
          { label: "Name", value: (p) => h("a", { href: `#/partners/${p.id}` }, p.name) },
          { label: "Category", value: (p) => p.category },
          { label: "Currency", value: (p) => p.currency },
          { label: "Return window", num: true, value: (p) => `${p.holdDays} d` },
        ], partners, { empty: "No partners yet: create the first one." })),
      h("section", { class: "panel" }, form)));
}

const PARTNER = `query($p: ID!) {
  partners(first: 500) { id name category currency holdDays }
  earnRule(partnerId: $p) { baseRate categoryRates { category rate } holdDays maxRedeemShare maxPointsPerTransaction recordedAt }
  agreements(partnerId: $p) { id issuePrice { amount currency } redemptionPrice { amount currency } effectiveFrom recordedAt }
  partnerClients(partnerId: $p) { clientId name scopes disabledAt previousSecretExpiresAt }
}`;

function secretBox(title, clientId, secret) {
  return h("div", { class: "secret", role: "alert" },
    h("strong", {}, title),
    h("p", {}, "Store the secret now: it is shown only this once."),
    h("div", {}, "Client id", h("code", { "data-testid": "client-id" }, clientId)),
    h("div", {}, "Client secret", h("code", { "data-testid": "client-secret" }, secret)));
}

function localNow() {
  const d = new Date();
  d.setSeconds(0, 0);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

export async function partnerView(main, id) {
  const d = await gql(PARTNER, { p: id });
  const partner = d.partners.find((p) => p.id === id);
  if (!partner) {
    main.replaceChildren(h("h1", {}, "Partner not found"), h("p", {}, h("a", { href: "#/partners" }, "Back to the partners")));
    return;
  }
  const reload = () => partnerView(main, id);
  const secretSlot = h("div");

  // Agreements: the history, newest first, and a new one.
  const issue = h("input", { name: "issuePrice", required: true, inputmode: "decimal", placeholder: "1.20" });
  const redeem = h("input", { name: "redemptionPrice", required: true, inputmode: "decimal", placeholder: "0.95" });
  const from = h("input", { name: "effectiveFrom", type: "datetime-local", required: true, value: localNow() });
  const agreementForm = h("form", { class: "stack" },
    h("h3", {}, "New agreement"),
    field("Issue price per point", issue, "What the partner pays for each point it issues."),
    field("Redemption price per point", redeem, "What the coalition pays for each point it accepts."),
    field("In force from (your local time)", from),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Record agreement")));
  agreementForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(agreementForm, async () => {
      const r = await gql(`mutation($input: SetAgreementInput!) { setAgreement(input: $input) {
        __typename ... on Error { code message } } }`, { input: {
        partnerId: id, issuePrice: issue.value.trim(), redemptionPrice: redeem.value.trim(),
        effectiveFrom: new Date(from.value).toISOString() } });
      outcome(r.setAgreement);
      await reload();
      say("The agreement was recorded.");
    });
  });

  // Earn rule.
  const rule = d.earnRule;
  const base = h("input", { name: "baseRate", required: true, inputmode: "decimal", value: rule ? dec(rule.baseRate) : "0.1" });
  const hold = h("input", { name: "holdDays", type: "number", min: 0, max: 365, required: true, value: rule ? rule.holdDays : 14 });
  const share = h("input", { name: "maxRedeemShare", required: true, inputmode: "decimal", value: rule ? dec(rule.maxRedeemShare) : "0.5" });
  const cap = h("input", { name: "maxPoints", type: "number", min: 1, value: rule && rule.maxPointsPerTransaction ? rule.maxPointsPerTransaction : "" });
  const cats = h("textarea", { name: "categoryRates", rows: 3 },
    rule ? rule.categoryRates.map((c) => `${c.category}=${dec(c.rate)}`).join("\n") : "");
  const ruleForm = h("form", { class: "stack" },
    h("h3", {}, rule ? "Change the earn rule" : "Set the earn rule"),
    field("Points per currency unit", base),
    field("Category rates", cats, "One per line, as category=rate (e.g. fuel=0.2). Optional."),
    field("Return window (days)", hold, "Earned points stay pending this long."),
    field("Largest share of a bill payable in points", share, "Between 0 and 1, e.g. 0.5."),
    field("Most points per purchase", cap, "Optional."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Put rule in force")));
  ruleForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(ruleForm, async () => {
      const categoryRates = cats.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const [category, rate] = l.split("=").map((x) => (x || "").trim());
        return { category, rate };
      });
      const r = await gql(`mutation($input: SetEarnRuleInput!) { setEarnRule(input: $input) {
        __typename ... on Error { code message } } }`, { input: {
        partnerId: id, baseRate: base.value.trim(), categoryRates, holdDays: Number(hold.value),
        maxRedeemShare: share.value.trim(), maxPointsPerTransaction: cap.value ? Number(cap.value) : null } });
      outcome(r.setEarnRule);
      await reload();
      say("The earn rule is in force.");
    });
  });

  // OAuth clients.
  const boxes = SCOPES.map(([scope, text]) => h("label", {},
    h("input", { type: "checkbox", name: "scope", value: scope, checked: scope !== "catalog:write" }), text));
  const clientForm = h("form", { class: "stack" },
    h("h3", {}, "New API client"),
    h("fieldset", {}, h("legend", {}, "What it may do"), boxes),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create client")));
  clientForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(clientForm, async () => {
      const scopes = [...clientForm.querySelectorAll("input[name=scope]:checked")].map((b) => b.value);
      const r = await gql(`mutation($input: CreatePartnerClientInput!) { createPartnerClient(input: $input) {
        __typename ... on CreatePartnerClientSuccess { clientId clientSecret } ... on Error { code message } } }`,
        { input: { partnerId: id, scopes } });
      const c = outcome(r.createPartnerClient);
      await reload();
      say("The API client was created.");
      document.getElementById("secret-slot").replaceChildren(secretBox("New API client", c.clientId, c.clientSecret));
      document.getElementById("secret-slot").scrollIntoView({ block: "nearest" });
    });
  });

  const clientActions = (c) => {
    if (c.disabledAt) return h("span", { class: "muted" }, "—");
    const rotate = h("button", { type: "button", class: "quiet", "aria-label": `Rotate the secret of ${c.clientId}` }, "Rotate secret");
    rotate.addEventListener("click", () => busy(rotate, async () => {
      const r = await gql(`mutation($input: RotatePartnerClientSecretInput!) { rotatePartnerClientSecret(input: $input) {
        __typename ... on RotatePartnerClientSecretSuccess { clientId clientSecret } ... on Error { code message } } }`,
        { input: { clientId: c.clientId, graceHours: 24 } });
      const x = outcome(r.rotatePartnerClientSecret);
      await reload();
      say("A new secret was issued; the old one works for 24 more hours.");
      document.getElementById("secret-slot").replaceChildren(secretBox("New secret", x.clientId, x.clientSecret));
    }));
    const disable = h("button", { type: "button", class: "danger", "aria-label": `Disable ${c.clientId}` }, "Disable");
    disable.addEventListener("click", () => {
      if (disable.dataset.armed !== "yes") {
        disable.dataset.armed = "yes";
        disable.textContent = "Confirm: disable";
        return;
      }
      busy(disable, async () => {
        const r = await gql(`mutation($input: DisablePartnerClientInput!) { disablePartnerClient(input: $input) {
          __typename ... on Error { code message } } }`, { input: { clientId: c.clientId } });
        outcome(r.disablePartnerClient);
        await reload();
        say(`${c.clientId} is disabled: its credentials are refused from now on.`);
      });
    });
    return h("div", { class: "row-actions" }, rotate, disable);
  };

  main.replaceChildren(
    h("p", {}, h("a", { href: "#/partners" }, "← Partners")),
    h("h1", {}, partner.name),
    h("p", { class: "muted" }, `${partner.category} · purchases in ${partner.currency}`),
    h("div", { id: "secret-slot" }, secretSlot),
    h("div", { class: "grid two" },
      h("section", { class: "panel", "aria-labelledby": "agreements" },
        h("h2", { id: "agreements" }, "Agreements"),
        d.agreements.length ? null : h("p", { class: "muted" }, "No agreement yet: the partner cannot issue or accept points until one is in force."),
        table("History, newest first", [
          { label: "In force from", value: (a) => when(a.effectiveFrom) },
          { label: "Issue price", num: true, value: (a) => money(a.issuePrice) },
          { label: "Redemption price", num: true, value: (a) => money(a.redemptionPrice) },
          { label: "Recorded", value: (a) => day(a.recordedAt) },
        ], d.agreements, { empty: "" }),
        agreementForm),
      h("section", { class: "panel", "aria-labelledby": "earn-rule" },
        h("h2", { id: "earn-rule" }, "Earn rule"),
        rule
          ? h("dl", { class: "facts" },
            h("dt", {}, "Points per unit"), h("dd", {}, dec(rule.baseRate)),
            h("dt", {}, "Category rates"), h("dd", {}, rule.categoryRates.length ? rule.categoryRates.map((c) => `${c.category} ${dec(c.rate)}`).join(", ") : "none"),
            h("dt", {}, "Return window"), h("dd", {}, `${rule.holdDays} days`),
            h("dt", {}, "Share payable in points"), h("dd", {}, dec(rule.maxRedeemShare)),
            h("dt", {}, "Most points per purchase"), h("dd", {}, rule.maxPointsPerTransaction ?? "no limit"),
            h("dt", {}, "In force since"), h("dd", {}, when(rule.recordedAt)))
          : h("p", { class: "muted" }, "No earn rule yet."),
        ruleForm)),
    h("section", { class: "panel", "aria-labelledby": "clients" },
      h("h2", { id: "clients" }, "API clients"),
      table(null, [
        { label: "Client id", value: (c) => h("code", {}, c.clientId) },
        { label: "May", value: (c) => c.scopes.join(", ") },
        { label: "Status", value: (c) => (c.disabledAt
          ? h("span", { class: "badge bad" }, `Disabled ${day(c.disabledAt)}`)
          : h("span", { class: "badge ok" }, "Active")) },
        { label: "Previous secret", value: (c) => (c.previousSecretExpiresAt ? `works until ${when(c.previousSecretExpiresAt)}` : "—") },
        { label: "Actions", value: clientActions },
      ], d.partnerClients, { empty: "No API client yet." }),
      clientForm));
}
