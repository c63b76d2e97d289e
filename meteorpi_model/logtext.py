"""Text from outside (a client's request, a database's message quoting it) made safe for a log line.

Why: a log is read line by line, by people at terminals and by tools. A client controls much of
what a server logs about its request (the user name of a Basic header, valid login or not; the
request line; the user agent; the referer; any header), and a message may quote what a client
sent. A CR or LF in such text forges a line of the client's choosing (a fake "DELETE ... 200"
access by ``admin``); an ESC or C1 sequence drives the terminal of whoever reads the log (clears
lines, retitles the window, hides what follows); NULs fill a line with nothing visible. Here
every such character is written as an escape (``\\r``, ``\\n``, ``\\t``, ``\\x1b``, ``\\x00``,
``\\u2028``) and the backslash itself as ``\\\\``, so an escape in the log always means that a
control character was sent, never that the client typed one: one request, one line, nothing raw.

The model layer holds it so that the server (its access log, its messages) and storage (what the
database refused) escape the same way.
"""
from __future__ import annotations

import logging
import re
import traceback
from typing import Iterator

# C0, DEL and C1 controls; the Unicode line and paragraph separators (line breaks to many
# readers: str.splitlines, some editors and viewers); the bidirectional embeddings, overrides
# and isolates (they make a line display in another order than it reads); and the backslash,
# so that an escape in the log is unambiguous.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_log_text(text: object) -> str:
    """``text`` (anything: it is made a string) with control characters, line separators,
    bidirectional controls and backslashes escaped, ready for one line of a log.

    Text without any of them is returned as it is (the common case costs one regex search).
    """
    if not isinstance(text, str):
        text = str(text)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def format_fault(exc: BaseException) -> str:
    """The traceback of ``exc`` as ``logging`` writes it, but with each exception's own text
    (type, message, notes: what may quote a request) escaped onto one line. The frames are the
    program's own (file names, code) and stay as Python prints them."""
    return "".join(_fault_lines(traceback.TracebackException.from_exception(exc))).rstrip("\n")


def _fault_lines(te: traceback.TracebackException, indent: str = "") -> Iterator[str]:
    if te.__cause__ is not None:
        yield from _fault_lines(te.__cause__, indent)
        yield f"\n{indent}The above exception was the direct cause of the following exception:\n\n"
    elif te.__context__ is not None and not te.__suppress_context__:
        yield from _fault_lines(te.__context__, indent)
        yield f"\n{indent}During handling of the above exception, another exception occurred:\n\n"
    if te.stack:
        yield f"{indent}Traceback (most recent call last):\n"
        yield from (indent + line for frame in te.stack.format() for line in frame.splitlines(keepends=True))
    yield indent + escape_log_text("".join(te.format_exception_only()).rstrip("\n")) + "\n"
    for number, member in enumerate(getattr(te, "exceptions", None) or (), 1):  # an ExceptionGroup's
        yield f"{indent}  +---------------- {number} ----------------\n"
        yield from _fault_lines(member, indent + "    ")


class EscapedFaults(logging.Filter):
    """A filter for a logger whose records may carry a fault raised while serving a request:
    the record's traceback is written with ``format_fault`` (its exception text escaped), and
    the record passes. Why on the logger: ``exc_info`` stays on the record (for handlers that
    want the exception itself) while every handler's text is the escaped one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = format_fault(record.exc_info[1])
        return True
