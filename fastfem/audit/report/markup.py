"""HTML for the audit report, escaped at one place: `render` and the `Markup` it returns.

Every string that reaches the report's page comes from a store written from untrusted inputs
(ids and labels are file names, error texts quote files, class names come from folders, the
model's name and layers from a model file) and is escaped here, nowhere else:

* `render(template, **values)` formats ``template`` (a constant of the report's code, in
  `str.format` syntax: ``"<td>{v:.2f}</td>"``) with every value formatted by its spec and then
  HTML-escaped (``& < > " '``) — unless it is `Markup`, HTML that `render` made before;
* `join` concatenates pieces the same way, and `Markup` made by `render` / `join` is the only
  HTML a piece of the report may hold;
* `page_bytes` accepts only `Markup`, so a page assembled from plain strings (an f-string that
  bypassed `render`) is refused, not written.

Escaping both quotes makes every value safe in element text and in quoted attribute values
(the report never puts a value in an unquoted attribute, a URL scheme, a ``<script>`` or a
``<style>``); thumbnails are ``data:image/png;base64`` URIs made by the report itself.
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable
from typing import Any


class Markup(str):
    """Trusted HTML: text that `render` or `join` made (its values escaped)."""

    __slots__ = ()


def escape(value: Any, spec: str = "") -> Markup:
    """``format(value, spec)`` HTML-escaped (both quotes too); `Markup` passes unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(format(value, spec) if spec else str(value), quote=True))


class _Escaping(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return escape(value, format_spec)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is None:
            return value
        return super().convert_field(value, conversion)


_FORMATTER = _Escaping()


def render(template: str, **values: Any) -> Markup:
    """``template.format(**values)`` with every value escaped (module docstring)."""
    return Markup(_FORMATTER.vformat(template, (), values))


def join(pieces: Iterable[Any], sep: str = "") -> Markup:
    """The pieces concatenated (plain text escaped, `Markup` as it is), ``sep`` between them
    (a constant of the caller's code)."""
    return Markup(sep.join(escape(p) for p in pieces))


def page_bytes(page: Markup) -> bytes:
    """A whole page as UTF-8; a TypeError unless ``page`` is `Markup` (made by `render`)."""
    if not isinstance(page, Markup):
        raise TypeError("a report page must be built with fastfem.audit.report.markup.render")
    return page.encode("utf-8")
