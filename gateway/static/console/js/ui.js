// Small DOM helpers: build elements, format numbers and dates, say things to the person.
import { SignedOut } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

const numberFmt = new Intl.NumberFormat("en-GB");
export const points = (n) => (n === null || n === undefined ? "—" : numberFmt.format(n));

export function money(m) {
  if (!m) return "—";
  const n = Number(m.amount);
  return `${new Intl.NumberFormat("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(n)} ${m.currency || ""}`.trim();
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" }) + " UTC";
}

export function day(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleDateString("en-GB", { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" });
}

// A period's days as people say them: its end is exclusive.
export function span(start, end) {
  return `${day(start)} – ${day(new Date(new Date(end).getTime() - 1).toISOString())}`;
}

export function say(message, kind = "ok") {
  const el = document.getElementById("status");
  el.className = `status ${kind}`;
  el.textContent = message;
}

// Say it, then go to `hash`: the message stays for the page it leads to.
export function sayAndGo(message, hash) {
  say(message);
  document.getElementById("status").dataset.fresh = "yes";
  location.hash = hash;
}

// A decimal string without its trailing zeros ("0.10000000" -> "0.1").
export function dec(value) {
  if (value === null || value === undefined) return "—";
  const v = String(value);
  return v.includes(".") ? v.replace(/0+$/, "").replace(/\.$/, "") : v;
}

// Clear the status line, unless it was just set (by the step that led to this navigation).
export function quiet() {
  const el = document.getElementById("status");
  if (el.dataset.fresh === "yes") {
    delete el.dataset.fresh;
    return;
  }
  el.className = "status";
  el.textContent = "";
}

export function table(caption, columns, rows, { empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { class: "cards" },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null, "data-label": c.label }, c.value(r))))))));
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return [h("label", { for: id }, label), input, hintEl];
}

// Run `work` for a form or button: disables it meanwhile, says what failed in words.
export async function busy(control, work) {
  control.disabled = true;
  if (control.tagName === "FORM") control.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    return await work();
  } catch (err) {
    say(err.message || "Something went wrong. Please try again.", "bad");
    if (err instanceof SignedOut) window.dispatchEvent(new Event("console:signedout"));
    return undefined;
  } finally {
    control.disabled = false;
    if (control.tagName === "FORM") control.querySelectorAll("button").forEach((b) => { b.disabled = false; });
  }
}

// The UTC instant of a <input type="date"> value (midnight UTC that day).
export function utcDay(value) {
  return `${value}T00:00:00Z`;
}
