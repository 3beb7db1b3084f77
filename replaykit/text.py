"""Ids and names a store keeps as text: non-empty, and encodable as UTF-8.

Python holds undecodable bytes of a file name, an argument or an environment variable as lone
surrogates (``surrogateescape``); a database keeps UTF-8, which has no such characters. Values are
recorded with them escaped (payloads.py); an id or a name holding one is refused here, by name.
"""

from __future__ import annotations


def check_text(text: str, what: str, example: str) -> None:
    """``text`` (``what``: what it names, ``example``: how one is written) is non-empty valid text."""
    if not isinstance(text, str):
        raise TypeError(f"{what}: non-empty text ({example}), not {text!r}")
    if not text:
        raise ValueError(f"{what}: non-empty text ({example}), not {text!r}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise unencodable(f"{what}: {text!r}", exc) from None


def unencodable(what: str, exc: UnicodeEncodeError) -> ValueError:
    """``what`` holds a character UTF-8 cannot encode (``exc`` says which)."""
    bad = exc.object[exc.start] if isinstance(exc.object, str) else "?"
    return ValueError(
        f"{what} holds {bad!r} (at {exc.start}), which UTF-8 cannot encode (a name decoded with surrogateescape, "
        "such as a file name, can hold one), and the store keeps it as UTF-8 text. Use valid text (decode the "
        "bytes with errors='replace'). Nothing was recorded.")
