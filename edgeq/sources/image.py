"""An image argument (``run --image``, ``bench --image``), checked before any model loads.

libmtmd decodes images with stb_image; a file that does not start like one of its formats is refused here in one
line, so a text file or a model passed by mistake never reaches the engine.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..files import missing_file

IMAGE_HINT = "Pass a PNG, JPEG, BMP, GIF, PNM or HDR image file."
# stb_image's formats by their first bytes (TGA has no signature: llama.cpp reads it, edgeq does not guess it).
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"BM", "BMP"), (b"8BPS", "PSD"), (b"#?RADIANCE", "HDR"), (b"#?RGBE", "HDR"),
               *((f"P{i}".encode(), "PNM") for i in range(1, 7)))


def image_format(path: Path) -> str | None:
    """The image format ``path`` starts like, or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    return next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)


def require_image(image: str | Path) -> Path:
    """``image`` as a path to a file that is an image; refused in one line otherwise."""
    path = Path(image).expanduser()
    if not path.is_file():
        raise UsageError(f"--image {path} {missing_file(path)}.", hint=IMAGE_HINT)
    if image_format(path) is None:
        raise UsageError(f"--image {path} is not an image (its first bytes are no PNG, JPEG, BMP, GIF, PNM or HDR "
                         f"signature).", hint=IMAGE_HINT)
    return path
