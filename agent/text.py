"""Model-derived text made safe to show a person: the one function every printed line goes through.

A reply can hold ANSI escape sequences, carriage returns, backspaces or bidi overrides that
rewrite what a terminal shows (an approval prompt that says ``type('hello')`` while the
action types ``curl ... | sh`` and Enter). ``printable`` makes every such character visible
as an escape (``\\x1b``, ``\\r``, ``\\n``, ``\\u202e``) and, when it must shorten a text,
says how much it left out, so nothing that will be typed is hidden.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Cc: C0/C1 controls and DEL; Cf: format characters (bidi overrides, zero-width joiners);
# Zl/Zp: line and paragraph separators; Cs: lone surrogates; Co/Cn: private use, unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(char: str) -> bool:
    """Whether a character shows as itself on a terminal (no control, format or separator)."""
    return unicodedata.category(char) not in _HIDDEN_CATEGORIES


def printable(text: object, limit: int | None = None) -> str:
    """``text`` with every control, format and separator character shown as an escape.

    With ``limit``, a longer result is cut there and ends with ``… (+N more characters)``,
    so a reader always knows something was left out. Escapes are never cut in half.
    """
    source = "" if text is None else str(text)
    out: list[str] = []
    length = 0
    for index, char in enumerate(source):
        piece = char if visible(char) else _escape(char)
        if limit is not None and length + len(piece) > limit:
            return "".join(out) + f"… (+{len(source) - index} more characters)"
        out.append(piece)
        length += len(piece)
    return "".join(out)


def quoted(text: object, limit: int | None = None) -> str:
    """``printable`` inside single quotes (quotes and backslashes in the text escaped)."""
    body = "" if text is None else str(text)
    return "'" + printable(body.replace("\\", "\\\\").replace("'", "\\'"), limit) + "'"
