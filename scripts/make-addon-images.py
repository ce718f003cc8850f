"""Draw the add-on's icon.png (128x128) and logo.png (250x100) with the standard library.

    .venv/bin/python scripts/make-addon-images.py [OUT_DIR]   (default: addon/)

A speech bubble with three dots on a teal rounded square; the logo adds "EDGE ASSISTANT"
in a 5x7 pixel font. Shapes are tested per sub-pixel (4x4) for smooth edges, and the
PNG is written with zlib. Not part of the runtime package.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

RGBA = tuple[int, int, int, int]
Shape = Callable[[float, float], bool]

SAMPLES = 4
TEAL_TOP = (0, 150, 170)
TEAL_BOTTOM = (3, 110, 150)
WHITE = (255, 255, 255)
INK = (30, 50, 60)

# 5x7 glyphs, one string per row, "#" = ink.
FONT: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".###."),
    "I": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "#####"),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    " ": (".....",) * 7,
}


def rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> Shape:
    def inside(x: float, y: float) -> bool:
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            return False
        cx = min(max(x, x0 + r), x1 - r)
        cy = min(max(y, y0 + r), y1 - r)
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r

    return inside


def circle(cx: float, cy: float, r: float) -> Shape:
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def triangle(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> Shape:
    def side(p: tuple[float, float], q: tuple[float, float], x: float, y: float) -> float:
        return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])

    def inside(x: float, y: float) -> bool:
        s1, s2, s3 = side(a, b, x, y), side(b, c, x, y), side(c, a, x, y)
        return (s1 >= 0 and s2 >= 0 and s3 >= 0) or (s1 <= 0 and s2 <= 0 and s3 <= 0)

    return inside


def text(message: str, x0: float, y0: float, pixel: float) -> Shape:
    """Pixel-font text with its top-left corner at (x0, y0)."""
    cells: set[tuple[int, int]] = set()
    for index, char in enumerate(message):
        for row, line in enumerate(FONT[char]):
            for col, mark in enumerate(line):
                if mark == "#":
                    cells.add((index * 6 + col, row))

    def inside(x: float, y: float) -> bool:
        col, row = (x - x0) / pixel, (y - y0) / pixel
        return col >= 0 and row >= 0 and (int(col), int(row)) in cells

    return inside


class Canvas:
    """An RGBA image that shapes are blended onto with sub-pixel coverage."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels: list[list[RGBA]] = [[(0, 0, 0, 0)] * width for _ in range(height)]

    def fill(self, shape: Shape, color: Callable[[float, float], tuple[int, int, int]]) -> None:
        step = 1.0 / SAMPLES
        for py in range(self.height):
            row = self.pixels[py]
            for px in range(self.width):
                hits = sum(
                    shape(px + (i + 0.5) * step, py + (j + 0.5) * step)
                    for i in range(SAMPLES)
                    for j in range(SAMPLES)
                )
                if hits:
                    row[px] = _over(row[px], color(px, py), hits / SAMPLES**2)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + b"".join(struct.pack("4B", *pixel) for pixel in row) for row in self.pixels
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 6, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b"")
        )


def _over(under: RGBA, color: tuple[int, int, int], alpha: float) -> RGBA:
    """`color` at opacity `alpha` over `under` (straight alpha)."""
    base_alpha = under[3] / 255
    out_alpha = alpha + base_alpha * (1 - alpha)
    if out_alpha == 0:
        return (0, 0, 0, 0)
    mixed = [
        round((c * alpha + u * base_alpha * (1 - alpha)) / out_alpha)
        for c, u in zip(color, under[:3], strict=True)
    ]
    return (mixed[0], mixed[1], mixed[2], round(out_alpha * 255))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def draw_mark(canvas: Canvas, x0: float, y0: float, size: float) -> None:
    """The icon's drawing in the square (x0, y0, size)."""

    def gradient(_: float, y: float) -> tuple[int, int, int]:
        t = min(max((y - y0) / size, 0.0), 1.0)
        top, bottom = TEAL_TOP, TEAL_BOTTOM
        return (
            round(top[0] + (bottom[0] - top[0]) * t),
            round(top[1] + (bottom[1] - top[1]) * t),
            round(top[2] + (bottom[2] - top[2]) * t),
        )

    def at(fx: float, fy: float) -> tuple[float, float]:
        return x0 + fx * size, y0 + fy * size

    canvas.fill(rounded_rect(*at(0.03, 0.03), *at(0.97, 0.97), 0.2 * size), gradient)
    bubble = rounded_rect(*at(0.17, 0.22), *at(0.83, 0.68), 0.14 * size)
    tail = triangle(at(0.30, 0.64), at(0.48, 0.64), at(0.27, 0.82))
    canvas.fill(lambda x, y: bubble(x, y) or tail(x, y), lambda _x, _y: WHITE)
    for fx in (0.34, 0.50, 0.66):
        canvas.fill(circle(*at(fx, 0.45), 0.055 * size), gradient)


def icon() -> Canvas:
    canvas = Canvas(128, 128)
    draw_mark(canvas, 0, 0, 128)
    return canvas


def logo() -> Canvas:
    canvas = Canvas(250, 100)
    draw_mark(canvas, 4, 8, 84)
    canvas.fill(text("EDGE", 100, 22, 5.0), lambda _x, _y: INK)
    canvas.fill(text("ASSISTANT", 100, 62, 2.6), lambda _x, _y: TEAL_BOTTOM)
    return canvas


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "addon"
    (out / "icon.png").write_bytes(icon().png())
    (out / "logo.png").write_bytes(logo().png())
    print(f"wrote {out / 'icon.png'} and {out / 'logo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
