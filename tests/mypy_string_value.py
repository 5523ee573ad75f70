"""A mypy plugin (pyproject's ``[tool.mypy] plugins``): reading lxml text nodes outside ``string_value`` is an error.

Values from signed XML must be an element's whole string-value (``accesspoint.core.xml.string_value``), which
is what exclusive C14N without comments signs. ``element.text``, ``.tail``, ``findtext`` and ``itertext`` read
only part of it when a comment or processing instruction sits inside the value, so mypy reports each read
with the error code ``element-text``; writing ``element.text = ...`` stays allowed. The check is by type, so
``reason.text`` on a dataclass is not confused with an element's. ``tests/test_string_value.py`` proves it fires.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

from mypy.errorcodes import ErrorCode
from mypy.plugin import AttributeContext, MethodContext, Plugin
from mypy.types import Type

ELEMENT_TEXT = ErrorCode("element-text", "Element text read outside accesspoint.core.xml.string_value", "General")
# The one module that reads text nodes: the helper itself.
ALLOWED = (("accesspoint", "core", "xml.py"),)
_CLASSES = ("lxml.etree._Element", "lxml.etree._ElementTree")
_ATTRIBUTES = frozenset(f"{cls}.{name}" for cls in _CLASSES for name in ("text", "tail"))
_METHODS = frozenset(f"{cls}.{name}" for cls in _CLASSES for name in ("findtext", "itertext"))
_MESSAGE = "read values from XML with accesspoint.core.xml.string_value, not {what} (a comment would cut them short)"


def _allowed(path: str) -> bool:
    parts = PurePath(path).parts
    return any(parts[-len(allowed) :] == allowed for allowed in ALLOWED)


def _attribute(name: str) -> Callable[[AttributeContext], Type]:
    def hook(ctx: AttributeContext) -> Type:
        if not ctx.is_lvalue and not _allowed(getattr(ctx.api, "path", "")):
            ctx.api.fail(_MESSAGE.format(what=f"element.{name}"), ctx.context, code=ELEMENT_TEXT)
        return ctx.default_attr_type

    return hook


def _method(name: str) -> Callable[[MethodContext], Type]:
    def hook(ctx: MethodContext) -> Type:
        if not _allowed(getattr(ctx.api, "path", "")):
            ctx.api.fail(_MESSAGE.format(what=name), ctx.context, code=ELEMENT_TEXT)
        return ctx.default_return_type

    return hook


class StringValuePlugin(Plugin):
    """Reports reads of lxml text nodes (see the module)."""

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        """The hook for ``element.text`` and ``element.tail``."""
        return _attribute(fullname.rpartition(".")[2]) if fullname in _ATTRIBUTES else None

    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        """The hook for ``findtext`` and ``itertext``."""
        return _method(fullname.rpartition(".")[2]) if fullname in _METHODS else None


def plugin(_version: str) -> type[Plugin]:
    """mypy's entry point."""
    return StringValuePlugin
