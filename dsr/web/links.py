"""Absolute links that leave dsr (download links): rooted at DSR_BASE_URL, never at the request's Host.

``url_for(..., _external=True)`` takes scheme and host from the request that asked, so whoever sends
a forged ``Host`` (or ``X-Forwarded-Host``) header would get a genuinely signed link to their own domain.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from dsr.web.context import runtime


def public_url(endpoint: str, **values: Any) -> str:
    """The absolute URL of ``endpoint`` under ``Settings.public_url`` (values not in the rule become the query)."""
    root = urlsplit(runtime().settings.public_url)
    adapter = current_app.url_map.bind(root.netloc, script_name=root.path or "/", url_scheme=root.scheme)
    return adapter.build(endpoint, values, force_external=True)
