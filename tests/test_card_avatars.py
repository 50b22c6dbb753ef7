"""A card's picture is the card's picture (issue 14 items 1 and 2).

- Import decodes the picture once and stores it at its own size and mode, re-encoded so nothing
  but the image is kept; export carries exactly that picture.
- Pictures over the pixel cap are refused, and the message says why.
- Lists (library, home, chat header) show a small stored thumbnail; the character page shows the
  full picture. Thumbnails of avatars uploaded in a form are made on the first list that shows
  them.

alice imports and uploads; bob is another member who must not see her private characters.
"""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from cardspec.cards import CardError, read_card_file
from cardspec.images import THUMBNAIL_SIDE, thumbnail_webp
from characters.import_export import export_card, import_card_file
from characters.models import Character, Visibility
from chat import actions
from tests.card_corpus import (
    card_png,
    jpeg_image,
    photo_png,
    plain_png,
    png_with_size,
    png_with_texts,
    risu_card,
    risu_v2_copy,
    split_chunks,
    to_base64,
    v2_card,
)


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def chunk_kinds(png: bytes) -> list[bytes]:
    return [kind for kind, _ in split_chunks(png)]


def stored_avatar(character: Character) -> bytes:
    with Character.objects.get(pk=character.pk).avatar.open("rb") as handle:
        return handle.read()


def palette_png() -> bytes:
    """A palette PNG whose colour 0 is transparent."""
    image = Image.new("P", (40, 30))
    image.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30])
    for x in range(40):
        image.putpixel((x, x % 30), 1 + x % 2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def grey_png() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((50, 70)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- The picture at its own size and mode ------------------------------------------------------


@pytest.mark.parametrize(
    "picture",
    [
        pytest.param(lambda: photo_png((1400, 1400)), id="1400x1400 RGB"),
        pytest.param(lambda: photo_png((768, 1152)), id="768x1152 RGB"),
        pytest.param(lambda: photo_png((1100, 1300), "RGBA", seed=2), id="1100x1300 RGBA"),
        pytest.param(palette_png, id="palette with transparency"),
        pytest.param(grey_png, id="grey"),
    ],
)
def test_an_imported_picture_is_stored_and_exported_at_its_own_size_mode_and_pixels(db, picture):
    original = decoded(picture())
    character, _ = import_card_file(card_png(chara=v2_card(), image=picture()), "aiko.png")

    exported = export_card(Character.objects.get(pk=character.pk), "png")[0]

    for png in (stored_avatar(character), exported):
        image = decoded(png)
        assert (image.size, image.mode) == (original.size, original.mode)
        assert image.tobytes() == original.tobytes()
        assert image.info.get("transparency") == original.info.get("transparency")
        if original.mode == "P":
            assert image.getpalette() == original.getpalette()


def test_the_export_carries_exactly_the_stored_picture_then_the_two_card_chunks(db):
    character, _ = import_card_file(card_png(chara=v2_card(), image=photo_png((768, 1152))), "a")
    stored = stored_avatar(character)

    exported = export_card(Character.objects.get(pk=character.pk), "png")[0]

    assert chunk_kinds(exported)[-3:] == [b"tEXt", b"tEXt", b"IEND"]
    picture = [(kind, body) for kind, body in split_chunks(exported) if kind != b"tEXt"]
    assert picture == split_chunks(stored)


def test_everything_but_the_image_is_dropped_on_import(db):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_png((64, 48)))).save(
        buffer,
        format="PNG",
        icc_profile=b"not really a profile",
        exif=b"Exif\0\0II*\0",
        dpi=(300, 300),
    )
    png = png_with_texts(
        [("Comment", "<script>alert(1)</script>"), ("chara", to_base64(v2_card()))],
        image=buffer.getvalue(),
    )
    character, _ = import_card_file(png + b"<html>after the end</html>", "aiko.png")

    stored = stored_avatar(character)

    assert set(chunk_kinds(stored)) == {b"IHDR", b"IDAT", b"IEND"}
    assert b"<script>" not in stored and b"<html>" not in stored
    assert decoded(stored).tobytes() == decoded(photo_png((64, 48))).tobytes()


def test_a_jpeg_uploaded_as_an_avatar_keeps_its_size_as_an_rgb_png(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile("a.jpg", jpeg_image((1300, 900)), content_type="image/jpeg")

    client.post("/characters/new/", {"name": "Photo", "avatar": upload})

    image = decoded(stored_avatar(Character.objects.get(name="Photo")))
    assert (image.format, image.size, image.mode) == ("PNG", (1300, 900), "RGB")


def test_a_picture_over_the_pixel_cap_is_refused_with_the_reason_and_nothing_is_saved(db):
    with pytest.raises(CardError) as refused:
        import_card_file(png_with_size(5000, 4000), "huge.png")

    message = str(refused.value)
    assert "5000 x 4000 pixels" in message
    assert "16,777,216 pixels (4096 x 4096)" in message
    assert "memory" in message
    assert not Character.objects.exists()


def test_a_card_picture_is_decoded_once_on_import(db, monkeypatch):
    """The avatar and its thumbnail both come from the frame the card reader decoded."""
    risu = risu_card()
    png = card_png(chara=risu_v2_copy(risu), ccv3=risu, image=photo_png((96, 64)))
    decoders: list[str] = []
    real = Image._getdecoder

    def counting(mode, decoder_name, *args, **kwargs):
        decoders.append(decoder_name)
        return real(mode, decoder_name, *args, **kwargs)

    monkeypatch.setattr(Image, "_getdecoder", counting)

    import_card_file(png, "risu.png")

    assert decoders == ["zip"]


# --- Thumbnails --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1400, 1400), (128, 128)),
        ((768, 1152), (128, 192)),
        ((1152, 768), (192, 128)),
        ((64, 40), (64, 40)),  # never enlarged
        ((20, 4000), (3, 512)),  # a long, thin picture stays small
    ],
)
def test_a_thumbnail_is_at_most_128_px_on_its_shorter_side(size, expected):
    assert THUMBNAIL_SIDE == 128
    image = Image.new("RGB", size, (10, 20, 30))

    thumbnail = decoded(thumbnail_webp(image))

    assert (thumbnail.format, thumbnail.size) == ("WEBP", expected)


def test_an_import_stores_the_thumbnail_with_the_picture(db):
    imported = read_card_file(card_png(chara=v2_card(), image=photo_png((768, 1152))))
    character, _ = import_card_file(card_png(chara=v2_card(), image=photo_png((768, 1152))), "a")

    stored = Character.objects.get(pk=character.pk)
    assert stored.avatar_thumbnail_of == stored.avatar.name
    with stored.avatar_thumbnail.open("rb") as handle:
        assert handle.read() == imported.avatar.thumbnail
    assert decoded(imported.avatar.thumbnail).size == (128, 192)


@pytest.fixture
def aiko(alice, client):
    """Aiko, imported by alice with a 768 x 1152 picture, shared with everyone."""
    client.force_login(alice)
    character, _ = import_card_file(
        card_png(chara=v2_card(), image=photo_png((768, 1152))), "aiko.png", alice
    )
    return character


def test_lists_show_the_thumbnail_and_the_character_page_the_full_picture(client, alice, aiko):
    conversation = actions.start_conversation(alice, aiko)
    thumbnail = f'src="/characters/{aiko.pk}/avatar-thumbnail.webp"'
    full = f'src="/characters/{aiko.pk}/avatar.png"'

    for url in ("/characters/", "/", f"/conversations/{conversation.pk}/"):
        page = client.get(url).content.decode()
        assert thumbnail in page and full not in page, url
    page = client.get(f"/characters/{aiko.pk}/").content.decode()
    assert full in page and thumbnail not in page


def test_the_thumbnail_view_serves_the_stored_thumbnail_as_an_image_only(client, aiko):
    response = client.get(f"/characters/{aiko.pk}/avatar-thumbnail.webp")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert "sandbox" in response["Content-Security-Policy"]
    with aiko.avatar_thumbnail.open("rb") as handle:
        assert response.content == handle.read()
    full = client.get(f"/characters/{aiko.pk}/avatar.png")
    assert decoded(b"".join(full.streaming_content)).size == (768, 1152)


def test_a_form_upload_gets_its_thumbnail_on_first_view_and_a_new_one_when_replaced(client, alice):
    client.force_login(alice)
    red = SimpleUploadedFile("r.png", plain_png((300, 200), (255, 0, 0)), content_type="image/png")
    client.post("/characters/new/", {"name": "Pic", "avatar": red})
    pic = Character.objects.get(name="Pic")
    url = f"/characters/{pic.pk}/avatar-thumbnail.webp"
    assert not pic.avatar_thumbnail

    first = client.get(url)
    pic.refresh_from_db()
    assert decoded(first.content).size == (192, 128)
    assert decoded(first.content).convert("RGB").getpixel((5, 5))[0] > 200
    assert pic.avatar_thumbnail_of == pic.avatar.name
    assert client.get(url).content == first.content  # stored, not made again

    blue = SimpleUploadedFile("b.png", plain_png((200, 200), (0, 0, 255)), content_type="image/png")
    assert client.post(f"/characters/{pic.pk}/edit/", {"name": "Pic", "avatar": blue}).status_code
    second = decoded(client.get(url).content).convert("RGB")
    assert second.size == (128, 128)
    assert second.getpixel((5, 5))[2] > 200


def test_bob_cannot_fetch_the_thumbnail_of_alices_private_character(client, alice, bob, aiko):
    Character.objects.filter(pk=aiko.pk).update(visibility=Visibility.OWNER)
    client.force_login(bob)

    assert client.get(f"/characters/{aiko.pk}/avatar-thumbnail.webp").status_code == 404
    assert client.get(f"/characters/{aiko.pk}/avatar.png").status_code == 404


def test_a_character_without_a_picture_has_no_thumbnail(client, alice):
    client.force_login(alice)
    character = Character.objects.create(name="Plain")

    assert client.get(f"/characters/{character.pk}/avatar-thumbnail.webp").status_code == 404
