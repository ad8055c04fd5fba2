// Small DOM and formatting helpers: elements are built node by node (text is never parsed as
// HTML), numbers and dates in the reader's locale.

/** h("p", {class: "x", onclick: fn}, "text", child, [children]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

const number = new Intl.NumberFormat(undefined);
const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  day: "numeric",
  month: "short",
  year: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

export const points = (n) => `${number.format(n)} ${Math.abs(n) === 1 ? "point" : "points"}`;
export const num = (n) => number.format(n);
export const date = (iso) => dateFmt.format(new Date(iso));
export const dateTime = (iso) => dateTimeFmt.format(new Date(iso));

export function money(m) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: m.currency }).format(
      Number(m.amount),
    );
  } catch {
    return `${m.amount} ${m.currency}`;
  }
}

/** A message region: `role=alert` for errors, `status` for good news. */
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** A labelled form field. */
export function field(label, attrs, hint) {
  const id = attrs.id || `f-${attrs.name}`;
  const hintId = hint ? `${id}-hint` : null;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    h("input", { ...attrs, id, "aria-describedby": hintId }),
  );
}

/** Run `action` for a form's submit: disables its button, shows the outcome in `out`. */
export function onSubmit(form, out, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    out.replaceChildren();
    try {
      const result = await action(new FormData(form));
      if (result) out.replaceChildren(result);
    } catch (error) {
      out.replaceChildren(notice("error", error.message));
    } finally {
      button.disabled = false;
    }
  });
}
