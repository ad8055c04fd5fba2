// GraphQL over fetch with the member's token, and the words a customer reads for each stable
// error code (never the code itself).

import { accessToken } from "./auth.js";

const SENTENCES = {
  INSUFFICIENT_POINTS: "You don't have enough available points for that.",
  MEMBER_NOT_FOUND: "We couldn't find a member with that card number. Please check it.",
  LIMIT_EXCEEDED: "You've reached a limit for now. Please try again later.",
  OUT_OF_STOCK: "Sorry, this reward has just run out.",
  NOT_FOUND: "We couldn't find that. It may no longer be available.",
  NO_AGREEMENT: "This partner can't accept points right now. Please try again later.",
  INVALID_PROMO_CODE:
    "That promo code isn't valid: it may be mistyped, expired or used up, or you have already used it.",
  IDEMPOTENCY_CONFLICT: "This was already sent with different details. Please start again.",
  FORBIDDEN: "Your account isn't allowed to do that.",
  RATE_LIMITED: "Too many attempts in a short time. Please wait a moment and try again.",
  UNAUTHENTICATED: "Your session has ended. Please sign in again.",
  INVALID_TOKEN: "Your session has ended. Please sign in again.",
  TOKEN_EXPIRED: "Your session has ended. Please sign in again.",
  TOKEN_REVOKED: "Your session has ended. Please sign in again.",
  QUERY_TOO_COMPLEX: "That request was too large. Please try again with fewer items.",
  NETWORK: "We couldn't reach Coalition. Check your connection and try again.",
};

// VALIDATION names the field it is about: say what to fix there.
const FIELDS = {
  email: "Please enter a valid e-mail address that isn't registered yet.",
  password: "Your password needs at least 8 characters.",
  name: "Please enter your name.",
  referralCode: "That referral code doesn't exist. Check it, or leave the field empty.",
  toCardNumber:
    "Please enter another member's 16-digit card number (you can't transfer to yourself).",
  points: "Please enter a whole number of points above zero.",
  maxPoints: "Please enter a whole number of points above zero, or leave it empty.",
  code: "Please enter the promo code.",
};

const GENERIC = "Something went wrong on our side. Please try again in a moment.";

/** The sentence for an error code (and the field a VALIDATION error names). */
export function sentence(code, field) {
  if (code === "VALIDATION") return FIELDS[field] || "Please check what you entered and try again.";
  return SENTENCES[code] || GENERIC;
}

/** An error whose message is already a sentence for the member. */
export class AppError extends Error {
  constructor(code, field, words) {
    super(words?.[code] || sentence(code, field));
    this.code = code;
  }
}

async function post(body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch("/graphql", { method: "POST", headers, body: JSON.stringify(body) });
  } catch {
    throw new AppError("NETWORK");
  }
}

/** Run a GraphQL operation; `data` on success, else an AppError. `auth: false` sends no token. */
export async function gql(query, variables = {}, { auth = true } = {}) {
  let token = auth ? await accessToken() : null;
  if (auth && !token) throw new AppError("UNAUTHENTICATED");
  let response = await post({ query, variables }, token);
  if (response.status === 401 && auth) {
    token = await accessToken({ force: true });
    if (!token) throw new AppError("UNAUTHENTICATED");
    response = await post({ query, variables }, token);
  }
  const body = await response.json().catch(() => null);
  if (!body) throw new AppError(response.ok ? "INTERNAL" : "NETWORK");
  if (body.errors?.length) {
    const first = body.errors[0];
    throw new AppError(first.extensions?.code || "INTERNAL", first.extensions?.field);
  }
  return body.data;
}

/** A mutation's typed result: the success object, or an AppError from its Error type
 * (`options.words` may word some codes for this action). */
export async function mutate(query, variables, field, options = {}) {
  const data = await gql(query, variables, options);
  const result = data[field];
  // Every error type of a result union implements `Error` and is named so (a success may
  // have a `code` of its own: a redemption code's).
  if (!result || result.__typename.endsWith("Error")) {
    throw new AppError(result?.code || "INTERNAL", result?.field, options.words);
  }
  return result;
}

/** A redemption code's QR image as an object URL (the code goes in the body, not a URL). */
export async function qrImage(text) {
  const token = await accessToken();
  let response;
  try {
    response = await fetch("/app/qr", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ text }),
    });
  } catch {
    throw new AppError("NETWORK");
  }
  if (!response.ok) throw new AppError(response.status === 401 ? "UNAUTHENTICATED" : "INTERNAL");
  return URL.createObjectURL(await response.blob());
}
