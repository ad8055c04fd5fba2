// The points liability: now, and at the end of each closed period as a chart by issuer.
import { download, gql } from "./api.js";
import { busy, day, dec, h, money, points, s, table } from "./ui.js";

const Q = `{
  pointsLiability { points issuePrice value { amount currency } issuer { id name } }
  liabilityHistory(first: 12) { periodEnd totalPoints totalValue { amount currency }
    lines { points value { amount currency } issuer { id name } } }
}`;

// Colour-blind-safe palette (Okabe–Ito), dark enough on white.
const COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#7F3C8D"];

const issuerName = (line) => (line.issuer ? line.issuer.name : "Operator (sign-up and referral bonuses)");
const issuerKey = (line) => (line.issuer ? line.issuer.id : "operator");

function chart(snapshots, now) {
  // Oldest first, then today's figures.
  const points_ = [...snapshots].reverse().map((x) => ({ label: day(x.periodEnd), lines: x.lines }));
  points_.push({ label: "Now", lines: now });
  const series = new Map();
  points_.forEach((p, i) => p.lines.forEach((l) => {
    const k = issuerKey(l);
    if (!series.has(k)) series.set(k, { name: issuerName(l), values: new Array(points_.length).fill(0) });
    series.get(k).values[i] = Number(l.value.amount);
  }));
  const all = [...series.values()];
  const max = Math.max(1, ...all.flatMap((x) => x.values));
  const W = 760, H = 300, L = 70, R = 16, T = 16, B = 40;
  const x = (i) => L + (points_.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (points_.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => [
    s("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "#e5e7eb" }),
    s("text", { x: L - 8, y: y(max * f) + 4, "text-anchor": "end", "font-size": 12, fill: "#374151" },
      new Intl.NumberFormat("en-GB", { notation: "compact" }).format(max * f)),
  ]);
  const labels = points_.map((p, i) => s("text", { x: x(i), y: H - 14, "text-anchor": "middle", "font-size": 12, fill: "#374151" }, p.label));
  const lines = all.map((ser, k) => {
    const colour = COLOURS[k % COLOURS.length];
    return s("g", {},
      s("polyline", { points: ser.values.map((v, i) => `${x(i)},${y(v)}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2.5 }),
      ser.values.map((v, i) => s("circle", { cx: x(i), cy: y(v), r: 3.5, fill: colour },
        s("title", {}, `${ser.name}, ${points_[i].label}: ${v.toFixed(2)}`))));
  });
  const currency = (now[0] && now[0].value.currency) || "";
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title" },
    s("title", { id: "chart-title" }, `Points liability value (${currency}) by issuing partner at the end of each closed period and now`),
    grid, labels, lines);
  const legend = h("ul", { class: "legend" }, all.map((ser, k) => h("li", {},
    h("i", { style: null, "data-colour": COLOURS[k % COLOURS.length] }), ser.name)));
  legend.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.colour; });
  return h("figure", { class: "chart", style: null }, svg, legend,
    h("figcaption", { class: "hint" }, `Value in ${currency} at each issuer's issue price; the operator's points at the face value of a point.`));
}

export async function liabilityView(main) {
  const d = await gql(Q);
  const now = d.pointsLiability;
  const total = now.reduce((a, l) => a + Number(l.value.amount), 0);
  const currency = (now[0] && now[0].value.currency) || "";
  const csv = h("button", { type: "button", class: "quiet" }, "Download liability CSV");
  csv.addEventListener("click", () => busy(csv, () => download("/settlement/liability.csv", "liability.csv")));
  main.replaceChildren(
    h("h1", {}, "Points liability"),
    h("section", { class: "panel", "aria-labelledby": "liab-now" },
      h("h2", { id: "liab-now" }, "Outstanding now"),
      h("div", { class: "kpis" },
        h("div", { class: "kpi" }, "Points", h("b", {}, points(now.reduce((a, l) => a + l.points, 0)))),
        h("div", { class: "kpi" }, "Value", h("b", {}, money({ amount: total, currency })))),
      h("h3", {}, "Over time"),
      d.liabilityHistory.length || now.length ? chart(d.liabilityHistory, now) : h("p", { class: "muted" }, "No points outstanding yet."),
      h("h3", {}, "By issuing partner"),
      table(null, [
        { label: "Issuer", value: issuerName },
        { label: "Points", num: true, value: (l) => points(l.points) },
        { label: "Price per point", num: true, value: (l) => dec(l.issuePrice) },
        { label: "Value", num: true, value: (l) => money(l.value) },
      ], now, { empty: "No points outstanding." }),
      h("div", { class: "actions" }, csv)));
}
