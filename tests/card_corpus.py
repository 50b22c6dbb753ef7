"""Character cards built in code for the card tests: good cards of every version, real-world
quirks, and broken or hostile containers (PNG chunks with bad CRCs, truncated files, zip bombs).

Everything here returns fresh objects, so a test may modify what it gets.
"""

from __future__ import annotations

import base64
import functools
import json
import random
import struct
import zipfile
import zlib
from io import BytesIO
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, PngImagePlugin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- Card objects ------------------------------------------------------------------------------


def v1_card() -> dict[str, Any]:
    """A flat V1 card (TavernAI era)."""
    return {
        "name": "Aiko",
        "description": "{{char}} is a cheerful librarian.",
        "personality": "kind, curious",
        "scenario": "{{user}} visits the library after hours.",
        "first_mes": "Oh! You startled me, {{user}}.",
        "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Hello there!",
    }


def lorebook_entry(**overrides: Any) -> dict[str, Any]:
    """A complete V2 lorebook entry, with an unknown extension and an unknown key."""
    entry: dict[str, Any] = {
        "keys": ["library", "books"],
        "content": "The library has a hidden archive.",
        "extensions": {"depth": 4, "weight": 10, "some_app/flag": True},
        "enabled": True,
        "insertion_order": 100,
        "case_sensitive": False,
        "name": "Archive",
        "priority": 10,
        "id": 1,
        "comment": "Secret room",
        "selective": True,
        "secondary_keys": ["archive"],
        "constant": False,
        "position": "before_char",
        "probability": 100,
    }
    entry.update(overrides)
    return entry


def v2_card() -> dict[str, Any]:
    """A complete SillyTavern-style V2 card.

    It has a lorebook, unknown `extensions` keys, an unknown `data` key, SillyTavern's copies of
    the V1 fields beside `data`, and other unknown top-level keys.
    """
    data = {
        **v1_card(),
        "creator_notes": "Best with a slow pace.",
        "system_prompt": "{{original}}\nStay in character.",
        "post_history_instructions": "Keep replies short.",
        "alternate_greetings": ["Welcome back!", "Shh, this is a library."],
        "character_book": {
            "name": "Library lore",
            "description": "Facts about the library",
            "scan_depth": 4,
            "token_budget": 512,
            "recursive_scanning": False,
            "extensions": {"world_app/setting": {"x": 1}},
            "entries": [
                lorebook_entry(),
                lorebook_entry(
                    keys=["cat"],
                    content="A cat named Mochi sleeps on the counter.",
                    id=2,
                    insertion_order=50,
                    extensions={},
                    some_future_key=[1, 2, 3],
                ),
            ],
        },
        "tags": ["female", "library"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {
            "talkativeness": "0.5",
            "fav": False,
            "world": "Library lore",
            "depth_prompt": {"prompt": "Aiko whispers.", "depth": 4, "role": "system"},
            "chub": {"id": 12345, "full_path": "someone/aiko"},
            "regex_scripts": [{"scriptName": "trim", "findRegex": "/x/g"}],
        },
        "avatar": "none",
    }
    return {
        **v1_card(),
        "tags": ["female", "library"],
        "creatorcomment": "Best with a slow pace.",
        "talkativeness": "0.5",
        "fav": False,
        "create_date": "2024-5-1 @12h 30m 10s 123ms",
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": data,
    }


def v3_card() -> dict[str, Any]:
    """A complete V3 card with assets, decorators in lorebook content and every V3 field."""
    card = v2_card()
    data = card["data"]
    data["group_only_greetings"] = ["Hello, everyone!"]
    data["nickname"] = "Ai"
    data["assets"] = [
        {
            "type": "icon",
            "uri": "embeded://assets/icon/images/main.png",
            "name": "main",
            "ext": "png",
        },
        {"type": "background", "uri": "ccdefault:", "name": "main", "ext": "png"},
        {"type": "x_custom", "uri": "https://example.com/a.png", "name": "extra", "ext": "png"},
    ]
    data["creator_notes_multilingual"] = {"en": "Best with a slow pace.", "ja": "ゆっくり"}
    data["source"] = ["https://example.com/aiko"]
    data["creation_date"] = 1714566610
    data["modification_date"] = 1714566700
    for entry in data["character_book"]["entries"]:
        entry["use_regex"] = False
    data["character_book"]["entries"][0]["content"] = (
        "@@depth 3\n@@role system\n@@@instruct_depth 3\n\nThe library has a hidden archive."
    )
    card["spec"] = "chara_card_v3"
    card["spec_version"] = "3.0"
    return card


def community_card() -> dict[str, Any]:
    """A V3 card with the quirks seen in public cards rather than in the spec."""
    card = v3_card()
    data = card["data"]
    data["name"] = "美咲 🌸"
    data["description"] = "한국어와 日本語.\r\nSecond line 🎉\r\n"
    data["creation_date"] = 1714566610123  # milliseconds
    data["modification_date"] = "1714566700"
    data["creator_notes"] = None
    data["character_book"]["entries"].append(
        {
            "keys": [""],
            "content": "Always here.",
            "extensions": {},
            "enabled": True,
            "insertion_order": 0,
            "position": "",
            "probability": None,
            "secondary_keys": "alpha, beta,gamma",
            "use_regex": False,
            "constant": True,
        }
    )
    return card


def risu_card(entries: int = 34) -> dict[str, Any]:
    """A V3 card as RisuAI writes it (`createBaseV3`): every V3 field filled in, `risuai`
    extensions with a `source` list, its creation date in milliseconds, and `entries` lorebook entries
    whose text ends in blank lines and spaces (which Risu trims in its V2 copy)."""
    book_entries = [
        {
            "keys": [f"place {number}", f"thing {number}"],
            "content": f"Lore number {number}: the tower's floor {number} is sealed. " * 30
            + " \n\n",
            "extensions": {"risu_activationPercent": 100, "risu_loreCache": None},
            "enabled": True,
            "insertion_order": 100 + number,
            "constant": number == 0,
            "selective": False,
            "name": f"Entry {number}",
            "comment": f"Entry {number}",
            "case_sensitive": False,
            "use_regex": False,
        }
        for number in range(entries)
    ]
    data = {
        **v1_card(),
        "creator_notes": "Made in RisuAI.",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["Hello again."],
        "character_book": {
            "scan_depth": 7,
            "token_budget": 2048,
            "recursive_scanning": False,
            "extensions": {"risu_fullWordMatching": False},
            "entries": book_entries,
        },
        "tags": ["fantasy"],
        "creator": "",
        "character_version": "",
        "extensions": {
            "risuai": {
                "bias": [],
                "viewScreen": "none",
                "customScripts": [{"comment": "trim", "in": "x", "out": "y", "type": "editoutput"}],
                "utilityBot": False,
                "sdData": [["always", "solo, 1girl"]],
                "backgroundHTML": "",
                "license": "",
                "triggerscript": [],
                "additionalText": "",
                "virtualscript": "",
                "largePortrait": True,
                "lorePlus": False,
                "inlayViewScreen": False,
                "vits": {},
                "lowLevelAccess": False,
                "defaultVariables": "",
                "source": ["https://realm.risuai.net/character/0123abcd"],
            },
            "depth_prompt": {"depth": 0, "prompt": ""},
        },
        "group_only_greetings": [],
        "nickname": "",
        "source": [],
        "creation_date": 1719942734577,
        "modification_date": 1719942801,
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    }
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def risu_v2_copy(v3: dict[str, Any]) -> dict[str, Any]:
    """The V2 copy RisuAI writes beside its V3 card: only the V2 fields, no
    `extensions.risuai.source`, no `use_regex`, and lorebook entry text trimmed."""
    data = json.loads(json.dumps(v3["data"]))
    v2_names = (
        *v1_card(),
        "creator_notes",
        "system_prompt",
        "post_history_instructions",
        "alternate_greetings",
        "character_book",
        "tags",
        "creator",
        "character_version",
        "extensions",
    )
    data = {name: data[name] for name in v2_names if name in data}
    data["extensions"].get("risuai", {}).pop("source", None)
    for entry in (data.get("character_book") or {}).get("entries", []):
        entry.pop("use_regex", None)
        entry["content"] = entry["content"].strip()
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def card_without_lorebook(spec_card: dict[str, Any]) -> dict[str, Any]:
    """The same card with `character_book: null`, as many exporters write it."""
    spec_card["data"]["character_book"] = None
    return spec_card


def to_json_bytes(card: Any) -> bytes:
    """Card JSON as a file would hold it."""
    return json.dumps(card, ensure_ascii=False).encode("utf-8")


def to_base64(card: Any) -> str:
    """Card JSON as a PNG text chunk holds it."""
    return base64.b64encode(to_json_bytes(card)).decode("ascii")


# --- PNG ---------------------------------------------------------------------------------------


def plain_png(size: tuple[int, int] = (8, 8), color: tuple[int, ...] = (200, 30, 30)) -> bytes:
    """A small PNG without any text chunks."""
    buffer = BytesIO()
    Image.new("RGB" if len(color) == 3 else "RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def photo_png(size: tuple[int, int], mode: str = "RGB", *, seed: int = 1) -> bytes:
    """A deterministic picture that compresses like a photo or a detailed illustration: blurred
    shapes plus 3 bits of noise. 1400 x 1400 RGB gives a PNG of about 2.8 MB (a big RisuAI
    card), 768 x 1152 about 1.3 MB (a typical chub card). Written by Pillow with its defaults,
    as another app would write it. Cached: the bytes are immutable and take a second to build.
    """
    rng = random.Random(seed)
    width, height = size
    bands = len(Image.new(mode, (1, 1)).getbands())
    image = Image.new(mode, size)
    draw = ImageDraw.Draw(image)
    for _ in range(300):
        x, y, radius = rng.randrange(width), rng.randrange(height), rng.randrange(20, 300)
        color = tuple(rng.randrange(256) for _ in range(bands))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
    image = image.filter(ImageFilter.GaussianBlur(12))
    noise = Image.frombytes(mode, size, rng.randbytes(width * height * bands))
    image = ImageChops.add(image, noise.point(lambda value: value & 0b111))
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_image(size: tuple[int, int] = (8, 8)) -> bytes:
    """A small JPEG with EXIF data."""
    buffer = BytesIO()
    image = Image.new("RGB", size, (10, 120, 200))
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def text_chunk(keyword: str, value: str) -> bytes:
    """A `tEXt` chunk."""
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + value.encode("latin-1"))


def split_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, body) chunks of a well-formed PNG, in file order."""
    assert png.startswith(PNG_SIGNATURE)
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunks.append((kind, png[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def join_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG from (type, body) chunks, with correct CRCs."""
    return PNG_SIGNATURE + b"".join(chunk(kind, body) for kind, body in chunks)


def png_with_texts(
    texts: list[tuple[str, str]], *, image: bytes | None = None, before_idat: bool = False
) -> bytes:
    """A PNG with the given `tEXt` chunks, just before IEND (or just before IDAT)."""
    chunks = split_chunks(image or plain_png())
    extra = [
        (b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")) for key, value in texts
    ]
    anchor = b"IDAT" if before_idat else b"IEND"
    index = next(i for i, (kind, _) in enumerate(chunks) if kind == anchor)
    return join_chunks(chunks[:index] + extra + chunks[index:])


def card_png(chara: Any = None, ccv3: Any = None, **options: Any) -> bytes:
    """A card PNG with a `chara` and/or `ccv3` chunk holding the given card objects."""
    texts = []
    if chara is not None:
        texts.append(("chara", chara if isinstance(chara, str) else to_base64(chara)))
    if ccv3 is not None:
        texts.append(("ccv3", ccv3 if isinstance(ccv3, str) else to_base64(ccv3)))
    return png_with_texts(texts, **options)


def png_via_pillow_text(keyword: str, value: str) -> bytes:
    """A PNG whose text chunk Pillow wrote (before IDAT), as many tools do."""
    info = PngImagePlugin.PngInfo()
    info.add_text(keyword, value)
    buffer = BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def with_bad_crc(png: bytes, kind: bytes, occurrence: int = 0) -> bytes:
    """Flip one bit in the CRC of the `occurrence`-th chunk of type `kind`."""
    offset, seen = len(PNG_SIGNATURE), 0
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        if png[offset + 4 : offset + 8] == kind:
            if seen == occurrence:
                crc_at = offset + 8 + length
                return png[:crc_at] + bytes([png[crc_at] ^ 1]) + png[crc_at + 1 :]
            seen += 1
        offset += 12 + length
    raise AssertionError(f"no {kind!r} chunk")


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with (tiny, invalid) image data.

    Only the header matters: pixel limits must refuse it before any decoding.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return join_chunks(
        [
            (b"IHDR", header),
            (b"IDAT", zlib.compress(b"\0" * 16)),
            (b"tEXt", b"chara\0e30="),
            (b"IEND", b""),
        ]
    )


# --- WebP (TavernAI) ----------------------------------------------------------------------------

USER_COMMENT = 0x9286
EXIF_IFD = 0x8769
ASCII_CODE = b"ASCII\0\0\0"


def byte_list(card: Any) -> bytes:
    """Card JSON as TavernAI put it in the UserComment: its UTF-8 bytes as "123,34,..."."""
    return ",".join(str(byte) for byte in to_json_bytes(card)).encode("ascii")


def tiff_with_user_comment(value: bytes, *, in_exif_ifd: bool = False, kind: int = 7) -> bytes:
    """Big-endian TIFF (EXIF) data holding one UserComment of type `kind` (7: undefined): in IFD0
    as libvips writes it for TavernAI, or in the Exif IFD where EXIF defines it."""

    def ifd(entries: list[tuple[int, int, int, bytes]], at: int) -> bytes:
        # Entries whose value does not fit in 4 bytes point past the IFD, in order.
        data_at = at + 2 + 12 * len(entries) + 4
        table, data = struct.pack(">H", len(entries)), b""
        for tag, type_, count, payload in entries:
            if len(payload) <= 4:
                table += struct.pack(">HHI", tag, type_, count) + payload.ljust(4, b"\0")
            else:
                table += struct.pack(">HHII", tag, type_, count, data_at + len(data))
                data += payload
        return table + struct.pack(">I", 0) + data

    comment = (USER_COMMENT, kind, len(value), value)
    if in_exif_ifd:
        exif_at = 8 + 2 + 12 + 4  # right after IFD0 and its one entry
        ifd0 = ifd([(EXIF_IFD, 4, 1, struct.pack(">I", exif_at))], 8)
        return b"MM\0*" + struct.pack(">I", 8) + ifd0 + ifd([comment], exif_at)
    return b"MM\0*" + struct.pack(">I", 8) + ifd([comment], 8)


def webp_chunks(webp: bytes) -> list[tuple[bytes, bytes]]:
    """The (fourcc, payload) chunks of a WebP file."""
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    chunks, offset = [], 12
    while offset + 8 <= len(webp):
        kind, (size,) = (
            webp[offset : offset + 4],
            struct.unpack("<I", webp[offset + 4 : offset + 8]),
        )
        chunks.append((kind, webp[offset + 8 : offset + 8 + size]))
        offset += 8 + size + size % 2
    return chunks


def join_webp_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A WebP file from (fourcc, payload) chunks (odd payloads padded, as RIFF asks)."""
    body = b"".join(
        kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)
        for kind, data in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_image(
    size: tuple[int, int] = (8, 8),
    *,
    exif: bytes = b"",
    xmp: bytes = b"",
    color: tuple[int, ...] = (30, 120, 60),
    picture: Image.Image | None = None,
) -> bytes:
    """A WebP picture written by Pillow (libwebp) at TavernAI's quality, with the given EXIF and
    XMP chunks: `picture`, or a plain one of `size` and `color`."""
    if picture is None:
        picture = Image.new("RGB" if len(color) == 3 else "RGBA", size, color)
    buffer = BytesIO()
    picture.save(buffer, format="WEBP", exif=exif, xmp=xmp, quality=95)
    return buffer.getvalue()


def tavernai_webp(
    card: Any = None,
    *,
    comment: bytes | None = None,
    in_exif_ifd: bool = False,
    exif_header: bool = True,
    size: tuple[int, int] = (8, 8),
    picture: Image.Image | None = None,
) -> bytes:
    """A WebP card as TavernAI wrote it: the card (default: V1) as a byte list behind "ASCII\0\0\0"
    in IFD0's UserComment, the EXIF chunk starting with libvips's "Exif\0\0" header. `comment`
    replaces the whole tag value; `in_exif_ifd` puts it where Pillow-based tools write it."""
    value = comment if comment is not None else ASCII_CODE + byte_list(card or v1_card())
    exif = tiff_with_user_comment(value, in_exif_ifd=in_exif_ifd)
    webp = webp_image(size, exif=exif, picture=picture)
    if not exif_header:
        return webp
    # Pillow's writer drops the "Exif\0\0" header libvips keeps; put it back.
    chunks = [
        (kind, b"Exif\0\0" + data if kind == b"EXIF" else data) for kind, data in webp_chunks(webp)
    ]
    return join_webp_chunks(chunks)


# --- CHARX -------------------------------------------------------------------------------------


def charx(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with the given members."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def charx_card(
    card: Any = None, *, icon: bytes | None = None, extra: dict[str, bytes] | None = None
) -> bytes:
    """A CHARX with `card.json` (default: the V3 card) and, optionally, its main icon."""
    members = {"card.json": to_json_bytes(card if card is not None else v3_card())}
    if icon is not None:
        members["assets/icon/images/main.png"] = icon
    members.update(extra or {})
    return charx(members)


def zip_bomb_member(name: str = "card.json", size: int = 64 * 1024 * 1024) -> bytes:
    """A zip whose member unpacks to `size` bytes of spaces from a few dozen KiB."""
    buffer = BytesIO()
    block = b" " * (1024 * 1024)
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        for _ in range(size // len(block)):
            member.write(block)
    return buffer.getvalue()


def zip_with_lying_size(card_bytes: bytes, declared: int) -> bytes:
    """A zip whose `card.json` declares `declared` bytes but unpacks to more (headers patched)."""
    real = charx({"card.json": card_bytes})
    actual = len(card_bytes).to_bytes(4, "little")
    fake = declared.to_bytes(4, "little")
    # The uncompressed size sits at offset 22 of the local header and 24 of the central one.
    local = real.index(b"PK\x03\x04")
    central = real.index(b"PK\x01\x02")
    patched = bytearray(real)
    assert patched[local + 22 : local + 26] == actual
    assert patched[central + 24 : central + 28] == actual
    patched[local + 22 : local + 26] = fake
    patched[central + 24 : central + 28] = fake
    return bytes(patched)


def encrypted_zip(card_bytes: bytes) -> bytes:
    """A zip whose `card.json` is flagged as encrypted."""
    real = bytearray(charx({"card.json": card_bytes}))
    local = real.index(b"PK\x03\x04")
    central = real.index(b"PK\x01\x02")
    real[local + 6] |= 0x1
    real[central + 8] |= 0x1
    return bytes(real)


# --- Cards with each property real cards showed (issue 14) -------------------------------------


def _entry(**fields: Any) -> dict[str, Any]:
    """A minimal lorebook entry with the given fields on top."""
    return {
        "keys": ["tower"],
        "content": "The tower has no door.",
        "extensions": {},
        "enabled": True,
        "insertion_order": 10,
        **fields,
    }


def issue_14_cards() -> dict[str, dict[str, Any]]:
    """Card objects, each with one of the properties real community cards showed, by name."""
    cards: dict[str, dict[str, Any]] = {
        "v1": v1_card(),
        "v2 with a lorebook without use_regex": v2_card(),
        "v3": v3_card(),
        "community v3": community_card(),
        "risu v3": risu_card(entries=3),
    }

    card = v2_card()
    card["data"]["character_book"]["entries"][0]["content"] = "@@depth 3\nLooks like a decorator."
    cards["v2 with decorator-like lorebook text"] = card

    card = v2_card()
    for entry in card["data"]["character_book"]["entries"]:
        entry["use_regex"] = None
    cards["v2 with use_regex null"] = card

    card = v2_card()
    card["data"]["creation_date"] = "2023-5-12 @21h 32m 29s 228ms"
    card["data"]["modification_date"] = "1683900749"
    cards["v2 with SillyTavern date text"] = card

    card = v2_card()
    card["data"]["creation_date"], card["data"]["modification_date"] = 1719942734577, 1719942734
    cards["v2 with dates in milliseconds"] = card

    card = v2_card()
    card["data"]["extensions"]["depth_prompt"] = {"prompt": "Aiko whispers.", "depth": 2}
    cards["v2 with a depth prompt without role"] = card

    card = v2_card()
    card["spec_version"] = 2
    card["data"].update(creator_notes=None, tags=None, alternate_greetings=None, system_prompt=None)
    card["data"]["character_book"] = None
    cards["v2 with nulls and a numeric spec_version"] = card

    card = v2_card()
    card["spec_version"] = "2.1"
    cards["v2 with a newer spec_version"] = card

    card = v2_card()
    card["data"]["character_version"] = 1.2
    cards["v2 with a numeric character_version"] = card

    card = v3_card()
    del card["data"]["nickname"]
    card["data"]["group_only_greetings"] = []
    cards["v3 without nickname and with no group greetings"] = card

    card = v3_card()
    card["data"]["nickname"] = ""
    cards["v3 with an empty nickname"] = card

    card = v3_card()
    for entry in card["data"]["character_book"]["entries"]:
        del entry["use_regex"]
    cards["v3 with entries without use_regex"] = card

    card = v3_card()
    card["spec_version"] = 3.0
    card["data"].update(nickname=None, source=None, assets=None, creation_date=None)
    card["data"]["group_only_greetings"] = None
    cards["v3 with nulls and a numeric spec_version"] = card

    card = v3_card()
    card["spec_version"] = "3.2"
    cards["v3 with a newer spec_version"] = card

    card = v3_card()
    card["data"]["character_version"] = 2
    card["data"]["character_book"]["entries"][1].update(selective=True, secondary_keys="cat, Mochi")
    cards["v3 with an integer character_version and secondary keys as text"] = card

    card = v3_card()
    card["data"]["extensions"]["depth_prompt"] = {"prompt": "Mind the stairs.", "depth": 1}
    card["data"]["character_book"]["entries"] = [
        _entry(position="before_char", use_regex=False),
        _entry(position="after_char", use_regex=True, keys=["/tow(er)?/i"]),
        _entry(position="", use_regex=False),
        *(
            _entry(extensions={"position": position, "depth": 2, "role": 1}, use_regex=False)
            for position in range(5)
        ),
        _entry(content="@@depth 0\n@@role assistant\nDecorated.", use_regex=False),
        _entry(content="@@activate\n@@@dont_activate\n\nForced.", use_regex=False),
    ]
    cards["v3 with depth prompt, positions and decorators"] = card
    return cards
