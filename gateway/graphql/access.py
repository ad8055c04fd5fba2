"""The authorization policy (`gateway.authz`) in GraphQL: field permissions, and `guarded`
for mutations, whose refusals are typed `ForbiddenError` results."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.permission import BasePermission

from core.errors import DomainError
from gateway import authz
from gateway.graphql import errors as E
from gateway.graphql.context import Context
from gateway.oauth.auth import Principal

T = TypeVar("T")


class _Scoped(BasePermission):
    scope = ""
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return authz.allows(info.context.principal, self.scope)


class IsOperator(_Scoped):
    """An operator token."""

    scope = authz.OPERATOR
    message = "this field needs an operator token"


class IsMember(_Scoped):
    """A member token."""

    scope = "member"
    message = "this field needs a member token"


def forbidden(message: str) -> GraphQLError:
    """A field's refusal (queries answer with GraphQL errors, code FORBIDDEN)."""
    return GraphQLError(message, extensions={"code": "FORBIDDEN"})


def authenticated(ctx: Context) -> Principal:
    """The caller; refused unless authenticated."""
    if ctx.principal is None:
        raise forbidden("authentication required")
    return ctx.principal


def settlement_viewer(ctx: Context) -> uuid.UUID | None:
    """`authz.settlement_partner` for a query: None for the operator, else the partner's id."""
    try:
        return authz.settlement_partner(authenticated(ctx))
    except authz.Denied as exc:
        raise forbidden(str(exc)) from None


async def guarded(
    info: Any,
    scope: str | tuple[str, ...],
    work: Callable[[Context], Awaitable[T]],
    *,
    kind: str | None = None,
) -> Any:
    """Run `work` if the caller holds `scope` (one of them, for a tuple) and is a `kind`
    principal; domain errors become typed results, and so does a refusal of the policy
    (`authz.Denied`) inside `work`. Nothing is committed when it raises."""
    ctx: Context = info.context
    if ctx.principal is None:
        return E.forbidden("authentication required: send a Bearer access token")
    if not authz.allows(ctx.principal, scope, kind):
        scopes = (scope,) if isinstance(scope, str) else scope
        needed = " or ".join(repr(s) for s in scopes)
        return E.forbidden(f"this operation needs the {needed} scope")
    try:
        return await work(ctx)
    except DomainError as exc:
        return E.to_graphql(exc)
    except authz.Denied as exc:
        return E.forbidden(str(exc))
