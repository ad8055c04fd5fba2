// Sign-in as the public OAuth client `coalition-app`: authorization code with PKCE (S256).
// Tokens live in sessionStorage: they end with the tab, and the page's Content-Security-Policy
// lets no script but this app's own run to read them.

const CLIENT_ID = "coalition-app";
const SCOPE = "member";
const KEY = "coalition.tokens";
const PENDING = "coalition.signin";
const REFRESH_MARGIN_MS = 30_000;

const redirectUri = () => `${location.origin}/app/callback`;

function b64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

function save(tokens) {
  sessionStorage.setItem(KEY, JSON.stringify(tokens));
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function signedIn() {
  return load() !== null;
}

/** Go to the login page; `/app/callback` comes back with a code. */
export async function signIn(returnTo = "#/") {
  const verifier = randomString(48);
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomString(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, returnTo }));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: redirectUri(),
    scope: SCOPE,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`/oauth/authorize?${q}`);
}

function store(body) {
  save({
    access: body.access_token,
    refresh: body.refresh_token || null,
    expiresAt: Date.now() + (body.expires_in || 300) * 1000,
  });
}

async function tokenRequest(fields) {
  let response;
  try {
    response = await fetch("/oauth/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: CLIENT_ID, ...fields }),
    });
  } catch {
    return { ok: false, error: "network" };
  }
  const body = await response.json().catch(() => ({}));
  return { ok: response.ok, body, error: body.error };
}

/** On /app/callback: trade the code for tokens. Answers where to go next, or throws a
 * sentence for the member. */
export async function completeSignIn(params) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (params.get("error") === "access_denied") throw new Error("You cancelled the sign-in.");
  if (!pending || params.get("state") !== pending.state || !params.get("code")) {
    throw new Error("This sign-in link has expired. Please sign in again.");
  }
  const result = await tokenRequest({
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: redirectUri(),
    code_verifier: pending.verifier,
  });
  if (!result.ok) {
    throw new Error(
      result.error === "network"
        ? "We couldn't reach Coalition. Check your connection and try again."
        : "Your sign-in could not be completed. Please sign in again.",
    );
  }
  store(result.body);
  return pending.returnTo || "#/";
}

let refreshing = null;

async function refresh() {
  const tokens = load();
  if (!tokens || !tokens.refresh) return false;
  const result = await tokenRequest({ grant_type: "refresh_token", refresh_token: tokens.refresh });
  if (!result.ok) {
    if (result.error !== "network") sessionStorage.removeItem(KEY);
    return false;
  }
  store(result.body);
  return true;
}

/** A valid access token (refreshed when about to expire), or null when signed out. */
export async function accessToken({ force = false } = {}) {
  const tokens = load();
  if (!tokens) return null;
  if (force || Date.now() > tokens.expiresAt - REFRESH_MARGIN_MS) {
    refreshing ??= refresh().finally(() => {
      refreshing = null;
    });
    if (!(await refreshing)) return force ? null : load()?.access ?? null;
  }
  return load()?.access ?? null;
}

/** Revoke the tokens (RFC 7009) and forget them. */
export async function signOut() {
  const tokens = load();
  sessionStorage.removeItem(KEY);
  if (!tokens) return;
  const revoke = (token, hint) =>
    fetch("/oauth/revoke", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: CLIENT_ID, token, token_type_hint: hint }),
    }).catch(() => undefined);
  await Promise.all([
    tokens.refresh ? revoke(tokens.refresh, "refresh_token") : null,
    revoke(tokens.access, "access_token"),
  ]);
}
