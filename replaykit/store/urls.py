"""A store's address as messages, pages and ``repr`` show it: never with its password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

_SECRETS = {"password", "sslpassword"}


def redact(url: str) -> str:
    """``url`` without its password (in the authority or the query), for messages and ``repr``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        auth, host = netloc.rsplit("@", 1)
        if ":" in auth:
            netloc = f"{auth.split(':', 1)[0]}:***@{host}"
    query = urlencode([(k, "***" if k in _SECRETS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                      safe="/*")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def without_password(db: str) -> str:
    """A path as it is; a URL without its password."""
    return redact(db) if "://" in db else db
