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


def require_token(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        principal: Principal | None = None
        if scheme.lower() == "bearer" and presented:
            with runtime().sessions.begin() as session:
                principal = authenticate_token(session, presented.strip())
        if principal is None:
            abort(401, message="a valid API token is required (Authorization: Bearer <token>)",
                  headers={"WWW-Authenticate": 'Bearer realm="dsr"'})
        g.principal = principal
        return view(*args, **kwargs)

    return cast(F, wrapper)


def principal() -> Principal:
    return cast(Principal, g.principal)
