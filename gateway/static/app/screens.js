// The screens of the member app. Each takes the <main> element and a `cleanup(fn)` to register
// what must stop when the member leaves the screen (timers, object URLs).

import { AppError, gql, mutate, qrImage } from "./api.js";
import { signIn, signOut } from "./auth.js";
import { date, dateTime, field, h, money, notice, num, onSubmit, points } from "./dom.js";

const idempotencyKey = () => crypto.randomUUID();

function heading(text, lead) {
  return lead ? [h("h1", {}, text), h("p", { class: "lead" }, lead)] : [h("h1", {}, text)];
}

function loading(view) {
  view.replaceChildren(h("p", { class: "muted", role: "status" }, "Loading…"));
}

function failed(view, error) {
  view.replaceChildren(
    notice("error", error.message || "Something went wrong on our side. Please try again."),
  );
}

// ---------------------------------------------------------------------------------- signed out

export function welcome(view) {
  view.replaceChildren(
    h(
      "section",
      { class: "card hero" },
      ...heading(
        "Your points, everywhere you shop",
        "Earn points at every Coalition partner and pay with them at any other.",
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { class: "primary", type: "button", onclick: () => signIn() }, "Sign in"),
        h("a", { class: "button secondary", href: "#/signup" }, "Create an account"),
      ),
    ),
  );
}

export function signup(view) {
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card", novalidate: false },
    field("Your name", { name: "name", autocomplete: "name", required: true, maxlength: 200 }),
    field("E-mail", { name: "email", type: "email", autocomplete: "email", required: true }),
    field(
      "Password",
      { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 },
      "At least 8 characters.",
    ),
    field(
      "Referral code (optional)",
      { name: "referralCode", autocomplete: "off", maxlength: 32 },
      "A friend's code: you both get a bonus after your first purchase.",
    ),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Create account")),
  );
  onSubmit(form, out, async (data) => {
    const input = {
      name: data.get("name").trim(),
      email: data.get("email").trim(),
      password: data.get("password"),
      referralCode: data.get("referralCode").trim() || null,
    };
    const result = await mutate(
      `mutation($input: RegisterMemberInput!) { registerMember(input: $input) {
         __typename ... on RegisterMemberSuccess { member { cardNumber } }
         ... on Error { code } ... on ValidationError { field } } }`,
      { input },
      "registerMember",
      { auth: false },
    );
    form.hidden = true;
    return h(
      "section",
      { class: "card" },
      h("h2", {}, "Welcome to Coalition!"),
      h("p", {}, "Your card number is ", h("strong", { class: "mono" }, group(result.member.cardNumber)), "."),
      h("p", {}, "Sign in with your e-mail and password to see your points."),
      h("button", { class: "primary", type: "button", onclick: () => signIn() }, "Sign in"),
    );
  });
  view.replaceChildren(
    ...heading("Create your account", "Join once, earn and spend at every partner."),
    form,
    out,
    h("p", { class: "muted" }, "Already a member? ", h("a", { href: "#/", onclick: (e) => (e.preventDefault(), signIn()) }, "Sign in")),
  );
}

// ---------------------------------------------------------------------------------------- home

const HOME = `{
  me { name cardNumber tier
       tierStatus { name multiplier qualifyingSpend { amount currency }
                    next { name threshold { amount currency } } }
       balance { available pending onHold total debt }
       pendingPoints { points availableAt }
       expiringPoints(days: 30) }
  partners { id name }
}`;

const group = (digits) => digits.replace(/(\d{4})(?=\d)/g, "$1 ");

export async function home(view, cleanup) {
  loading(view);
  let data;
  try {
    data = await gql(HOME);
  } catch (error) {
    return failed(view, error);
  }
  const me = data.me;
  const b = me.balance;
  const stat = (label, key, value, extra) =>
    h(
      "div",
      { class: "stat" },
      h("dt", {}, label),
      h("dd", {}, h("span", { "data-balance": key }, num(value)), " ", h("span", { class: "unit" }, "points")),
      extra,
    );
  const pendingList = me.pendingPoints.length
    ? h(
        "ul",
        { class: "parts", "aria-label": "When pending points become available" },
        me.pendingPoints.map((p) => h("li", {}, `${points(p.points)} on ${date(p.availableAt)}`)),
      )
    : null;
  view.replaceChildren(
    ...heading(`Hello, ${me.name || "member"}`),
    h(
      "section",
      { class: "card balance", "aria-labelledby": "balance-h" },
      h(
        "div",
        { class: "row" },
        h("h2", { id: "balance-h" }, "Your points"),
        h("span", { class: "live", id: "live", "aria-live": "polite" }, "Connecting…"),
      ),
      h(
        "p",
        { class: "big" },
        h("span", { "data-balance": "available" }, num(b.available)),
        h("span", { class: "unit" }, " available"),
      ),
      h(
        "dl",
        { class: "stats" },
        stat("Pending", "pending", b.pending, pendingList),
        stat("On hold", "onHold", b.onHold),
        stat("Expiring in 30 days", "expiring", me.expiringPoints),
      ),
      b.debt > 0
        ? notice("info", `You owe ${points(b.debt)} after a refund; your next points repay it first.`)
        : null,
      h("p", { class: "muted" }, "Card ", h("span", { class: "mono" }, group(me.cardNumber))),
    ),
    payPanel(data.partners, cleanup),
    tierCard(me),
  );
}

function tierCard(me) {
  const s = me.tierStatus;
  const spent = Number(s.qualifyingSpend.amount);
  const body = [
    h("p", { class: "big tier-name" }, s.name || "No tier yet"),
    h("p", {}, `Your points count ×${s.multiplier}. Spent in the last 12 months: ${money(s.qualifyingSpend)}.`),
  ];
  if (s.next) {
    const goal = Number(s.next.threshold.amount);
    const pct = Math.max(0, Math.min(100, Math.floor((spent / goal) * 100)));
    body.push(
      h("label", { for: "tier-progress" }, `${pct}% of the way to ${s.next.name} (${money(s.next.threshold)})`),
      h("progress", { id: "tier-progress", max: 100, value: pct }, `${pct}%`),
    );
  } else if (s.name) {
    body.push(h("p", { class: "muted" }, "You hold the highest tier."));
  }
  return h("section", { class: "card", "aria-labelledby": "tier-h" }, h("h2", { id: "tier-h" }, "Your tier"), ...body);
}

function payPanel(partners, cleanup) {
  const out = h("div", { class: "pay-out" });
  const options = h(
    "details",
    { class: "options" },
    h("summary", {}, "Options"),
    h(
      "div",
      { class: "field" },
      h("label", { for: "pay-partner" }, "Only at this partner"),
      h(
        "select",
        { id: "pay-partner", name: "partnerId" },
        h("option", { value: "" }, "Any partner"),
        partners.map((p) => h("option", { value: p.id }, p.name)),
      ),
    ),
    field("Most points to spend", { name: "maxPoints", type: "number", min: 1, step: 1, inputmode: "numeric" }, "Leave empty for no limit."),
  );
  const form = h(
    "form",
    {},
    options,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Pay with points")),
  );
  let stop = () => {};
  cleanup(() => stop());
  onSubmit(form, out, async (data) => {
    stop();
    const maxPoints = data.get("maxPoints") ? Number(data.get("maxPoints")) : null;
    if (maxPoints !== null && !(Number.isInteger(maxPoints) && maxPoints > 0)) {
      throw new AppError("VALIDATION", "maxPoints");
    }
    const result = await mutate(
      `mutation($input: CreateRedemptionCodeInput) { createRedemptionCode(input: $input) {
         __typename ... on CreateRedemptionCodeSuccess { code expiresAt }
         ... on Error { code } ... on ValidationError { field } } }`,
      { input: { maxPoints, partnerId: data.get("partnerId") || null } },
      "createRedemptionCode",
    );
    const shown = await showCode(result.code, result.expiresAt);
    stop = shown.stop;
    return shown.element;
  });
  return h(
    "section",
    { class: "card", "aria-labelledby": "pay-h" },
    h("h2", { id: "pay-h" }, "Pay at the till"),
    h("p", {}, "Show the code to the cashier, or let them scan it. It works once."),
    form,
    out,
  );
}

async function showCode(code, expiresAt) {
  const url = await qrImage(code);
  const timer = h("p", { class: "countdown", role: "timer", "aria-live": "off" });
  const deadline = new Date(expiresAt).getTime();
  const element = h(
    "div",
    { class: "code" },
    h("img", { class: "qr", src: url, alt: `QR code of payment code ${group(code)}`, width: 232, height: 232 }),
    h("p", { class: "digits mono", "aria-label": `Payment code ${code.split("").join(" ")}` }, group(code)),
    timer,
  );
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    if (left === 0) {
      element.classList.add("expired");
      timer.textContent = "This code has expired. Make a new one.";
      clearInterval(interval);
      return;
    }
    const m = Math.floor(left / 60);
    const s = String(left % 60).padStart(2, "0");
    timer.textContent = `Expires in ${m}:${s}`;
  };
  const interval = setInterval(tick, 1000);
  tick();
  return {
    element,
    stop: () => {
      clearInterval(interval);
      URL.revokeObjectURL(url);
    },
  };
}

// ------------------------------------------------------------------------------------ activity

const ACTIVITY = `query($after: String) { me { activity(first: 10, after: $after) {
  edges { node { id kind points orderRef at reason counterpartyCard
                 breakdown { source points } partner { name } } }
  pageInfo { hasNextPage endCursor } } } }`;

const SOURCES = { BASE: "Base", TIER: "Tier bonus", OFFER: "Offer" };

// "************0005" -> "card ending 0005"
const card = (masked) => (masked ? `card ending ${masked.replace(/\D/g, "").slice(-4)}` : "another member");

function describe(a) {
  const at = a.partner ? ` at ${a.partner.name}` : "";
  switch (a.kind) {
    case "earn":
      return `Earned${at}`;
    case "bonus":
      if (a.reason === "signup") return "Welcome bonus";
      if (a.reason === "referral") return "Referral bonus";
      return `Bonus${at}${a.reason ? `: ${a.reason}` : ""}`;
    case "capture":
      return `Paid with points${at}`;
    case "reward":
      return `Reward${at}`;
    case "reversal":
      return `Points taken back for a refund${at}`;
    case "return":
      return `Points returned for a refund${at}`;
    case "expiry":
      return "Points expired";
    case "transfer_in":
      return `Received from ${card(a.counterpartyCard)}`;
    case "transfer_out":
      return `Sent to ${card(a.counterpartyCard)}`;
    default:
      return "Points movement";
  }
}

export async function activity(view) {
  const list = h("ol", { class: "activity", "aria-label": "Activity, newest first" });
  const more = h("button", { class: "secondary", type: "button", hidden: true }, "Show more");
  const out = h("div", { "aria-live": "polite" });
  let after = null;
  async function page() {
    more.disabled = true;
    try {
      const data = await gql(ACTIVITY, { after });
      const conn = data.me.activity;
      for (const { node: a } of conn.edges) {
        list.append(
          h(
            "li",
            { class: "item" },
            h(
              "div",
              { class: "row" },
              h("span", { class: "what" }, describe(a)),
              h("span", { class: a.points < 0 ? "amount minus" : "amount plus" }, `${a.points > 0 ? "+" : "−"}${num(Math.abs(a.points))}`),
            ),
            h("p", { class: "muted small" }, dateTime(a.at), a.orderRef && a.kind !== "reward" ? ` · order ${a.orderRef}` : ""),
            a.breakdown && a.breakdown.length
              ? h(
                  "ul",
                  { class: "breakdown", "aria-label": "How these points were counted" },
                  a.breakdown.map((l) => h("li", {}, `${SOURCES[l.source] || l.source}: ${num(l.points)}`)),
                )
              : null,
          ),
        );
      }
      if (!list.children.length) list.append(h("li", { class: "muted" }, "Nothing yet: your points will show here."));
      after = conn.pageInfo.endCursor;
      more.hidden = !conn.pageInfo.hasNextPage;
    } catch (error) {
      out.replaceChildren(notice("error", error.message));
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", page);
  view.replaceChildren(...heading("Activity"), list, out, h("div", { class: "actions" }, more));
  await page();
}

// ------------------------------------------------------------------------------------ partners

const trim = (x) => String(Number(x.toPrecision(6)));

/** "0.1" RUB -> "1 point per 10 RUB"; "2" -> "2 points per 1 RUB"; "0.3" -> "30 points per 100 RUB". */
function rate(text, currency) {
  const r = Number(text);
  if (!(r > 0)) return "No points";
  if (r >= 1) return `${trim(r)} ${r === 1 ? "point" : "points"} per 1 ${currency}`;
  const per = 1 / r;
  if (Math.abs(per - Math.round(per)) < 1e-9) return `1 point per ${Math.round(per)} ${currency}`;
  return `${trim(r * 100)} points per 100 ${currency}`;
}

export async function partners(view) {
  loading(view);
  try {
    const { partners: list } = await gql("{ partners { id name category currency holdDays } }");
    const shown = list.slice(0, 30);
    const rules = shown.length
      ? await gql(
          `query(${shown.map((_, i) => `$p${i}: ID!`).join(", ")}) { ${shown
            .map((_, i) => `r${i}: earnRule(partnerId: $p${i}) { ...rule }`)
            .join(" ")} }
           fragment rule on EarnRule { baseRate categoryRates { category rate } holdDays maxRedeemShare }`,
          Object.fromEntries(shown.map((p, i) => [`p${i}`, p.id])),
        )
      : {};
    view.replaceChildren(
      ...heading("Partners", "Where you earn and spend points."),
      h(
        "ul",
        { class: "grid" },
        shown.map((p, i) => {
          const r = rules[`r${i}`];
          return h(
            "li",
            { class: "card partner" },
            h("h2", {}, p.name),
            h("p", { class: "muted" }, p.category),
            r
              ? [
                  h("p", {}, `${rate(r.baseRate, p.currency)} spent`),
                  r.categoryRates.length
                    ? h(
                        "ul",
                        { class: "rates", "aria-label": "Rates of some categories" },
                        r.categoryRates.map((c) => h("li", {}, `${c.category}: ${rate(c.rate, p.currency)}`)),
                      )
                    : null,
                  h(
                    "p",
                    { class: "muted small" },
                    r.holdDays > 0 ? `Points are yours to spend ${r.holdDays} days after the purchase. ` : "Points are yours to spend at once. ",
                    `Pay up to ${Math.round(Number(r.maxRedeemShare) * 100)}% of a bill with points.`,
                  ),
                ]
              : h("p", {}, "No points to earn here, but you can spend yours."),
          );
        }),
      ),
    );
  } catch (error) {
    failed(view, error);
  }
}

// ------------------------------------------------------------------------------------- rewards

const REWARDS = `query($after: String) {
  rewards(first: 12, after: $after) { edges { node { id title description kind pricePoints stockLeft partner { name } } }
                                       pageInfo { hasNextPage endCursor } }
  me { balance { available } rewardRedemptions(first: 10) { edges { node { id points voucherCode createdAt reward { title } } } } }
}`;

const KINDS = { VOUCHER: "Voucher", GOODS: "Goods", CHARITY: "Donation" };

export async function rewards(view) {
  loading(view);
  let data;
  try {
    data = await gql(REWARDS, { after: null });
  } catch (error) {
    return failed(view, error);
  }
  const mine = h("ul", { class: "list" });
  const drawMine = (edges) =>
    mine.replaceChildren(
      ...(edges.length
        ? edges.map(({ node: r }) =>
            h(
              "li",
              { class: "item" },
              h("div", { class: "row" }, h("span", { class: "what" }, r.reward.title), h("span", { class: "amount minus" }, `−${num(r.points)}`)),
              r.voucherCode ? h("p", {}, "Voucher code: ", h("strong", { class: "mono voucher" }, r.voucherCode)) : null,
              h("p", { class: "muted small" }, dateTime(r.createdAt)),
            ),
          )
        : [h("li", { class: "muted" }, "You haven't redeemed a reward yet.")]),
    );
  drawMine(data.me.rewardRedemptions.edges);
  const available = h("strong", {}, points(data.me.balance.available));
  const grid = h("ul", { class: "grid" });
  const more = h("button", { class: "secondary", type: "button" }, "Show more rewards");
  let after = null;
  const draw = (conn) => {
    for (const { node: r } of conn.edges) grid.append(rewardCard(r, available, drawMine));
    after = conn.pageInfo.endCursor;
    more.hidden = !conn.pageInfo.hasNextPage;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      draw((await gql(REWARDS, { after })).rewards);
    } finally {
      more.disabled = false;
    }
  });
  draw(data.rewards);
  view.replaceChildren(
    ...heading("Rewards"),
    h("p", {}, "You have ", available, " to spend."),
    grid,
    h("div", { class: "actions" }, more),
    h("h2", {}, "Your rewards"),
    mine,
  );
}

function rewardCard(r, available, drawMine) {
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { class: "primary", type: "button" }, `Redeem for ${points(r.pricePoints)}`);
  const soldOut = r.stockLeft === 0;
  button.disabled = soldOut;
  const key = idempotencyKey();
  button.addEventListener("click", async () => {
    button.disabled = true;
    out.replaceChildren();
    try {
      const result = await mutate(
        `mutation($input: RedeemRewardInput!) { redeemReward(input: $input) {
           __typename ... on RedeemRewardSuccess { redemption { id points voucherCode } }
           ... on Error { code } ... on ValidationError { field } } }`,
        { input: { rewardId: r.id, idempotencyKey: key } },
        "redeemReward",
      );
      const v = result.redemption.voucherCode;
      out.replaceChildren(
        notice("success", v ? `Done! Your voucher code is ${v}.` : "Done! Enjoy your reward."),
      );
      const fresh = await gql(REWARDS, { after: null });
      available.textContent = points(fresh.me.balance.available);
      drawMine(fresh.me.rewardRedemptions.edges);
    } catch (error) {
      out.replaceChildren(notice("error", error.message));
      button.disabled = false;
    }
  });
  return h(
    "li",
    { class: "card reward" },
    h("p", { class: "tag" }, KINDS[r.kind] || r.kind, r.partner ? ` · ${r.partner.name}` : ""),
    h("h3", {}, r.title),
    r.description ? h("p", {}, r.description) : null,
    soldOut || r.stockLeft !== null
      ? h("p", { class: "muted small" }, soldOut ? "Out of stock" : `${num(r.stockLeft)} left`)
      : null,
    button,
    out,
  );
}

// -------------------------------------------------------------------------------------- offers

const OFFERS = `{ offers(first: 30) { edges { node { id name description multiplier bonusPoints category
  endsAt requiresActivation activated minTier partner { name } } } } }`;

export async function offers(view) {
  loading(view);
  let data;
  try {
    data = await gql(OFFERS);
  } catch (error) {
    return failed(view, error);
  }
  const list = h("ul", { class: "grid" });
  const draw = (edges) =>
    list.replaceChildren(
      ...(edges.length ? edges.map(({ node }) => offerCard(node)) : [h("li", { class: "muted" }, "No offers for you right now.")]),
    );
  draw(data.offers.edges);
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card inline" },
    field("Promo code", { name: "code", autocomplete: "off", required: true, maxlength: 64 }),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Apply code")),
  );
  onSubmit(form, out, async (fd) => {
    const result = await mutate(
      `mutation($input: ApplyPromoCodeInput!) { applyPromoCode(input: $input) {
         __typename ... on ApplyPromoCodeSuccess { offer { name } }
         ... on Error { code } ... on ValidationError { field } } }`,
      { input: { code: fd.get("code").trim() } },
      "applyPromoCode",
    );
    form.reset();
    draw((await gql(OFFERS)).offers.edges);
    return notice("success", `Code applied: “${result.offer.name}” is now active for you.`);
  });
  view.replaceChildren(...heading("Offers", "Extra points on your purchases."), form, out, list);
}

function offerCard(o) {
  const out = h("div", { "aria-live": "polite" });
  const what = o.multiplier ? `×${o.multiplier} points` : `+${num(o.bonusPoints)} bonus points`;
  let action = null;
  if (o.requiresActivation && !o.activated) {
    action = h("button", { class: "primary", type: "button" }, "Activate");
    action.addEventListener("click", async () => {
      action.disabled = true;
      try {
        await mutate(
          `mutation($input: ActivateOfferInput!) { activateOffer(input: $input) {
             __typename ... on Error { code } ... on ValidationError { field } } }`,
          { input: { offerId: o.id } },
          "activateOffer",
        );
        action.replaceWith(h("p", { class: "badge" }, "Activated"));
        out.replaceChildren(notice("success", "Activated: it applies to your next purchases."));
      } catch (error) {
        out.replaceChildren(notice("error", error.message));
        action.disabled = false;
      }
    });
  } else if (o.activated) {
    action = h("p", { class: "badge" }, "Activated");
  }
  return h(
    "li",
    { class: "card offer" },
    h("p", { class: "tag" }, o.partner ? o.partner.name : "Every partner"),
    h("h3", {}, o.name),
    h("p", { class: "big" }, what),
    o.description ? h("p", {}, o.description) : null,
    h(
      "p",
      { class: "muted small" },
      [o.category ? `On ${o.category}` : null, o.minTier ? `${o.minTier} members` : null, o.endsAt ? `until ${date(o.endsAt)}` : null]
        .filter(Boolean)
        .join(" · "),
    ),
    action,
    out,
  );
}

// ------------------------------------------------------------------------------------ transfer

export async function transfer(view) {
  const out = h("div", { "aria-live": "polite" });
  let key = idempotencyKey();
  const form = h(
    "form",
    { class: "card" },
    field(
      "Their card number",
      { name: "toCardNumber", inputmode: "numeric", autocomplete: "off", required: true, pattern: "[0-9 ]{16,19}", maxlength: 19 },
      "16 digits, on the back of their card or in their app.",
    ),
    field("Points to give", { name: "points", type: "number", min: 1, step: 1, inputmode: "numeric", required: true }),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Transfer points")),
  );
  form.addEventListener("input", () => {
    key = idempotencyKey(); // a changed request is a new one
  });
  onSubmit(form, out, async (fd) => {
    const count = Number(fd.get("points"));
    if (!Number.isInteger(count) || count <= 0) throw new AppError("VALIDATION", "points");
    const result = await mutate(
      `mutation($input: TransferPointsInput!) { transferPoints(input: $input) {
         __typename ... on TransferPointsSuccess { transfer { points } }
         ... on Error { code } ... on ValidationError { field } } }`,
      { input: { toCardNumber: fd.get("toCardNumber").replace(/\s+/g, ""), points: count, idempotencyKey: key } },
      "transferPoints",
      { words: { LIMIT_EXCEEDED: "That's more than you can transfer in one day. Try fewer points, or tomorrow." } },
    );
    form.reset();
    key = idempotencyKey();
    return notice("success", `Sent ${points(result.transfer.points)}.`);
  });
  view.replaceChildren(
    ...heading("Transfer points", "Give some of your available points to family or a friend. The points keep their expiry date."),
    form,
    out,
  );
}

// ------------------------------------------------------------------------------------- account

export async function account(view) {
  loading(view);
  let data;
  try {
    data = await gql(`{ me { name email cardNumber referralCode tier }
                       tiers { tiers { name threshold { amount currency } multiplier } } }`);
  } catch (error) {
    return failed(view, error);
  }
  const me = data.me;
  const ladder = data.tiers.tiers;
  view.replaceChildren(
    ...heading("Account"),
    h(
      "section",
      { class: "card" },
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Name"),
        h("dd", {}, me.name || "—"),
        h("dt", {}, "E-mail"),
        h("dd", {}, me.email || "—"),
        h("dt", {}, "Card number"),
        h("dd", { class: "mono" }, group(me.cardNumber)),
        h("dt", {}, "Tier"),
        h("dd", {}, me.tier || "No tier yet"),
      ),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "ref-h" },
      h("h2", { id: "ref-h" }, "Invite a friend"),
      h("p", {}, "Give your friends this code when they join: you both get bonus points after their first purchase."),
      h("p", { class: "big mono", id: "referral-code" }, me.referralCode),
    ),
    ladder.length
      ? h(
          "section",
          { class: "card", "aria-labelledby": "ladder-h" },
          h("h2", { id: "ladder-h" }, "Tiers"),
          h(
            "table",
            {},
            h("caption", { class: "muted" }, "Spend over 12 months at any partner to reach a tier."),
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Tier"), h("th", { scope: "col" }, "From"), h("th", { scope: "col" }, "Points"))),
            h(
              "tbody",
              {},
              ladder.map((t) =>
                h("tr", { class: t.name === me.tier ? "current" : null }, h("th", { scope: "row" }, t.name), h("td", {}, money(t.threshold)), h("td", {}, `×${t.multiplier}`)),
              ),
            ),
          ),
        )
      : null,
    h(
      "div",
      { class: "actions" },
      h(
        "button",
        {
          class: "secondary",
          type: "button",
          onclick: async () => {
            await signOut();
            location.hash = "#/signed-out";
          },
        },
        "Sign out",
      ),
    ),
  );
}

export function signedOut(view) {
  view.replaceChildren(
    h(
      "section",
      { class: "card hero" },
      h("h1", {}, "You are signed out"),
      h("p", {}, "See you soon."),
      h("div", { class: "actions" }, h("button", { class: "primary", type: "button", onclick: () => signIn() }, "Sign in again")),
    ),
  );
}
