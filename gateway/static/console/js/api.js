// The console's calls: GraphQL, settlement files, reconciliation uploads. Every failure is
// turned into a sentence for the person (ApiError.message); codes stay out of sight.
import { accessToken } from "./auth.js";

export class ApiError extends Error {}
export class SignedOut extends ApiError {}

const SESSION_OVER = "Your session has ended. Please sign in again.";

const WORDS = {
  FORBIDDEN: "Your account may not do this. Sign in with an operator account.",
  RATE_LIMITED: "Too many requests just now. Wait a moment and try again.",
  QUERY_TOO_COMPLEX: "That request asks for too much at once.",
  PAYLOAD_TOO_LARGE: "The file is too large (at most 5 MB).",
  LIMIT_EXCEEDED: "A limit was reached.",
  NOT_FOUND: "It could not be found.",
};

function sentence(text) {
  const s = String(text || "").trim();
  if (!s) return "Something went wrong. Please try again.";
  const t = s[0].toUpperCase() + s.slice(1);
  return /[.!?]$/.test(t) ? t : `${t}.`;
}

// A human message for an error code and the server's own message (which is in words).
export function words(code, message) {
  if (code === "VALIDATION" || code === "NOT_FOUND" || code === "LIMIT_EXCEEDED") {
    return sentence(message || WORDS[code]);
  }
  if (WORDS[code]) return WORDS[code];
  return sentence(message);
}

async function authorized(doFetch) {
  let token = await accessToken();
  if (!token) throw new SignedOut(SESSION_OVER);
  let r = await doFetch(token);
  if (r.status === 401) {
    token = await accessToken({ force: true });
    if (!token) throw new SignedOut(SESSION_OVER);
    r = await doFetch(token);
    if (r.status === 401) throw new SignedOut(SESSION_OVER);
  }
  return r;
}

async function failure(r) {
  if (r.status >= 500) return new ApiError("The server could not do this just now. Please try again.");
  let body = {};
  try { body = await r.json(); } catch { /* not JSON */ }
  const err = body.error || {};
  return new ApiError(words(err.code || body.code, err.message || body.message || body.error_description));
}

export async function gql(query, variables = {}) {
  const r = await authorized((token) => fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  }));
  if (!r.ok && r.status !== 200) throw await failure(r);
  const body = await r.json();
  if (body.errors && body.errors.length) {
    const e = body.errors[0];
    throw new ApiError(words(e.extensions && e.extensions.code, e.message));
  }
  return body.data;
}

// A mutation's result union: the success object, or an ApiError with the error's words.
export function outcome(result) {
  if (result && typeof result.code === "string" && typeof result.message === "string") {
    throw new ApiError(words(result.code, result.message));
  }
  return result;
}

// GET a file with the token and hand it to the browser as a download named `filename`.
export async function download(path, filename) {
  const r = await authorized((token) => fetch(path, { headers: { Authorization: `Bearer ${token}` } }));
  if (!r.ok) throw await failure(r);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export async function upload(path, file) {
  const r = await authorized((token) => fetch(path, {
    method: "POST",
    headers: { "Content-Type": "text/csv", Authorization: `Bearer ${token}`, "X-Filename": file.name },
    body: file,
  }));
  if (!r.ok) throw await failure(r);
  return r.json();
}
