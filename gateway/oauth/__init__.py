"""The OAuth 2.0 authorization server (authlib, adapted to Starlette) and token verification.

Kept import-light: `gateway.oauth.models` is loaded by the migrations without Starlette.
"""
