"""The member login and consent page: plain server-rendered HTML, no scripts."""

from __future__ import annotations

from html import escape

SCOPE_TEXT = {
    "member": "See your card, balance and activity, and spend your points",
    "points:earn": "Award points for purchases",
    "points:redeem": "Accept points as payment",
    "catalog:write": "Publish rewards and offers",
    "settlement:read": "Read settlement statements",
    "operator": "Administer the coalition",
}

# No scripts, no framing, no referrer: the page holds a password form.
HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = """
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
 font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 background:#f3f4f6;color:#111827}
main{width:100%;max-width:24rem;margin:1rem;padding:2rem;background:#fff;border-radius:12px;
 box-shadow:0 1px 3px rgba(0,0,0,.08),0 8px 24px rgba(0,0,0,.06)}
h1{font-size:1.35rem;margin:0 0 .25rem}
p.lead{margin:0 0 1.25rem;color:#4b5563}
ul{margin:0 0 1.25rem;padding-left:1.2rem;color:#374151}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input{width:100%;padding:.6rem .7rem;border:1px solid #d1d5db;border-radius:8px;font:inherit}
input:focus{outline:2px solid #2563eb;outline-offset:1px;border-color:#2563eb}
.actions{display:flex;flex-direction:row-reverse;gap:.5rem;margin-top:1.25rem}
button{flex:1;padding:.65rem;border-radius:8px;border:1px solid transparent;font:inherit;
 font-weight:600;cursor:pointer}
button.primary{background:#2563eb;color:#fff}
button.secondary{background:#fff;color:#374151;border-color:#d1d5db}
.alert{padding:.6rem .8rem;border-radius:8px;margin-bottom:1rem;background:#fef2f2;
 color:#991b1b;border:1px solid #fecaca}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def login_page(
    *,
    client_name: str,
    scopes: list[str],
    action: str,
    csrf_field: str,
    csrf_token: str,
    email: str = "",
    error: str | None = None,
) -> str:
    """Sign in and allow `client_name` the `scopes`; posts email and password to `action`."""
    items = "".join(f"<li>{escape(SCOPE_TEXT.get(s, s))}</li>" for s in scopes)
    alert = f'<div class="alert" role="alert">{escape(error)}</div>' if error else ""
    body = (
        "<h1>Sign in to Coalition</h1>"
        f'<p class="lead"><strong>{escape(client_name)}</strong> would like to:</p>'
        f"<ul>{items}</ul>{alert}"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="{escape(csrf_field)}" value="{escape(csrf_token)}">'
        '<label for="email">Email</label>'
        f'<input id="email" name="email" type="email" autocomplete="username" required '
        f'value="{escape(email)}"{"" if email else " autofocus"}>'
        '<label for="password">Password</label>'
        f'<input id="password" name="password" type="password" autocomplete="current-password" '
        f"required{' autofocus' if email else ''}>"
        '<div class="actions">'
        # The first button is the one Enter presses: allow (shown on the right).
        '<button class="primary" type="submit" name="decision" value="allow">'
        "Sign in and allow</button>"
        '<button class="secondary" type="submit" name="decision" value="deny" formnovalidate>'
        "Cancel</button>"
        "</div></form>"
    )
    return _page("Sign in to Coalition", body)


def error_page(message: str) -> str:
    """A dead end: the request cannot be sent back to the application that made it."""
    body = f'<h1>This sign-in link is not valid</h1><div class="alert">{escape(message)}</div>'
    return _page("Sign-in error", body)
