// Sign-in as the public OAuth client `coalition-console`: authorization code + PKCE (S256).
// The tokens live in sessionStorage (this tab only); the access token is refreshed shortly
// before it expires, and the refresh token is revoked on sign-out.

export const CLIENT_ID = "coalition-console";
const STORE = "coalition-console:tokens";
const PENDING = "coalition-console:pkce";

const redirectUri = () => `${location.origin}/console/callback`;

function b64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

export async function signIn() {
  const verifier = random(48);
  const state = random(16);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: CLIENT_ID,
    redirect_uri: redirectUri(),
    scope: "operator",
    state,
    code_challenge: b64url(digest),
    code_challenge_method: "S256",
  });
  location.assign(`/oauth/authorize?${params}`);
}

function keep(body) {
  const tokens = {
    access: body.access_token,
    refresh: body.refresh_token,
    expiresAt: Date.now() + (body.expires_in || 600) * 1000,
  };
  sessionStorage.setItem(STORE, JSON.stringify(tokens));
  return tokens;
}

async function tokenRequest(fields) {
  const r = await fetch("/oauth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: CLIENT_ID, ...fields }),
  });
  if (!r.ok) return null;
  return keep(await r.json());
}

// At /console/callback: trade the code for tokens. Returns a sentence for the person when
// the sign-in did not complete, or null when it did.
export async function finishSignIn() {
  const q = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (q.get("error") === "access_denied") return "Sign-in was cancelled.";
  if (q.get("error")) return "The sign-in did not complete. Please try again.";
  if (!pending || q.get("state") !== pending.state || !q.get("code")) {
    return "This sign-in link is out of date. Please sign in again.";
  }
  const tokens = await tokenRequest({
    grant_type: "authorization_code",
    code: q.get("code"),
    redirect_uri: redirectUri(),
    code_verifier: pending.verifier,
  });
  return tokens ? null : "The sign-in could not be completed. Please sign in again.";
}

function stored() {
  return JSON.parse(sessionStorage.getItem(STORE) || "null");
}

export function signedIn() {
  return stored() !== null;
}

let refreshing = null;

// A live access token, refreshed when it is about to expire; null when the session is over.
export async function accessToken({ force = false } = {}) {
  const t = stored();
  if (!t) return null;
  if (!force && t.expiresAt - Date.now() > 30_000) return t.access;
  if (!t.refresh) return null;
  refreshing ||= tokenRequest({ grant_type: "refresh_token", refresh_token: t.refresh }).finally(
    () => { refreshing = null; },
  );
  const fresh = await refreshing;
  if (!fresh) sessionStorage.removeItem(STORE);
  return fresh ? fresh.access : null;
}

export async function signOut() {
  const t = stored();
  sessionStorage.removeItem(STORE);
  if (t && t.refresh) {
    await fetch("/oauth/revoke", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: CLIENT_ID, token: t.refresh, token_type_hint: "refresh_token" }),
    }).catch(() => {});
  }
}
