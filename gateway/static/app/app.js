// The member app: one page, screens chosen by the URL fragment (#/activity ...). /app/callback
// finishes the sign-in, then the app goes on at /app.

import { completeSignIn, signedIn } from "./auth.js";
import { h, notice, num } from "./dom.js";
import { watchBalance } from "./live.js";
import * as screens from "./screens.js";

const SIGNED_IN = {
  "/": [screens.home, "Home"],
  "/activity": [screens.activity, "Activity"],
  "/rewards": [screens.rewards, "Rewards"],
  "/offers": [screens.offers, "Offers"],
  "/partners": [screens.partners, "Partners"],
  "/transfer": [screens.transfer, "Transfer points"],
  "/account": [screens.account, "Account"],
};
const SIGNED_OUT = {
  "/": [screens.welcome, "Welcome"],
  "/signup": [screens.signup, "Create an account"],
  "/signed-out": [screens.signedOut, "Signed out"],
};

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let cleanups = [];
let stopLive = null;
let liveState = "connecting";

function route() {
  const path = (location.hash.replace(/^#/, "") || "/").split("?")[0];
  return path.startsWith("/") ? path : "/";
}

function showLive(state) {
  liveState = state;
  const badge = document.getElementById("live");
  if (!badge) return;
  badge.textContent = state === "live" ? "Live" : "Offline: reconnecting…";
  badge.classList.toggle("on", state === "live");
}

function showBalance(balance) {
  for (const el of document.querySelectorAll("[data-balance]")) {
    const key = el.dataset.balance;
    if (key in balance) el.textContent = num(balance[key]);
  }
}

async function render() {
  for (const fn of cleanups) fn();
  cleanups = [];
  const inside = signedIn();
  nav.hidden = !inside;
  const table = inside ? SIGNED_IN : SIGNED_OUT;
  const path = route();
  const [screen, title] = table[path] || (inside ? SIGNED_IN["/"] : SIGNED_OUT["/"]);
  document.title = `${title} · Coalition`;
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === `#${path}`) {
      link.setAttribute("aria-current", "page");
      nav.scrollLeft = Math.max(0, link.offsetLeft - (nav.clientWidth - link.offsetWidth) / 2);
    } else {
      link.removeAttribute("aria-current");
    }
  }
  if (inside && !stopLive) stopLive = watchBalance(showBalance, showLive);
  if (!inside && stopLive) {
    stopLive();
    stopLive = null;
    liveState = "connecting";
  }
  await screen(view, (fn) => cleanups.push(fn));
  if (inside && liveState !== "connecting") showLive(liveState);
  view.focus({ preventScroll: true });
}

async function start() {
  if (location.pathname === "/app/callback") {
    let next = "#/";
    try {
      next = await completeSignIn(new URLSearchParams(location.search));
    } catch (error) {
      history.replaceState(null, "", "/app#/");
      view.replaceChildren(notice("error", error.message), h("p", {}, h("a", { href: "#/" }, "Back")));
      window.addEventListener("hashchange", render);
      return;
    }
    // The code has been used: take it out of the address bar and the history.
    history.replaceState(null, "", `/app${next}`);
  } else if (location.pathname !== "/app") {
    history.replaceState(null, "", `/app${location.hash}`);
  }
  window.addEventListener("hashchange", render);
  await render();
}

start();
