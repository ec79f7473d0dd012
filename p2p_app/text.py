"""Input hygiene for text people type: prompts, names, comments.

Unicode control (Cc) and format (Cf) characters are removed — NUL, zero-width spaces and joiners, byte-order
marks, right-to-left overrides — as are surrogates (Cs); a text of nothing but such characters is empty.
Names are also NFKC-normalised (full-width letters, ligatures) for display; a name is never an identity.
"""

from __future__ import annotations

import unicodedata

_DROP = frozenset({"Cc", "Cf", "Cs"})


def strip_invisible(text: str, keep_newlines: bool = False) -> str:
    """``text`` (NFC) without control/format characters; tabs and (with ``keep_newlines``) line breaks kept
    as spaces / newlines."""
    out = []
    for ch in unicodedata.normalize("NFC", text):
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in "\t\r\n\v\f":
            out.append(" ")
        elif unicodedata.category(ch) not in _DROP:
            out.append(ch)
    return "".join(out)


def clean_line(text: object) -> str:
    """One line of text: invisible characters removed, runs of whitespace collapsed, trimmed."""
    if not isinstance(text, str):
        return ""
    return " ".join(strip_invisible(text).split())


def clean_comment(text: object) -> str:
    """A free-text comment: invisible characters removed, line breaks kept, trimmed."""
    if not isinstance(text, str):
        return ""
    return "\n".join(" ".join(line.split()) for line in strip_invisible(text, keep_newlines=True).split("\n")).strip()


def display_name(text: object) -> str:
    """A person's name for display: NFKC, casefold-free, invisible characters removed, whitespace collapsed."""
    if not isinstance(text, str):
        return ""
    return clean_line(unicodedata.normalize("NFKC", text))


def name_key(text: object) -> str:
    """How two typed names are compared (a listed rater's name, a reissue): :func:`display_name`, casefolded."""
    return display_name(text).casefold()
