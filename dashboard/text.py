"""User text in Streamlit markdown: run ids, file names, query values, stored messages shown as what they are.

Streamlit renders markdown in st.markdown, st.error/warning/info/success, st.caption, progress text, widget
labels and help tooltips. A value such as `[x](https://evil.example)` or `![i](http://host/p.png)` there is a
live link or an outside image, `$...$` is LaTeX and `:red[...]` colour. Every value that did not come from this
app's own source goes through `md()` where it meets markdown; st.text, st.code, st.json, st.dataframe and
the option lists of select widgets show text as it is and need nothing.

Not inside backticks: a code span shows its content literally, backslashes included, and a backtick in the
value would end it early. An escaped value is shown as plain text instead.
"""
from __future__ import annotations

import re
import string

# CommonMark lets a backslash escape any ASCII punctuation character, and the escaped character is always
# literal text. Escaping all of them, rather than a list of today's special ones, also covers the extensions
# Streamlit adds (GFM tables, math, directives such as :red[...]).
_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u2028\u2029\x0b\x0c\x85]")
# Escapes cannot stop GFM's literal autolinks: Streamlit finds bare URLs (http://, https://, www.) and e-mail
# addresses in the text after parsing (mdast-util-gfm-autolink-literal), so an escaped `[x](https://evil)` was
# still a live link to https://evil in Chromium. An invisible WORD JOINER after `http:`/`https:`, `www` and `@`
# breaks those patterns and changes nothing on screen.
_AUTOLINK_START = re.compile(r"(?i)(https?:|www(?=\.)|@)")
WORD_JOINER = "\u2060"


def md(value) -> str:
    """`value` as text that Streamlit's markdown shows literally, on one line (line breaks become spaces, so a
    value cannot start a heading, list or table of its own), with no link, image, LaTeX or formatting in it."""
    text = _AUTOLINK_START.sub(r"\1" + WORD_JOINER, _LINE_BREAKS.sub(" ", str(value)))
    return _PUNCTUATION.sub(r"\\\1", text)

