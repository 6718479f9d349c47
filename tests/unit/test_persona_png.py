"""PNG cards: every text-chunk kind, chara and ccv3 (ccv3 preferred), chunks after IDAT, and clear refusals."""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import pytest
from PIL import Image

from models.persona import CardError, load_card, write_png_card
from models.persona.png import ChunkKind, build_png, read_text_chunks

V2 = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Twotone", "description": "v2 copy"}}
V3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Threesome", "description": "v3 copy"}}


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode("utf-8")).decode("ascii")


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt", "iTXt-compressed"])
@pytest.mark.parametrize(("chunk", "card", "name"), [("chara", V2, "Twotone"), ("ccv3", V3, "Threesome")])
def test_each_chunk_kind_and_name(
    tmp_path: pathlib.Path, kind: ChunkKind, chunk: str, card: dict[str, Any], name: str
) -> None:
    path = tmp_path / "card.png"
    write_png_card(path, card, chunk=chunk, kind=kind)
    assert load_card(path).name == name


def test_written_png_is_a_real_image(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "card.png"
    write_png_card(path, V2)
    with Image.open(path) as image:
        image.load()  # decodes IDAT and checks CRCs
        assert image.size == (1, 1)
        assert json.loads(base64.b64decode(image.info["chara"]))["data"]["name"] == "Twotone"


def test_ccv3_is_preferred_over_chara(tmp_path: pathlib.Path) -> None:
    for order in (["chara", "ccv3"], ["ccv3", "chara"]):
        texts: list[tuple[ChunkKind, str, str]] = [("tEXt", n, b64(V3 if n == "ccv3" else V2)) for n in order]
        path = tmp_path / "both.png"
        path.write_bytes(build_png(texts))
        card = load_card(path)
        assert (card.name, card.spec) == ("Threesome", "chara_card_v3")


def test_broken_ccv3_falls_back_to_chara(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "both.png"
    path.write_bytes(build_png([("tEXt", "ccv3", "!!!not base64!!!"), ("tEXt", "chara", b64(V2))]))
    assert load_card(path).name == "Twotone"


def test_chunk_after_idat(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "late.png"
    write_png_card(path, V2, kind="zTXt", after_idat=True)
    raw = path.read_bytes()
    assert raw.index(b"IDAT") < raw.index(b"zTXt")  # the fixture really puts it after the image data
    assert load_card(path).name == "Twotone"


def test_png_is_sniffed_by_magic_not_extension(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "card.json"  # misnamed
    write_png_card(path, V2)
    assert load_card(path).name == "Twotone"


def test_json_card_saved_as_png_name_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "card.png"
    path.write_text(json.dumps(V2), encoding="utf-8")
    with pytest.raises(CardError, match=r"persona card .*card\.png: not a PNG file"):
        load_card(path)


def test_png_without_card_chunk(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "plain.png"
    path.write_bytes(build_png([("tEXt", "Comment", "just a picture")]))
    with pytest.raises(CardError, match=r"plain\.png: PNG has no 'chara' or 'ccv3' chunk"):
        load_card(path)


def test_chunk_that_is_not_base64(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(build_png([("tEXt", "chara", "@@@@ nope")]))
    with pytest.raises(CardError, match=r"bad\.png: chunk 'chara' is not valid base64"):
        load_card(path)


def test_chunk_that_is_base64_of_non_json(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(build_png([("tEXt", "ccv3", base64.b64encode(b"hello").decode())]))
    with pytest.raises(CardError, match=r"chunk 'ccv3' is not valid JSON"):
        load_card(path)


def test_card_errors_inside_png_name_the_png(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "noname.png"
    write_png_card(path, {"spec": "chara_card_v2", "data": {"name": ""}})
    with pytest.raises(CardError, match=r"noname\.png: 'data\.name' is empty"):
        load_card(path)


def test_base64_without_padding_and_with_line_breaks(tmp_path: pathlib.Path) -> None:
    encoded = b64(V2).rstrip("=")
    wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
    path = tmp_path / "wrapped.png"
    path.write_bytes(build_png([("tEXt", "chara", wrapped)]))
    assert load_card(path).name == "Twotone"


def test_raw_json_in_chunk_is_tolerated(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "raw.png"
    path.write_bytes(build_png([("iTXt", "chara", json.dumps(V2))]))
    assert load_card(path).name == "Twotone"


def test_unicode_survives_every_kind(tmp_path: pathlib.Path) -> None:
    card = {"spec": "chara_card_v2", "data": {"name": "Zoë 🔥", "description": "日本語"}}
    for kind in ("tEXt", "zTXt", "iTXt"):
        path = tmp_path / f"{kind}.png"
        write_png_card(path, card, kind=kind)
        loaded = load_card(path)
        assert (loaded.name, loaded.description) == ("Zoë 🔥", "日本語")


def test_truncated_png_still_yields_earlier_chunks(tmp_path: pathlib.Path) -> None:
    raw = build_png([("tEXt", "chara", b64(V2))])
    path = tmp_path / "cut.png"
    path.write_bytes(raw[: raw.index(b"IDAT") + 6])  # cut in the middle of the image data
    assert load_card(path).name == "Twotone"


def test_read_text_chunks_skips_undecodable_chunk() -> None:
    raw = build_png([("tEXt", "chara", "x"), ("tEXt", "Title", "t")])
    broken = raw.replace(b"chara\x00", b"chara!")  # no keyword separator any more
    assert read_text_chunks(broken) == [("Title", "t")]
