"""The one place each output format escapes text that came from elsewhere.

A report folder is shared between people, and its records hold names written by others (variant names from a
plugin, errors, protocol values, a record edited by hand), so every output treats them as text: Markdown and
HTML never pass markup or a table's column separator through, LaTeX never a command, a CSV cell never starts a
spreadsheet formula, and the terminal never receives escape sequences. Each format has one function here, and
every writer of that format goes through it.
"""
from __future__ import annotations

import html
import re
from typing import Any

# C0 and C1 control characters and DEL, and the Unicode controls that reorder text on screen
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"[\t\n\r\v\f]+")


def terminal(text: Any) -> str:
    """Text for a terminal: line breaks and tabs become spaces, any other control character (ESC, and with it
    ANSI and OSC sequences) is shown as its escape, e.g. \\x1b, instead of being obeyed."""
    text = _SPACE.sub(" ", str(text))
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


_LONG_QUOTED = re.compile(r"'[^'\n]{200,}'" + r'|"[^"\n]{200,}"')
LINE_LIMIT = 2000


def error_line(text: Any) -> str:
    """An error message for the terminal: one line (terminal), a quoted value longer than 200 characters cut to
    its start and its length (a 10 MB string from a config is not echoed), the whole cut at LINE_LIMIT."""
    def cut(match: re.Match) -> str:
        value = match.group(0)
        return f"{value[:61]}...{value[0]} ({len(value) - 2} characters)"

    line = _LONG_QUOTED.sub(cut, terminal(text))
    return line if len(line) <= LINE_LIMIT else line[:LINE_LIMIT - 3] + "..."


# Markdown: a backslash escapes any ASCII punctuation (CommonMark): HTML ("<script>", "<img onerror=...>"), code
# spans, a table's "|" and the "](" or "][" of a link are shown as characters; line breaks would end a table row.
_MARKDOWN = re.compile(r"([\\`<>|]|\](?=[(\[]))")


def markdown(text: Any) -> str:
    return _MARKDOWN.sub(r"\\\1", terminal(text))


def html_text(text: Any) -> str:
    return html.escape(str(text), quote=True)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}
_LATEX_SPECIAL = re.compile("|".join(re.escape(k) for k in _LATEX))


def latex(text: Any) -> str:
    """Text for a LaTeX document: every special character as itself (so \\input{...} is printed, not run), on one
    line; ± and >= as their symbols."""
    text = _LATEX_SPECIAL.sub(lambda m: _LATEX[m.group(0)], terminal(text))
    return text.replace("±", r"$\pm$").replace(">=", r"$\geq$")


def latex_comment(text: Any) -> str:
    """A LaTeX comment line: one line (a line break in a value would end the comment and run what follows)."""
    return "% " + terminal(text)


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.IGNORECASE)


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run: text starting with =, +, -, @, a tab or a carriage return is
    prefixed with a single quote (OWASP's advice), unless it is a plain number or a lone "-"; numbers as they
    are."""
    if not isinstance(value, str) or not value or value == "-" or _NUMBER.match(value):
        return value
    return "'" + value if value[0] in "=+-@\t\r" else value


def csv_frame(frame):
    """A DataFrame whose text cells (and headers) are CSV-safe (csv_cell), for DataFrame.to_csv."""
    from pandas.api.types import is_numeric_dtype

    safe = frame.copy()
    for column in safe.columns:
        if not is_numeric_dtype(safe[column]):  # text columns (object, or pandas' string dtype)
            safe[column] = [csv_cell(v) for v in safe[column]]
    safe.columns = [csv_cell(str(c)) for c in safe.columns]
    return safe


def markdown_table(frame) -> str:
    """A DataFrame as a Markdown table, every header and cell escaped (markdown)."""
    from pandas.api.types import is_numeric_dtype

    safe = frame.copy()
    for column in safe.columns:
        if not is_numeric_dtype(safe[column]):  # text columns (object, or pandas' string dtype)
            safe[column] = [v if v is None or isinstance(v, (int, float)) else markdown(v) for v in safe[column]]
    safe.columns = [markdown(c) for c in safe.columns]
    return safe.to_markdown(index=False)
