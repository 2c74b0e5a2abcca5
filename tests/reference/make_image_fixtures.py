#!/usr/bin/env python3
"""Generates tiny image fixtures in tests/fixtures/images/ and the pixels a reference decoder
produces for them, in tests/fixtures/images/expected.json.

    pip install pillow numpy
    python3 tests/reference/make_image_fixtures.py

Expected pixels are RGB u8, row-major [H, W, 3], flattened. For JPEG and 8-bit PNG they are what
Pillow (libjpeg / zlib) decodes, converted to RGB (alpha dropped, grayscale replicated,
palette expanded). Pillow cannot write 16-bit RGB PNGs, so the 16-bit files are written by hand
here, and their expected pixels are the high byte of each sample (what the Rust decoder keeps).
"""

import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "images"))
W, H = 8, 6


def gradient_rgb():
    y, x = np.mgrid[0:H, 0:W]
    r = (x * 255 // (W - 1)).astype(np.uint8)
    g = (y * 255 // (H - 1)).astype(np.uint8)
    b = ((x * 37 + y * 91) % 256).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png16(path, samples, color_type):
    """samples: uint16 [H, W, C]; color_type 0 (gray) or 2 (RGB). Filter 0 on every row."""
    h, w, _ = samples.shape
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))
    data = b"\x89PNG\r\n\x1a\n"
    data += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    data += png_chunk(b"IDAT", zlib.compress(raw, 9))
    data += png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    rgb = gradient_rgb()
    gray = rgb[..., 0] // 2 + rgb[..., 1] // 2
    expected = {}

    def via_pil(name, save):
        path = os.path.join(OUT, name)
        save(path)
        with Image.open(path) as im:
            px = np.asarray(im.convert("RGB"), dtype=np.uint8)
        expected[name] = px

    # JPEG: 4:4:4 so that chroma upsampling does not differ between decoders.
    via_pil("rgb.jpg", lambda p: Image.fromarray(rgb, "RGB").save(p, quality=92, subsampling=0))
    via_pil("gray.jpg", lambda p: Image.fromarray(gray, "L").save(p, quality=92))
    via_pil(
        "progressive.jpg",
        lambda p: Image.fromarray(rgb, "RGB").save(p, quality=90, subsampling=0, progressive=True),
    )
    # PNG
    via_pil("rgb.png", lambda p: Image.fromarray(rgb, "RGB").save(p))
    alpha = ((np.arange(W * H).reshape(H, W) * 5) % 256).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    via_pil("rgba.png", lambda p: Image.fromarray(rgba, "RGBA").save(p))
    via_pil("gray.png", lambda p: Image.fromarray(gray, "L").save(p))
    la = np.stack([gray, alpha], axis=-1)
    via_pil("gray_alpha.png", lambda p: Image.fromarray(la, "LA").save(p))

    def save_palette(p):
        im = Image.fromarray(rgb, "RGB").quantize(colors=7)
        im.info["transparency"] = 2
        im.save(p, transparency=2)

    via_pil("palette.png", save_palette)
    via_pil("bilevel.png", lambda p: Image.fromarray(gray > 100).convert("1").save(p))

    # 16-bit PNGs, by hand: expected = high byte.
    rng = np.random.default_rng(7)
    s16 = rng.integers(0, 65536, size=(H, W, 3), dtype=np.uint16)
    write_png16(os.path.join(OUT, "rgb16.png"), s16, 2)
    expected["rgb16.png"] = (s16 >> 8).astype(np.uint8)
    g16 = rng.integers(0, 65536, size=(H, W, 1), dtype=np.uint16)
    write_png16(os.path.join(OUT, "gray16.png"), g16, 0)
    expected["gray16.png"] = np.repeat((g16 >> 8).astype(np.uint8), 3, axis=-1)

    out = {
        "generator": "tests/reference/make_image_fixtures.py",
        "images": {
            name: {
                "height": int(px.shape[0]),
                "width": int(px.shape[1]),
                "rgb": [int(v) for v in px.reshape(-1)],
            }
            for name, px in sorted(expected.items())
        },
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
