"""Reading JSON bodies: every way a body is read (webargs, ``request.get_json``, the callbacks) goes
through the app's JSON provider, so bad JSON of any shape is a 400 naming what is wrong, never a 500.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Flask, Request, current_app
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Blueprint, abort
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request

# No field of the API nests deeper than a few levels; the limit keeps a deep but parsable body from
# reaching code that walks it recursively (serialising it back, writing it into a letter).
MAX_DEPTH = 32


class BadJSON(json.JSONDecodeError):
    """A body that parses as JSON but is not accepted (nested too deeply). A JSONDecodeError, so that
    Flask and webargs treat it like any other undecodable body."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "<body>", 0)

    def __str__(self) -> str:
        return self.msg


class BodyJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:  # the C parser recurses once per level: ~1,000 levels exhaust the stack
            raise BadJSON(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
        if _depth(value) > MAX_DEPTH:
            raise BadJSON(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (without recursion: the value may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break  # deep enough to refuse; no need to walk the rest
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def refuse(error: ValueError) -> NoReturn:
    """400 in the API's error shape, naming what is wrong with the body."""
    reason = str(error) if isinstance(error, BadJSON) else f"the body is not valid JSON ({error})"
    abort(400, message=reason, errors={"json": [reason]})
    raise AssertionError("unreachable")  # flask_smorest.abort always raises


class BodyRequest(Request):
    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:  # the body was not declared as JSON
            return super().on_json_loading_failed(e)
        refuse(e)


class BodyParser(FlaskParser):
    """webargs parser of the API blueprints (``blp.ARGUMENTS_PARSER``): bodies are read with the app's
    JSON provider instead of webargs' own ``json.loads``."""

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return missing
        raw = req.get_data(cache=True)
        return current_app.json.loads(raw) if raw else missing

    def _handle_invalid_json_error(self, error: Any, req: Request, *args: Any, **kwargs: Any) -> NoReturn:
        refuse(error)


class JSONBlueprint(Blueprint):
    """The blueprint of every JSON endpoint: its ``@arguments`` parse with ``BodyParser``."""

    ARGUMENTS_PARSER = BodyParser()


def install(app: Flask) -> None:
    app.json = BodyJSONProvider(app)
    app.request_class = BodyRequest
