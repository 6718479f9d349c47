"""PNG character cards: the card JSON rides in a text chunk of the character's portrait.

Chunk ``chara`` holds base64 of the V2 JSON, ``ccv3`` base64 of the V3 JSON; a card may carry both, and ``ccv3``
wins because it is the newer, richer copy. The chunk can be tEXt, zTXt or iTXt and can sit anywhere, after IDAT
included, so the whole file is walked. Only the standard library is used: reading a card must not need Pillow.

``build_png``/``write_png_card`` write small real PNGs (a 1x1 pixel plus text chunks) for fixtures and tests.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Final, Literal

log = logging.getLogger(__name__)

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
CARD_CHUNKS: Final = ("ccv3", "chara")  # in order of preference
TEXT_KINDS: Final = (b"tEXt", b"zTXt", b"iTXt")
# zTXt/iTXt are compressed; a hostile file could inflate to gigabytes. No real card text comes near this.
MAX_TEXT_BYTES: Final = 16 * 1024 * 1024

# "iTXt" is written uncompressed, "iTXt-compressed" with zlib: readers meet both.
ChunkKind = Literal["tEXt", "zTXt", "iTXt", "iTXt-compressed"]


class PngCardError(ValueError):
    """The PNG cannot yield a card; ``load_card`` prefixes the file name."""


def is_png(data: bytes) -> bool:
    """Whether ``data`` starts with the PNG signature."""
    return data.startswith(PNG_SIGNATURE)


def iter_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(type, payload)`` for each chunk, stopping at IEND or at a truncated chunk.

    CRCs are not checked: card editors have been known to write bad ones, and the JSON inside is validated anyway.
    """
    if not is_png(data):
        raise PngCardError("not a PNG file")
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        start = offset + 8
        end = start + length
        if end + 4 > len(data):
            log.debug("PNG truncated in chunk %r at byte %d", kind, offset)
            return
        yield kind, data[start:end]
        if kind == b"IEND":
            return
        offset = end + 4  # skip the CRC


def read_text_chunks(data: bytes) -> list[tuple[str, str]]:
    """All ``(keyword, text)`` pairs from tEXt, zTXt and iTXt chunks, in file order.

    A text chunk that cannot be decoded is skipped with a warning; it may be one the card does not need.
    """
    texts: list[tuple[str, str]] = []
    for kind, payload in iter_chunks(data):
        if kind not in TEXT_KINDS:
            continue
        try:
            texts.append(_decode_text_chunk(kind, payload))
        except (ValueError, zlib.error) as exc:
            log.warning("PNG %s chunk skipped: %s", kind.decode("ascii"), exc)
    return texts


def read_card_json(data: bytes) -> tuple[str, object]:
    """Return ``(chunk_name, decoded_json)`` of the preferred card chunk (``ccv3``, else ``chara``).

    When ``ccv3`` is broken but ``chara`` is fine, the ``chara`` copy is used and a warning logged; when every
    copy is broken, the error of the preferred one is raised.
    """
    found: dict[str, str] = {}
    for keyword, text in read_text_chunks(data):
        keyword = keyword.lower()
        if keyword in CARD_CHUNKS and keyword not in found:
            found[keyword] = text
    if not found:
        raise PngCardError("PNG has no 'chara' or 'ccv3' chunk")

    first_error: PngCardError | None = None
    for name in CARD_CHUNKS:
        if name not in found:
            continue
        try:
            return name, decode_card_chunk(name, found[name])
        except PngCardError as exc:
            first_error = first_error or exc
            log.warning("PNG card chunk %r unusable (%s); trying the next one", name, exc)
    assert first_error is not None  # found is non-empty, so some chunk was tried
    raise first_error


def decode_card_chunk(name: str, text: str) -> object:
    """Decode one card chunk's text: base64 of UTF-8 JSON (raw JSON is tolerated too)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        raw = stripped.encode("utf-8")  # some tools skip the base64 step
    else:
        compact = "".join(stripped.split())
        compact += "=" * (-len(compact) % 4)  # some encoders drop the padding
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PngCardError(f"chunk {name!r} is not valid base64") from exc
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise PngCardError(f"chunk {name!r} does not decode to UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise PngCardError(f"chunk {name!r} is not valid JSON ({exc.msg})") from exc


def _decode_text_chunk(kind: bytes, payload: bytes) -> tuple[str, str]:
    """Keyword and text of one tEXt/zTXt/iTXt payload (PNG spec, section 11.3.4)."""
    keyword, sep, rest = payload.partition(b"\0")
    if not sep:
        raise ValueError("no keyword separator")
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, rest.decode("latin-1")
    if kind == b"zTXt":
        # One byte of compression method (0 = zlib), then the compressed Latin-1 text.
        return name, _inflate(rest[1:]).decode("latin-1")
    # iTXt: compression flag, method, language tag\0, translated keyword\0, then UTF-8 text.
    if len(rest) < 2:
        raise ValueError("iTXt header is truncated")
    compressed = rest[0] == 1
    language_and_more = rest[2:]
    _language, _, after_language = language_and_more.partition(b"\0")
    _translated, _, body = after_language.partition(b"\0")
    if compressed:
        body = _inflate(body)
    return name, body.decode("utf-8")


def _inflate(data: bytes) -> bytes:
    """zlib-decompress at most ``MAX_TEXT_BYTES``, refusing anything that would inflate further."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"compressed text inflates past {MAX_TEXT_BYTES} bytes")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Writing (fixtures and tests)


def build_png(text_chunks: Sequence[tuple[ChunkKind, str, str]], *, after_idat: bool = False) -> bytes:
    """A valid 1x1 grey PNG carrying ``(kind, keyword, text)`` chunks, before IDAT or (``after_idat``) after it."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))  # 1x1, 8-bit greyscale
    image = _chunk(b"IDAT", zlib.compress(b"\x00\x80"))  # filter byte 0, one mid-grey pixel
    texts = b"".join(_encode_text_chunk(kind, keyword, text) for kind, keyword, text in text_chunks)
    body = header + (image + texts if after_idat else texts + image)
    return PNG_SIGNATURE + body + _chunk(b"IEND", b"")


def write_png_card(
    path: str | os.PathLike[str],
    card_json: Mapping[str, object] | str,
    chunk: str = "chara",
    kind: ChunkKind = "tEXt",
    *,
    after_idat: bool = False,
) -> None:
    """Write a PNG card: ``card_json`` (a dict, or JSON text as-is) base64-encoded into one text chunk."""
    text = card_json if isinstance(card_json, str) else json.dumps(card_json, ensure_ascii=False)
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    with open(path, "wb") as handle:
        handle.write(build_png([(kind, chunk, encoded)], after_idat=after_idat))


def _encode_text_chunk(kind: ChunkKind, keyword: str, text: str) -> bytes:
    key = keyword.encode("latin-1")
    if kind == "tEXt":
        return _chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    if kind == "zTXt":
        return _chunk(b"zTXt", key + b"\0\0" + zlib.compress(text.encode("latin-1")))
    # iTXt: compression flag and method, empty language tag, empty translated keyword, then the text.
    if kind == "iTXt-compressed":
        return _chunk(b"iTXt", key + b"\0\1\0\0\0" + zlib.compress(text.encode("utf-8")))
    return _chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
