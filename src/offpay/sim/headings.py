"""Step titles of the demos that fit any terminal: a rule cuts a title longer than the line
with "…", so a long title is printed as wrapped bold text under a plain rule instead."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

RULE_MARGIN = 6  # the rule's own characters either side of a title, and its spaces


def heading(console: Console, title: str) -> None:
    """``title`` (rich markup) as a rule when it fits on one line, else whole, wrapped."""
    text = Text.from_markup(title, style="bold")
    if text.cell_len + RULE_MARGIN <= console.width:
        console.rule(text)
    else:
        console.rule()
        console.print(text)
