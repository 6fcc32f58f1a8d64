"""The only ways text from a spec becomes part of generated source.

Spec names, file names, level names and override text are user data, and the generated
module is executed (``nlc.compile``). So user text reaches the source only

* as a Python literal (``repr``: a string literal is closed by nothing it contains),
* as an identifier made by :func:`identifier`, or
* inside a comment made by :func:`comment`, which holds only printable ASCII and so can
  never end its line.

The module and class names never come from user text at all.
"""
from __future__ import annotations

import keyword
import re

_MANGLED = re.compile(r"x_[0-9a-f]*_")


def identifier(name: str) -> str:
    """A Python identifier standing for ``name``, distinct for distinct names.

    An ASCII identifier that is not a keyword is kept as written (readable code for every
    real spec; non-ASCII identifiers are not kept because Python NFKC-normalises them, so
    two names could meet). Anything else becomes ``x_<hex of its UTF-8>_``; a name that
    already has that form is encoded too, so the mapping stays one-to-one.
    """
    if (name.isascii() and name.isidentifier() and not keyword.iskeyword(name)
            and not _MANGLED.fullmatch(name)):
        return name
    return f"x_{name.encode('utf-8', 'surrogatepass').hex()}_"


def comment(text: str) -> str:
    """``# text`` with every character outside printable ASCII (line and paragraph
    separators, form feed, NUL, non-ASCII) and every backslash escaped as in a string
    literal, so the comment is exactly one line whatever the text holds."""
    return "# " + text.encode("unicode_escape").decode("ascii")
