"""Bearer-token authentication for the DPO side of the API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import g, request
from flask_smorest import abort

from dsr.domain.accounts import Principal, authenticate_token
from dsr.web.context import runtime

F = TypeVar("F", bound=Callable[..., Any])


def authenticated() -> Principal | None:
    """The holder of the request's bearer token, or None; looked up once per request."""
    if "principal" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        found: Principal | None = None
        if scheme.lower() == "bearer" and presented:
            with runtime().sessions.begin() as session:
                found = authenticate_token(session, presented.strip())
        g.principal = found
    return cast(Principal | None, g.principal)


def refuse_unauthenticated() -> None:
    abort(401, message="a valid API token is required (Authorization: Bearer <token>)",
          headers={"WWW-Authenticate": 'Bearer realm="dsr"'})


def require_token(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if authenticated() is None:
            refuse_unauthenticated()
        return view(*args, **kwargs)

    wrapper.requires_token = True  # type: ignore[attr-defined]  # read by checks that run before the view
    return cast(F, wrapper)


def needs_token(endpoint_view: Callable[..., Any] | None, method: str) -> bool:
    """Whether the view that will answer ``method`` requires a token (``require_token``)."""
    cls = getattr(endpoint_view, "view_class", None)
    handler = getattr(cls, method.lower(), None) if cls is not None else endpoint_view
    return bool(getattr(handler, "requires_token", False))


def principal() -> Principal:
    return cast(Principal, g.principal)
