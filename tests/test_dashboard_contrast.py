"""The dashboard's colours keep WCAG AA contrast (4.5:1 for text) in its light and dark schemes.

The pairs are the ones the stylesheet draws text with (text on page and panel, each status badge, the
buttons); the colours are read from gateway/static/dashboard/dashboard.css, so changing one there is
checked here.
"""

from __future__ import annotations

import re

import pytest

from gateway.static_files import STATIC_DIR

CSS = (STATIC_DIR / "dashboard" / "dashboard.css").read_text()
PAIRS = [
    ("text", "bg"),
    ("text", "panel"),
    ("muted", "bg"),
    ("muted", "panel"),
    ("accent", "panel"),
    ("accent-text", "accent"),
    ("danger", "panel"),
    ("panel", "danger"),  # an armed delete button
    ("pending-text", "pending"),
    ("working-text", "working"),
    ("active-text", "active"),
    ("failed-text", "failed"),
    ("deleting-text", "deleting"),
]


def scheme(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", block))


def schemes() -> dict[str, dict[str, str]]:
    light = scheme(CSS.split("@media (prefers-color-scheme: dark)")[0])
    dark_block = CSS.split("@media (prefers-color-scheme: dark)")[1].split("\n}\n")[0]
    return {"light": light, "dark": {**light, **scheme(dark_block)}}


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: str, other: str) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_contrast_formula() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # just below AA


@pytest.mark.parametrize("name", ["light", "dark"])
def test_text_colours_keep_aa_contrast(name: str) -> None:
    colours = schemes()[name]
    assert len(colours) >= 17, "the stylesheet's colour variables were not found"
    weak = {
        f"{fg} on {bg}": round(contrast(colours[fg], colours[bg]), 2)
        for fg, bg in PAIRS
        if contrast(colours[fg], colours[bg]) < 4.5
    }
    assert weak == {}
