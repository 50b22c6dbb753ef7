"""Cards come from strangers: no field of a hostile card runs as script, loads an image or styles
the page, on the library, the character page, home or the admin; avatars are images only."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from cardspec.cards import CardError
from characters.import_export import import_card_file
from characters.models import Character
from tests.card_corpus import card_png, plain_png, to_json_bytes
from tests.conftest import admin_change_form

PAYLOAD = (
    "<script>alert(1)</script>"
    "<img src=x onerror=alert(1)>"
    "[click](javascript:alert(1)) "
    '<a href="javascript:alert(1)">link</a> '
    '<a href="JaVaScRiPt:alert(1)">caps</a> '
    "![pic](javascript:alert(1)) "
    '<div style="position:fixed;inset:0;background:url(javascript:alert(1))">overlay</div>'
    "<style>body{display:none}</style>"
    '<svg onload="alert(1)"></svg><iframe src="https://evil.example"></iframe>'
    "{{char}}{% debug %}"
)
# For the fields stored in 200-character columns (name, nickname, creator, version).
SHORT_PAYLOAD = (
    "<script>alert(1)</script><img src=x onerror=alert(1)>"
    '<a href="javascript:alert(1)">x</a><style>*{display:none}</style>'
)
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    b'<script>alert(document.cookie)</script><rect width="8" height="8"/></svg>'
)


def hostile_card() -> dict:
    book_entry = {
        "keys": [PAYLOAD], "content": PAYLOAD, "extensions": {}, "enabled": True,
        "insertion_order": 1, "comment": PAYLOAD, "name": PAYLOAD,
    }  # fmt: skip
    data = {
        name: PAYLOAD
        for name in (
            "description", "personality", "scenario", "first_mes", "mes_example",
            "creator_notes", "system_prompt", "post_history_instructions",
        )
    }  # fmt: skip
    data.update(dict.fromkeys(["name", "nickname", "creator", "character_version"], SHORT_PAYLOAD))
    data.update(
        alternate_greetings=[PAYLOAD, PAYLOAD],
        group_only_greetings=[PAYLOAD],
        tags=[PAYLOAD, "<b>tag</b>"],
        extensions={PAYLOAD: PAYLOAD},
        character_book={"name": PAYLOAD, "entries": [book_entry], "extensions": {}},
    )
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


class Elements(HTMLParser):
    """The real elements of a page, and the text inside its script and style elements."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []
        self.raw: list[tuple[str, str]] = []
        self._open: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {name: value or "" for name, value in attrs}))
        if tag in {"script", "style"}:
            self._open = tag

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.raw.append((self._open, data))


def assert_nothing_live(html: str, *, own_svg: bool = False) -> None:
    """No script, handler, javascript:/data: URL, style trick or embedded document that the
    page did not put there itself (`own_svg`: the admin draws its icons as inline SVG)."""
    page = Elements(html)
    forbidden = {"iframe", "object", "embed", "style"} | (set() if own_svg else {"svg"})
    for tag, attrs in page.found:
        assert tag not in forbidden, (tag, attrs)
        if tag == "script":
            # Only our own scripts (static files, the admin's jsi18n), or inert JSON data.
            src = attrs.get("src", "")
            own = src.startswith("/") and not src.startswith("//")
            assert own or attrs.get("type") == "application/json", attrs
        if tag == "img":
            assert attrs.get("src", "").startswith(("/characters/", "/static/")), attrs
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, attrs)
            if name in {"href", "src", "action", "formaction", "xlink:href"}:
                url = value.strip().lower()
                assert not url.startswith("javascript:"), attrs
                # The only data: URL a page may hold is base.html's empty icon.
                assert not url.startswith("data:") or url == "data:,", attrs
            if name == "style":
                assert "alert" not in value and "fixed" not in value, attrs
    for kind, text in page.raw:
        assert "alert" not in text, (kind, text[:200])


@pytest.fixture
def hostile(db):
    character, _ = import_card_file(card_png(ccv3=hostile_card()), "evil.png", None)
    return character


def test_a_hostile_card_imports_with_every_field_kept_as_text(hostile):
    assert hostile.description == PAYLOAD
    assert hostile.name == SHORT_PAYLOAD
    assert hostile.alternate_greetings == [PAYLOAD, PAYLOAD]


def test_a_name_too_long_for_its_column_is_refused_and_saves_nothing(db):
    card = hostile_card()
    card["data"]["name"] = "x" * 201

    with pytest.raises(CardError, match="name is longer than 200 characters"):
        import_card_file(to_json_bytes(card), "long.json", None)

    assert not Character.objects.exists()


def test_a_hostile_card_runs_nothing_on_the_member_pages(client, alice, hostile):
    client.force_login(alice)
    pages = {
        "library": client.get("/characters/"),
        "search": client.get("/characters/", {"q": "script", "tag": PAYLOAD}),
        "character": client.get(f"/characters/{hostile.pk}/"),
        "home": client.get("/"),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        html = response.content.decode()
        assert_nothing_live(html)
    # The text is there, escaped, for people to read.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["character"].content.decode()


def test_a_hostile_card_owned_by_a_member_runs_nothing_on_its_owners_pages(client, alice):
    character, _ = import_card_file(to_json_bytes(hostile_card()), "evil.json", alice)
    client.force_login(alice)
    for url in (f"/characters/{character.pk}/", f"/characters/{character.pk}/edit/"):
        response = client.get(url)
        assert response.status_code == 200
        assert_nothing_live(response.content.decode())


def test_a_hostile_card_runs_nothing_in_the_admin(admin_client, hostile):
    for url in (
        reverse("admin:characters_character_changelist"),
        reverse("admin:characters_character_change", args=[hostile.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert_nothing_live(response.content.decode(), own_svg=True)


def test_the_avatar_view_serves_png_only_never_sniffed(client, alice, hostile):
    client.force_login(alice)

    response = client.get(f"/characters/{hostile.pk}/avatar.png")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_an_svg_avatar_is_rejected_by_the_member_form(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile("a.svg", SVG, content_type="image/svg+xml")

    response = client.post("/characters/new/", {"name": "Svg", "avatar": upload})

    assert response.status_code == 200
    assert "avatar" in response.context["form"].errors
    assert not Character.objects.filter(name="Svg").exists()


def test_an_svg_avatar_is_rejected_by_the_admin_form(admin_client, hostile):
    url, data = admin_change_form(admin_client, hostile)
    data["avatar"] = SimpleUploadedFile("a.svg", SVG, content_type="image/svg+xml")

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert "avatar" in response.context["adminform"].form.errors
    hostile.refresh_from_db()
    assert hostile.avatar.name.endswith(".png")


def test_an_svg_card_image_is_rejected_on_import(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile("evil.png", SVG, content_type="image/png")

    page = client.post("/characters/import/", {"files": [upload]}).content.decode()

    assert "imported as" not in page
    assert not Character.objects.exists()


def test_an_image_avatar_is_stored_as_a_fresh_png(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile("a.png", plain_png() + b"<script>", content_type="image/png")

    client.post("/characters/new/", {"name": "Pic", "avatar": upload})

    stored = Character.objects.get(name="Pic")
    with stored.avatar.open("rb") as handle:
        data = handle.read()
    assert data.startswith(b"\x89PNG") and b"<script>" not in data
    assert io.BytesIO(data).getbuffer().nbytes > 0
