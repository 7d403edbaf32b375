"""Griffe extension for the API pages: the docstrings' Sphinx roles (:class:`X`,
:func:`~repmatch.a.b`, :math:`...`) shown as code, since MkDocs renders Markdown, not reST."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:attr|class|data|exc|func|math|meth|mod|obj):`~?([^`]+)`")


class SphinxRolesAsCode(Extension):
    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
