// The console's shell: sign-in, the navigation and the router (#/section/...).
import { finishSignIn, signIn, signOut, signedIn } from "./auth.js";
import { SignedOut } from "./api.js";
import { healthView } from "./health.js";
import { liabilityView } from "./liability.js";
import { membersView } from "./members.js";
import { partnersView, partnerView } from "./partners.js";
import { periodView, periodsView } from "./settlement.js";
import { h, quiet, say } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signout = document.getElementById("signout");

const ROUTES = [
  [/^#\/partners\/([^/]+)$/, (m) => partnerView(main, m[1]), "Partners"],
  [/^#\/partners$/, () => partnersView(main), "Partners"],
  [/^#\/members\/(.+)$/, (m) => membersView(main, decodeURIComponent(m[1])), "Members"],
  [/^#\/members$/, () => membersView(main), "Members"],
  [/^#\/liability$/, () => liabilityView(main), "Liability"],
  [/^#\/settlement\/([^/]+)$/, (m) => periodView(main, m[1]), "Settlement"],
  [/^#\/settlement$/, () => periodsView(main), "Settlement"],
  [/^#\/health$/, () => healthView(main), "Health"],
];

function signInPage(message) {
  nav.hidden = true;
  signout.hidden = true;
  const button = h("button", { type: "button" }, "Sign in");
  button.addEventListener("click", () => signIn());
  main.replaceChildren(h("section", { class: "panel signin" },
    h("h1", {}, "Coalition console"),
    h("p", {}, "For the coalition's operators: partners, members, liability and settlement."),
    message ? h("p", { class: "status bad", role: "alert" }, message) : null,
    button));
  document.title = "Sign in · Coalition console";
  button.focus();
}

let renderSeq = 0;

async function route() {
  if (!signedIn()) {
    signInPage();
    return;
  }
  nav.hidden = false;
  signout.hidden = false;
  const hash = location.hash || "#/partners";
  const found = ROUTES.map(([re, view, section]) => [hash.match(re), view, section]).find(([m]) => m);
  if (!found) {
    location.hash = "#/partners";
    return;
  }
  const [m, view, section] = found;
  for (const a of nav.querySelectorAll("a")) {
    if (a.textContent === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${section} · Coalition console`;
  const seq = ++renderSeq;
  main.setAttribute("aria-busy", "true");
  try {
    await view(m);
  } catch (err) {
    if (seq !== renderSeq) return;
    if (err instanceof SignedOut) {
      signInPage(err.message);
      return;
    }
    main.replaceChildren(h("h1", {}, section), h("p", { class: "status bad", role: "alert" },
      err.message || "This page could not be loaded. Please try again."));
  } finally {
    main.removeAttribute("aria-busy");
  }
}

window.addEventListener("hashchange", () => {
  quiet();
  route().then(() => main.focus({ preventScroll: true }));
});
window.addEventListener("console:signedout", () => signInPage("Your session has ended. Please sign in again."));
signout.addEventListener("click", async () => {
  await signOut();
  quiet();
  signInPage();
  say("You are signed out.");
});

async function start() {
  if (location.pathname === "/console/callback") {
    const problem = await finishSignIn();
    history.replaceState(null, "", "/console#/partners");
    if (problem) {
      signInPage(problem);
      return;
    }
  }
  await route();
}

start();
