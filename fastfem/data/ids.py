r"""Ids that survive any name: readable UTF-8 text, unique, with the original bytes kept.

A POSIX file name is bytes; Python hands the bytes that are not UTF-8 over as lone surrogates
(`os.fsdecode`'s ``surrogateescape``: byte 0xE9 -> U+DCE9), and ids read from arrays or
TFRecords may hold lone surrogates too. UTF-8 (Parquet, JSON) cannot store those. `readable_id`
writes any such text as valid UTF-8::

    \                                  ->  \\        (the escape character itself)
    U+DC80..U+DCFF (undecodable byte HH) ->  \xHH
    any other lone surrogate U+D800..U+DFFF ->  \uXXXX
    every other character              ->  itself

The map is injective — after a backslash comes ``\``, ``x`` or ``u``, so the escaped text reads
back one way — hence two different names never get the same id, and a real file named like an
escape (``caf\xe9.png``, with a literal backslash) keeps an id of its own (``caf\\xe9.png``).
Names with neither a backslash nor a lone surrogate (nearly all) are their own id.

**Reserved ids.** An escaped id never holds a backslash followed by anything but ``\``, ``x`` or
``u``, so ids that start with ``\!`` (`reserved_id`) can never equal the id of a real input:
they name inputs that have no name of their own — a damaged record, a record without an id in
a source where other records have ids — and can never collide with (or shadow) a real one. Where the
id differs from the name, the original bytes travel beside it (`id_and_raw`): a file name's
bytes on disk (`os.fsencode`), or other text as UTF-8 with its surrogates passed through.
"""

from __future__ import annotations

import os


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return ch


def needs_escape(text: str) -> bool:
    """True when ``text`` holds a backslash or a lone surrogate (see the module docstring)."""
    return "\\" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def readable_id(text: str) -> str:
    """``text`` as valid UTF-8, escaped injectively (module docstring); unchanged if it can."""
    if not needs_escape(text):
        return text
    return "".join(_escape_char(ch) for ch in text)


def id_and_raw(
    text: str, raw: bytes | None = None, *, file_name: bool = False
) -> tuple[str, bytes | None]:
    """``(readable_id(text), original bytes or None)``: the bytes only when the id differs.

    ``raw``: the original bytes when the caller has them (a TFRecord's id field); else a file
    name's bytes on disk (``file_name=True``, `os.fsencode`) or the text's UTF-8 with lone
    surrogates passed through.
    """
    rid = readable_id(text)
    if rid == text:
        return rid, None
    if raw is None:
        raw = os.fsencode(text) if file_name else text.encode("utf-8", "surrogatepass")
    return rid, bytes(raw)


#: The prefix of reserved ids (`reserved_id`): never produced by `readable_id`.
RESERVED = "\\!"


def reserved_id(*parts: str | int) -> str:
    """An id no real input can have: ``\\!`` then the parts (escaped by `readable_id`) joined by
    ``:``, e.g. ``reserved_id("a.tfrecord", 4) == "\\!a.tfrecord:4"`` (module docstring)."""
    return RESERVED + ":".join(readable_id(str(p)) for p in parts)


def is_reserved(rid: str) -> bool:
    """True for an id made by `reserved_id`."""
    return rid.startswith(RESERVED)


def printable(text: str) -> str:
    """Any text (an error message naming a file) as valid UTF-8: lone surrogates as ``\\udcXX``
    (not injective; for messages, never for ids)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
