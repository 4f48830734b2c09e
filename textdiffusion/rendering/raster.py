"""Drawing states into images: fonts, token layout, legend, progress bars and the GIF writer.
"""

import unicodedata
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from textdiffusion.rendering.states import (
    FIXED,
    LABELS,
    MASKED,
    NEW,
    REMASKED,
    REVEALED,
    collapse_end_runs,
)

LEGEND = {
    FIXED: "prompt / fixed",
    MASKED: "still masked",
    NEW: "revealed this step",
    REVEALED: "revealed earlier",
    REMASKED: "re-masked this step (old token struck out)",
}


BACKGROUND = (22, 24, 29)


PANEL = (34, 37, 44)


TEXT = (232, 232, 232)


DIM = (150, 155, 165)


COLOURS = {
    FIXED: (90, 169, 255),
    MASKED: (85, 90, 99),
    NEW: (61, 220, 132),
    REVEALED: (232, 232, 232),
    REMASKED: (255, 159, 67),
}


NEW_FILL = (24, 70, 45)  # behind a token revealed this step


# Block-wise sampling: a band behind the tokens of the block a step worked on (not a token state: any label can be in it).
ACTIVE_LEGEND = "active block (the block this step works on)"


ACTIVE_FILL = (42, 40, 66)


ACTIVE_OUTLINE = (167, 139, 250)


@cache
def font_path(bold: bool = False) -> str:
    from matplotlib import font_manager

    props = font_manager.FontProperties(family="DejaVu Sans Mono", weight="bold" if bold else "normal")
    return font_manager.findfont(props, fallback_to_default=True)


@cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(bold), size)


@cache
def _font_codepoints() -> frozenset:
    """Characters the font has a glyph for; others are written as escapes instead of empty boxes."""
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(font_path(), lazy=True).getBestCmap())


_NAMED = {"\n": "\u21b5", "\t": "\u2192", "\r": "\\r"}  # newline as a return arrow, tab as an arrow


def display_token(text: str) -> str:
    """A string that shows `text` faithfully in the monospace font, on one line.

    Newlines and tabs become arrows, control and format characters (and anything the font has no glyph for)
    become escapes such as \\x07 or \\U0001f600, and a token of only spaces shows each space as an open box.
    """
    if text == "":
        return "\u2205"
    if text.strip(" ") == "":
        return "\u2423" * len(text)
    glyphs = _font_codepoints()
    out = []
    for ch in text:
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or ord(ch) not in glyphs:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class Placed:
    x: float
    y: float
    text: str
    label: str
    width: float
    struck: bool = False
    active: bool = False  # in the block the step worked on (drawn as a band behind it; never moves anything)


MASK_BOX_CHARS = 3  # a masked slot is drawn as a box this many characters wide


def layout_tokens(tokens, labels, previous, width: float, size: int, line_gap: float = 1.45,
                  end_token: str | None = None, active=None) -> tuple[list[Placed], float]:
    """Place tokens left to right, wrapping at `width` pixels with the font's real advance widths.

    Returns the placed pieces (coordinates relative to the text area) and the height used. A token that
    contains a newline ends its line; a token wider than a whole line is cut into pieces that fit. Runs of
    `end_token` are one chip (collapse_end_runs). `active` (one flag per token, or None) only marks the pieces;
    the positions are the same with or without it.
    """
    tokens, labels, previous, active = collapse_end_runs(tokens, labels, previous, end_token, active)
    active = active or [False] * len(tokens)
    regular = font(size)
    line_height = round(size * line_gap)
    space = regular.getlength(" ")
    placed, x, y = [], 0.0, 0.0

    def newline():
        nonlocal x, y
        x, y = 0.0, y + line_height

    for token, label, was, marked in zip(tokens, labels, previous, active):
        if label in (MASKED, REMASKED) and not (label == REMASKED and was is not None):
            pieces = [(" " * MASK_BOX_CHARS, False)]
            gap = space * 0.5
        else:
            shown = was if label == REMASKED else token
            pieces = [(display_token(shown), label == REMASKED)]
            gap = 0.0
        breaks = label not in (MASKED, REMASKED) and "\n" in token
        text, struck = pieces[0]
        piece_font = font(size, bold=label == NEW)
        # Break a token longer than a line into line-sized chunks (rare: long escapes, long words).
        while text:
            fit = len(text)
            while fit > 1 and piece_font.getlength(text[:fit]) > width:
                fit -= 1
            chunk, text = text[:fit], text[fit:]
            w = piece_font.getlength(chunk)
            if x > 0 and x + gap + w > width:
                newline()
            if x == 0 and chunk.startswith(" ") and chunk.strip():
                chunk = chunk.lstrip(" ")  # a word's leading space is not drawn at the start of a line
                w = piece_font.getlength(chunk)
            x += gap if x > 0 else 0.0
            placed.append(Placed(x, y, chunk, label, w, struck, marked))
            x += w
        if breaks:
            newline()
    return placed, y + line_height


ACTIVE_PAD = 3  # pixels the active band reaches left and right of its tokens


def active_bands(placed: list[Placed], left: float, top: float, size: int) -> list[tuple[float, float, float, float]]:
    """The boxes of the active-block band, one per line: from the first to the last active piece of each run of
    consecutive active pieces on that line, a little wider and taller than the text."""
    ascent, descent = font(size).getmetrics()
    bands, run = [], []
    for p in [*placed, None]:
        if p is not None and p.active and (not run or run[-1].y == p.y):
            run.append(p)
            continue
        if run:
            y = top + run[0].y
            bands.append((left + run[0].x - ACTIVE_PAD, y - 1, left + run[-1].x + run[-1].width + ACTIVE_PAD, y + ascent + descent + 1))
        run = [p] if p is not None and p.active else []
    return bands


def draw_tokens(draw: ImageDraw.ImageDraw, placed: list[Placed], left: float, top: float, size: int) -> None:
    ascent, descent = font(size).getmetrics()
    for band in active_bands(placed, left, top, size):  # behind the tokens
        draw.rounded_rectangle(band, radius=5, fill=ACTIVE_FILL, outline=ACTIVE_OUTLINE, width=1)
    for p in placed:
        x, y = left + p.x, top + p.y
        colour = COLOURS[p.label]
        if p.text.strip() == "" and p.label in (MASKED, REMASKED):
            # an empty masked slot: a filled box, outlined orange when it was just re-masked
            box = (x, y + 2, x + p.width, y + ascent + descent - 2)
            draw.rounded_rectangle(box, radius=4, fill=COLOURS[MASKED], outline=colour if p.label == REMASKED else None, width=2)
            continue
        if p.label == NEW:
            draw.rounded_rectangle((x - 1, y, x + p.width + 1, y + ascent + descent), radius=3, fill=NEW_FILL)
        draw.text((x, y), p.text, font=font(size, bold=p.label == NEW), fill=colour)
        if p.struck:
            middle = y + ascent * 0.62
            draw.line((x, middle, x + p.width, middle), fill=colour, width=2)


def draw_legend(draw: ImageDraw.ImageDraw, left: float, top: float, width: float, size: int, labels=LABELS,
                active: bool = False) -> float:
    """A wrapped row of colour swatches with their meaning, and with `active` the active-block band; returns the
    height used."""
    small = font(size)
    x, y = left, top
    line = round(size * 1.6)
    for label in [*labels, *(["active"] if active else [])]:
        text = ACTIVE_LEGEND if label == "active" else LEGEND[label]
        item = size * 1.3 + small.getlength(text) + size * 1.4
        if x > left and x + item > left + width:
            x, y = left, y + line
        swatch = (x, y + 2, x + size, y + size + 2)
        if label == "active":
            draw.rounded_rectangle(swatch, radius=3, fill=ACTIVE_FILL, outline=ACTIVE_OUTLINE, width=1)
        elif label == MASKED:
            draw.rounded_rectangle(swatch, radius=3, fill=COLOURS[MASKED])
        elif label == REMASKED:
            draw.rounded_rectangle(swatch, radius=3, fill=COLOURS[REMASKED])
            draw.line((x - 2, y + 2 + size * 0.55, x + size + 2, y + 2 + size * 0.55), fill=BACKGROUND, width=2)
        else:
            draw.rounded_rectangle(swatch, radius=3, fill=COLOURS[label])
        draw.text((x + size * 1.3, y), text, font=small, fill=DIM)
        x += item
    return y + line - top


def draw_bar(draw, box, parts, background=PANEL) -> None:
    """A horizontal bar in `box` split into (share, colour) parts from the left."""
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=(y1 - y0) // 2, fill=background)
    x = x0
    for share, colour in parts:
        w = (x1 - x0) * max(0.0, min(1.0, share))
        if w >= 1:
            draw.rectangle((x, y0, x + w, y1), fill=colour)
        x += w


def fit_text(text: str, size: int, width: float, bold: bool = False) -> str:
    """`text` shortened with an ellipsis so it fits in `width` pixels."""
    f = font(size, bold)
    if f.getlength(text) <= width:
        return text
    while text and f.getlength(text + "\u2026") > width:
        text = text[:-1]
    return text + "\u2026"


def save_gif(frames: list[Image.Image], durations_ms: list[int], path) -> None:
    """An animated GIF, one image per frame and one duration per frame (holds are longer durations)."""
    # GIF delays are centiseconds and browsers treat delays under 20 ms as 100 ms.
    durations = [max(20, round(d / 10.0) * 10) for d in durations_ms]
    # One palette for every frame, from all of them stacked (the frames share a handful of flat colours and their
    # anti-aliased edges): unchanged pixels stay the same index from frame to frame, so the GIF stores only what a
    # step changed, about a fifth of the size of a palette per frame.
    rgb = [frame.convert("RGB") for frame in frames]
    stack = Image.new("RGB", (max(frame.width for frame in rgb), sum(frame.height for frame in rgb)))
    top = 0
    for frame in rgb:
        stack.paste(frame, (0, top))
        top += frame.height
    shared = stack.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    palette = [frame.quantize(palette=shared, dither=Image.Dither.NONE) for frame in rgb]
    palette[0].save(path, save_all=True, append_images=palette[1:], duration=durations, loop=0, optimize=True, disposal=1)
