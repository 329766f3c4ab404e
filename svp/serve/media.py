"""The pictures of a chat request, read under the server's rules, or refused with a message.

A request's images arrive as OpenAI content parts (``image_url``: a data URL, an http(s) URL
or, on this server only, a local path) or in ms-swift's ``images`` list. Every one is decoded
here, before any model work, so that a broken file, an image far over the pixel budget, a
path outside the allowed root or a URL while remote fetching is off comes back as a 4xx that
says what to send instead, and the server keeps serving. The model then gets PIL images.

Messages are rewritten to ms-swift's flat form: string contents with one ``<image>`` tag per
picture, in order, and the pictures in ``images``; the crop and mask skills take the first
picture as the one their boxes and masks refer to.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

IMAGE_TAG = "<image>"


class RequestError(ValueError):
    """A request the server refuses: the HTTP status and a message saying what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MediaRules:
    """What a request may send. ``root``: local paths are read only inside it (None: not at
    all); ``fetch``: reads an http(s) URL (the server passes ms-swift's SSRF-checked fetcher
    when remote pictures are allowed; None: refused); ``max_pixels``: the largest picture
    decoded (width x height)."""

    root: Path | None = None
    fetch: Callable[[str], bytes] | None = None
    max_pixels: int = 40_000_000


def _decode(data: bytes, what: str, rules: MediaRules) -> Image.Image:
    """Bytes -> RGB picture, its size checked before its pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if w * h > rules.max_pixels:
                raise RequestError(413, f"{what} is {w}x{h} = {w * h:,} pixels, over this "
                                        f"server's limit of {rules.max_pixels:,}: send it "
                                        "downscaled (or start the server with a larger "
                                        "--max_image_pixels)")
            image.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(413, f"{what} is too large to decode ({exc}): send it "
                                "downscaled") from exc
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on a broken file
        raise RequestError(400, f"{what} is not a picture PIL can read ({type(exc).__name__}: "
                                f"{exc}): send a PNG, JPEG or WebP file") from exc
    return image.convert("RGB")


def _local(path: str, what: str, rules: MediaRules) -> bytes:
    if rules.root is None:
        raise RequestError(400, f"{what}: local paths are off on this server ({path!r}): send "
                                "the picture as a data URL, or start the server with "
                                "--image_root DIR")
    real = Path(os.path.realpath(path if os.path.isabs(path) else rules.root / path))
    root = Path(os.path.realpath(rules.root))
    if real != root and root not in real.parents:
        raise RequestError(403, f"{what}: {path!r} is outside the allowed image root "
                                f"{rules.root}: send the picture as a data URL or put it "
                                "under the root")
    if not real.is_file():
        raise RequestError(404, f"{what}: no file {path!r} under the image root {rules.root}")
    return real.read_bytes()


def load_image(value, what: str, rules: MediaRules) -> Image.Image:
    """One picture of a request -> RGB PIL image, or :class:`RequestError`."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):  # {"url": ...} (OpenAI) / {"path"|"bytes": ...} (ms-swift)
        value = value.get("url") or value.get("path") or value.get("bytes")
    if isinstance(value, bytes):
        return _decode(value, what, rules)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(400, f"{what}: expected a data URL, an http(s) URL or a path, "
                                f"got {type(value).__name__}")
    text = value.strip()
    low = text[:8].lower()
    if low.startswith(("http://", "https://")):
        if rules.fetch is None:
            raise RequestError(400, f"{what}: remote URLs are off on this server: send the "
                                    "picture as a data URL (data:image/png;base64,...), or "
                                    "start the server with --allow_remote_images")
        try:
            data = rules.fetch(text)
        except Exception as exc:  # noqa: BLE001 - refused, unreachable or too large
            raise RequestError(400, f"{what}: could not fetch {text[:200]!r}: {exc}") from exc
        return _decode(data, what, rules)
    if low.startswith("data:"):
        head, sep, payload = text.partition(",")
        if not sep or ";base64" not in head:
            raise RequestError(400, f"{what}: a data URL must be data:image/...;base64,<data>")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"{what}: the data URL's base64 is broken ({exc})") from exc
        return _decode(data, what, rules)
    if len(text) > 512 and "/" not in text[:64]:  # ms-swift also takes bare base64
        try:
            return _decode(base64.b64decode(text, validate=True), what, rules)
        except (binascii.Error, ValueError):
            pass
    return _decode(_local(text, what, rules), what, rules)


def flatten_messages(messages: list[dict], images: list, rules: MediaRules
                     ) -> tuple[list[dict], list[Image.Image]]:
    """OpenAI messages (content strings or part lists) and ms-swift's ``images`` -> messages
    with string contents holding ``<image>`` tags, and the decoded pictures in tag order.
    Pictures given in ``images`` fill the string tags first, as ms-swift assigns them."""
    out, pictures, listed = [], [], list(images or [])
    n_listed = 0
    for m_i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise RequestError(400, f"message {m_i}: expected an object with role and content")
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            for _ in range(content.count(IMAGE_TAG)):
                if n_listed >= len(listed):
                    raise RequestError(400, f"message {m_i} has more {IMAGE_TAG} tags than "
                                            "pictures in images")
                pictures.append(load_image(listed[n_listed], f"image {len(pictures) + 1}",
                                           rules))
                n_listed += 1
            out.append({**message, "content": content})
            continue
        if not isinstance(content, list):
            raise RequestError(400, f"message {m_i}: content must be a string or a list of "
                                    "parts")
        text = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text.append(str(part.get("text", "")))
            elif kind in ("image_url", "image"):
                pictures.append(load_image(part.get(kind), f"image {len(pictures) + 1}", rules))
                text.append(IMAGE_TAG)
            else:
                raise RequestError(400, f"message {m_i}: content part of type {kind!r} is not "
                                        "supported here (text and image_url are)")
        out.append({**message, "content": "".join(text)})
    if n_listed < len(listed):  # pictures without a tag go before the first user text
        extra = [load_image(v, f"image {len(pictures) + k + 1}", rules)
                 for k, v in enumerate(listed[n_listed:])]
        first = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
        if first is None:
            raise RequestError(400, "pictures were sent without a user message")
        out[first] = {**out[first],
                      "content": IMAGE_TAG * len(extra) + out[first]["content"]}
        pictures = extra + pictures
    return out, pictures
