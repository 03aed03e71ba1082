"""Progress reporting: a bar on a terminal, plain lines otherwise (pure, no root)."""
from __future__ import annotations

import io

from flexnet_lab.progress import Progress


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("lab", out, tty=False)
    p.step("shells", 8)
    for _ in range(8):
        p.advance()
    p.step("links")
    p.finish("up")
    lines = out.getvalue().splitlines()
    assert lines[0] == "lab: shells (0/8) ..."
    assert lines[1:4] == ["lab: shells: 2/8", "lab: shells: 4/8", "lab: shells: 6/8"]
    assert lines[4].startswith("lab: shells: 8/8 done in ")
    assert lines[5] == "lab: links ..."
    assert lines[6].startswith("lab: links: done in ")
    assert lines[7].startswith("lab: up (") and len(lines) == 8
    assert "\r" not in out.getvalue()


def test_bar_redrawn_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("lab", out, tty=True)
    p.step("pings", 100)
    for _ in range(100):
        p.advance()
    p.end()
    text = out.getvalue()
    assert text.count("\n") == 1  # one line, redrawn with \r until the step ends
    assert "\r" in text and "100/100" in text.split("\n")[0].split("\r")[-1]
