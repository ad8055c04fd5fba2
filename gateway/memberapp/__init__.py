"""The member web app at /app: static HTML and ES modules talking to /graphql as the public
OAuth client `coalition-app` (authorization code + PKCE), and the QR code of a redemption code."""
