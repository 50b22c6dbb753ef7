"""The card editors (issue 14): tags, greetings and the lorebook as form widgets, in the member's
character editor and the admin, checked by the import's rules.

alice edits her own characters (and their lorebooks); bob is another member who must not.
Posts are what a page sends: `form_data` reads a rendered form as a browser without JavaScript
posts it; a post the script shapes (chips, moved and removed rows) is written out by hand.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from cardspec.cards import card_to_v3_dict
from cardspec.lorebook import AT_DEPTH, BEFORE_CHAR, entry_placement
from characters.forms import CharacterForm, MemberCharacterForm
from characters.import_export import import_card_file
from characters.lorebook_editor import (
    NEW_ENTRY,
    entry_row,
    merge_row,
    read_post,
    split_regex_keys,
)
from characters.models import Character, Visibility
from tests.card_corpus import community_card, lorebook_entry, to_json_bytes, v2_card
from tests.conftest import admin_change_form
from tests.html_forms import form_data

# --- Cards --------------------------------------------------------------------------------------


def st_entry(**overrides: Any) -> dict[str, Any]:
    """An entry as SillyTavern exports it: its own placement in `extensions`, at depth."""
    entry = lorebook_entry(
        keys=["/a{1,3}b/i", "[x,y]z"],
        use_regex=True,
        id="st-7",
        insertion_order=12.5,
        content="Line one\r\nLine two\r\n",
        extensions={"position": 4, "depth": 2, "role": 1, "selectiveLogic": 0, "sticky": 3},
        name="Regex, with a comma",
        secondary_keys=[],
        selective=False,
    )
    entry.update(overrides)
    return entry


def rich_card() -> dict[str, Any]:
    """A V3 card whose lorebook holds what real cards carry: V3 decorators, `keys: [""]`,
    secondary keys given as one string, `position: ""`, null probability (all from
    `community_card`), a regex entry placed by SillyTavern at depth with CRLF content and a
    fractional order, a plain key holding a comma, an outlet entry, a broken regex key, and
    unknown fields on the book and its entries."""
    card = community_card()
    book = card["data"]["character_book"]
    book["recursive_scanning"] = True
    book["some_app/book_flag"] = {"kept": [1, 2]}
    book["entries"] += [
        st_entry(),
        lorebook_entry(keys=["Smith, John", "the smith"], id=9, comment=None, name=None),
        lorebook_entry(extensions={"position": 7, "outlet_name": "side"}, id=10),
        lorebook_entry(keys=["(unclosed"], use_regex=True, id=11),
    ]
    return card


@pytest.fixture
def rich(alice):
    """alice's private import of `rich_card`."""
    character, _ = import_card_file(
        to_json_bytes(rich_card()), "rich.json", alice, visibility=Visibility.OWNER
    )
    return character


def edit_page(client, character) -> tuple[str, dict[str, list[str]]]:
    url = f"/characters/{character.pk}/edit/"
    return url, form_data(client.get(url).content.decode(), form_class="character-form")


def exported(client, character) -> dict[str, Any]:
    return json.loads(client.get(f"/characters/{character.pk}/export.json").content)


def book_of(character) -> dict[str, Any] | None:
    return Character.objects.get(pk=character.pk).character_book


def row_fields(prefix: str, index: int, row: dict[str, Any]) -> dict[str, str]:
    """One row's posted fields: text as is, a checked box as "on", an unchecked one left out."""
    return {
        f"{prefix}-{index}-{name}": "on" if value is True else value
        for name, value in row.items()
        if value is not False
    }


def row_post(prefix: str, rows: list[dict[str, Any]], **book_fields: str) -> dict[str, Any]:
    """A lorebook post: `rows` in order, plus the hidden copy of the book (`book`, default
    none) and its settings."""
    data: dict[str, Any] = {f"{prefix}-book": book_fields.pop("book", "")}
    data.update({f"{prefix}-{name}": value for name, value in book_fields.items()})
    for index, row in enumerate(rows):
        data.update(row_fields(prefix, index, row))
    return data


def shown(entry: dict[str, Any]) -> dict[str, Any]:
    """A row as the page shows `entry` and posts it back untouched."""
    return {"original": json.dumps(entry), **entry_row(entry)}


def new_row(**fields: Any) -> dict[str, Any]:
    """The blank row for a new entry, with `fields` typed in."""
    return {"original": "", **entry_row(NEW_ENTRY), **fields}


# --- Rows and entries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        lorebook_entry(),
        st_entry(),
        *community_card()["data"]["character_book"]["entries"],
        lorebook_entry(keys=["Smith, John"], insertion_order=100.0, some_future_key=[1]),
        lorebook_entry(extensions={"position": 7}),
        lorebook_entry(position="", extensions={"position": "abc", "depth": ""}),
        {"keys": "a, b", "content": "no other field"},
    ],
)
def test_an_entry_posted_back_as_shown_is_the_same_entry(entry):
    assert merge_row(entry, entry_row(entry)) == entry


def test_content_posted_with_crlf_line_endings_keeps_the_cards_own():
    entry = lorebook_entry(content="One\nTwo")
    posted = {**entry_row(entry), "content": "One\r\nTwo"}

    assert merge_row(entry, posted)["content"] == "One\nTwo"


def test_an_edit_writes_only_the_changed_fields_and_keeps_everything_else():
    entry = st_entry()
    posted = {**entry_row(entry), "content": "New lore.", "enabled": False}

    merged = merge_row(entry, posted)

    assert merged == {**entry, "content": "New lore.", "enabled": False}


def test_changed_keys_are_split_on_commas_and_regex_keys_keep_theirs():
    entry = lorebook_entry()
    plain = merge_row(entry, {**entry_row(entry), "keys": " tower,  spire ,, "})
    regex = merge_row(
        entry, {**entry_row(entry), "keys": r"/a{1,3}b/i, [x,y]z, (p|q), a\,b", "use_regex": True}
    )

    assert plain["keys"] == ["tower", "spire"]
    assert regex["keys"] == ["/a{1,3}b/i", "[x,y]z", "(p|q)", r"a\,b"]
    assert regex["use_regex"] is True
    assert split_regex_keys("/a,b/, c") == ["/a,b/", "c"]


def test_typing_secondary_keys_makes_the_entry_selective():
    entry = st_entry()

    merged = merge_row(entry, {**entry_row(entry), "secondary_keys": "night, moon"})

    assert merged["secondary_keys"] == ["night", "moon"]
    assert merged["selective"] is True


def test_choosing_at_depth_writes_sillytaverns_position_and_depth():
    entry = lorebook_entry()  # before the character, by its V2 position

    merged = merge_row(entry, {**entry_row(entry), "position": AT_DEPTH, "depth": "6"})

    assert merged["extensions"] == {**entry["extensions"], "position": 4, "depth": 6}
    assert merged["position"] == "after_char"
    assert entry_placement(merged, {}).where == AT_DEPTH
    assert entry_placement(merged, {}).depth == 6


def test_moving_a_sillytavern_entry_before_the_character_updates_both_positions():
    entry = st_entry()

    merged = merge_row(entry, {**entry_row(entry), "position": BEFORE_CHAR})

    assert merged["extensions"]["position"] == 0
    assert merged["extensions"]["depth"] == 2  # kept: SillyTavern keeps it too
    assert merged["position"] == BEFORE_CHAR
    assert entry_placement(merged, {}).where == BEFORE_CHAR


def test_a_changed_depth_alone_moves_an_entry_at_depth():
    merged = merge_row(st_entry(), {**entry_row(st_entry()), "depth": "0"})

    assert merged["extensions"]["depth"] == 0
    assert entry_placement(merged, {}).depth == 0


def test_the_outlet_position_is_kept_but_not_offered_to_others():
    outlet = lorebook_entry(extensions={"position": 7})
    assert entry_row(outlet)["position"] == "outlet"
    assert merge_row(outlet, entry_row(outlet)) == outlet

    edit = read_post(row_post("b", [new_row(keys="x", position="outlet")]), "b")

    assert edit.errors == ["Lorebook entry 1: 'outlet' is not a position."]


# --- A post: order, removal, adding ---------------------------------------------------------------


def test_entries_come_in_the_order_their_rows_were_posted():
    first, second = lorebook_entry(id=1), lorebook_entry(id=2)
    # The second row first, its number not changed: the order is the post's, not the numbers'.
    data = {
        "b-book": json.dumps({"entries": []}),
        **row_fields("b", 1, shown(second)),
        **row_fields("b", 0, shown(first)),
    }

    assert [entry["id"] for entry in read_post(data, "b").book["entries"]] == [2, 1]


def test_a_removed_row_and_a_blank_new_row_are_left_out():
    first, second = lorebook_entry(id=1), lorebook_entry(id=2)
    rows = [shown(first), {**shown(second), "DELETE": True}, new_row()]

    edit = read_post(row_post("b", rows, book=json.dumps({"entries": []})), "b")

    assert edit.errors == []
    assert edit.book["entries"] == [first]


def test_a_new_row_becomes_a_complete_entry():
    edit = read_post(row_post("b", [new_row(keys="tower, spire", content="Tall.")]), "b")

    assert edit.book == {
        "entries": [{**NEW_ENTRY, "keys": ["tower", "spire"], "content": "Tall."}],
    }


def test_an_empty_editor_without_a_book_gives_no_book_and_with_one_keeps_an_empty_book():
    assert read_post(row_post("b", [new_row()]), "b").book is None
    book = {"name": "Lore", "entries": [lorebook_entry()], "extensions": {"x": 1}}
    rows = [{**shown(lorebook_entry()), "DELETE": True}]

    emptied = read_post(row_post("b", rows, book=json.dumps({**book, "entries": []})), "b")

    assert emptied.book == {"name": "Lore", "entries": [], "extensions": {"x": 1}}


def test_book_settings_are_written_only_when_changed_and_empty_means_the_default():
    book = {"scan_depth": 4.0, "token_budget": 512, "entries": [], "recursive_scanning": False}
    hidden = json.dumps(book)

    unchanged = read_post(row_post("b", [], book=hidden, scan_depth="4", token_budget="512"), "b")
    changed = read_post(
        row_post("b", [], book=hidden, scan_depth="", token_budget="900", recursive_scanning="on"),
        "b",
    )

    assert unchanged.book == book
    assert changed.book == {"token_budget": 900, "entries": [], "recursive_scanning": True}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"order": "soon"}, "Lorebook entry 1: Order must be a number, not 'soon'."),
        ({"order": "1e12"}, "Lorebook entry 1: Order must be between -1,000,000,000 and"),
        ({"position": AT_DEPTH, "depth": "-1"}, "Lorebook entry 1: Depth must be between 0"),
        ({"position": AT_DEPTH, "depth": "2.5"}, "Lorebook entry 1: Depth must be a whole"),
        (
            {"keys": "(unclosed", "use_regex": True},
            "Lorebook entry 1: the key '(unclosed' is not a valid regular expression.",
        ),
        ({"original": "{not json"}, "Lorebook entry 1 could not be read"),
    ],
)
def test_a_value_the_editor_cannot_store_is_refused_with_the_entrys_number(fields, message):
    edit = read_post(row_post("b", [new_row(**{"keys": "x", "content": "y", **fields})]), "b")

    assert len(edit.errors) == 1
    assert edit.errors[0].startswith(message)
    assert edit.book is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("scan_depth", "-3", "Scan depth must be between 0 and 10,000."),
        ("token_budget", "many", "Token budget must be a number, not 'many'."),
    ],
)
def test_book_settings_out_of_range_are_refused(name, value, message):
    assert read_post(row_post("b", [], **{name: value}), "b").errors == [message]


def test_a_stored_broken_regex_key_is_kept_as_the_import_keeps_it_until_the_keys_change():
    broken = lorebook_entry(keys=["(unclosed"], use_regex=True)

    assert merge_row(broken, {**entry_row(broken), "content": "Edited."})["keys"] == ["(unclosed"]


def test_an_entry_without_keys_that_is_not_constant_is_accepted_as_the_import_accepts_it(
    alice, client, rich
):
    # Real cards hold such entries (`keys: [""]`); they never fire, but the import keeps them.
    client.force_login(alice)
    url, data = edit_page(client, rich)
    data["character_book-7-content"] = ["Keyless lore."]  # the blank row after the 7 entries

    assert client.post(url, data).status_code == 302

    assert book_of(rich)["entries"][-1]["keys"] == []
    assert book_of(rich)["entries"][-1]["content"] == "Keyless lore."


# --- The member's editor ---------------------------------------------------------------------------


def test_a_card_saved_unchanged_through_the_member_editor_exports_the_same_card(
    client, alice, rich
):
    client.force_login(alice)
    before = exported(client, rich)
    url, data = edit_page(client, rich)

    assert client.post(url, data).status_code == 302

    assert exported(client, rich) == before
    # Also as a browser posts it: textareas with CRLF line endings.
    url, data = edit_page(client, rich)
    crlf = {
        name: [value.replace("\r\n", "\n").replace("\n", "\r\n") for value in values]
        for name, values in data.items()
    }
    assert client.post(url, crlf).status_code == 302
    assert exported(client, rich) == before


def test_a_card_saved_unchanged_through_the_admin_keeps_the_same_card(admin_client, rich):
    url, data = admin_change_form(admin_client, rich)

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    stored = Character.objects.get(pk=rich.pk)
    assert card_to_v3_dict(stored.to_card()) == card_to_v3_dict(rich.to_card())


def test_alice_adds_moves_and_removes_lorebook_entries_of_her_character(client, alice, rich):
    client.force_login(alice)
    url, data = edit_page(client, rich)
    stored = rich.character_book["entries"]
    rows = [shown(stored[2]), new_row(keys="tower", content="A tall tower."), shown(stored[0])]
    post = {name: values for name, values in data.items() if not name.startswith("character_book-")}
    post.update(row_post("character_book", rows, book=data["character_book-book"][0]))
    post.update({"character_book-scan_depth": "4", "character_book-token_budget": "512"})
    post["character_book-recursive_scanning"] = "on"

    assert client.post(url, post).status_code == 302

    entries = book_of(rich)["entries"]
    assert entries == [
        stored[2],
        {**NEW_ENTRY, "keys": ["tower"], "content": "A tall tower."},
        stored[0],
    ]


def test_a_bad_entry_shows_its_error_next_to_the_editor_and_changes_nothing(client, alice, rich):
    client.force_login(alice)
    url, data = edit_page(client, rich)
    data["character_book-1-order"] = ["soon"]
    data["character_book-0-content"] = ["Edited, but not saved."]
    data["personality"] = ["Changed too."]

    response = client.post(url, data)

    page = response.content.decode()
    assert response.status_code == 200
    assert "Not saved: see the messages below." in page
    editor = page[page.index("<legend>Lorebook</legend>") :]
    assert (
        "Lorebook entry 2: Order must be a number, not &#x27;soon&#x27;."
        in editor.split("data-lorebook-editor")[0]
    )
    assert "Edited, but not saved." in editor  # the member's edits are shown again
    assert 'value="soon"' in editor
    stored = Character.objects.get(pk=rich.pk)
    assert stored.character_book == rich.character_book
    assert stored.personality == rich.personality


def test_a_lorebook_the_import_would_refuse_is_refused_by_the_editor(client, alice, rich):
    client.force_login(alice)
    url, data = edit_page(client, rich)
    data["character_book-0-keys"] = [", ".join(f"k{i}" for i in range(101))]

    response = client.post(url, data)

    assert response.status_code == 200
    # 101 keys and the entry's secondary key
    assert "Lorebook entry 1 has 102 keys; a lorebook entry may have at most 100" in (
        response.content.decode()
    )
    assert book_of(rich) == rich.character_book


def test_a_new_character_with_an_empty_editor_has_no_lorebook(client, alice):
    client.force_login(alice)
    data = form_data(client.get("/characters/new/").content.decode(), form_class="character-form")
    data["name"] = ["Pip"]

    assert client.post("/characters/new/", data).status_code == 302

    assert Character.objects.get(name="Pip").character_book is None


def test_a_post_without_the_lorebook_editor_keeps_the_book(client, alice, rich):
    # As a script written before members could edit lorebooks posts.
    client.force_login(alice)

    assert client.post(f"/characters/{rich.pk}/edit/", {"name": "Renamed"}).status_code == 302

    assert book_of(rich) == rich.character_book


def test_bob_cannot_open_or_post_alices_lorebook_editor(client, bob, rich):
    client.force_login(bob)
    data = row_post("character_book", [new_row(keys="x", content="Bob was here.")])

    assert client.get(f"/characters/{rich.pk}/edit/").status_code == 404
    assert client.post(f"/characters/{rich.pk}/edit/", {"name": "x", **data}).status_code == 404
    assert book_of(rich) == rich.character_book


def test_members_still_cannot_set_staff_only_fields():
    fields = set(MemberCharacterForm.base_fields)

    assert "character_book" in fields
    assert not fields & {"visibility", "owner", "groups", "default_model", "serika_character_id"}
    assert not fields & {"prompt_mode", "group_only_greetings", "extensions", "card_extra"}


# --- Tags and greetings ------------------------------------------------------------------------


def test_tags_posted_as_chips_keep_commas_and_as_a_line_are_split(client, alice, rich):
    client.force_login(alice)
    url, data = edit_page(client, rich)

    chips = {**data, "tags": ["Smith, John", "cozy"], "tags-chips": "1"}
    assert client.post(url, chips).status_code == 302
    assert Character.objects.get(pk=rich.pk).tags == ["Smith, John", "cozy"]

    url, data = edit_page(client, rich)
    assert data["tags"] == ["Smith, John, cozy"]
    assert client.post(url, data).status_code == 302  # the line as shown: unchanged
    assert Character.objects.get(pk=rich.pk).tags == ["Smith, John", "cozy"]

    data["tags"] = ["Smith, John, cozy, tea"]
    assert client.post(url, data).status_code == 302
    assert Character.objects.get(pk=rich.pk).tags == ["Smith", "John", "cozy", "tea"]


def test_greetings_are_one_box_each_in_order_with_empty_ones_dropped(client, alice, rich):
    client.force_login(alice)
    url, data = edit_page(client, rich)
    page = client.get(url).content.decode()
    assert '<label for="id_alternate_greetings-0" id="id_alternate_greetings-0-label">' in page
    assert "Alternate greeting <span data-number>1</span>" in page

    data["alternate_greetings"] = ["Third\r\nline", "", "  ", "First", "--- a rule ---\n---\nkept"]
    assert client.post(url, data).status_code == 302

    greetings = Character.objects.get(pk=rich.pk).alternate_greetings
    assert greetings == ["Third\nline", "First", "--- a rule ---\n---\nkept"]


def test_removing_every_greeting_clears_them(client, alice, rich):
    client.force_login(alice)
    url, data = edit_page(client, rich)
    del data["alternate_greetings"]  # the script removed every box; its marker is still posted

    assert client.post(url, data).status_code == 302

    assert Character.objects.get(pk=rich.pk).alternate_greetings == []


# --- Pages and the admin ---------------------------------------------------------------------


def test_the_member_and_admin_pages_load_the_editors_script_and_styles(
    client, admin_client, alice, rich
):
    client.force_login(alice)
    member = client.get(f"/characters/{rich.pk}/edit/").content.decode()
    admin = admin_client.get(
        reverse("admin:characters_character_change", args=[rich.pk])
    ).content.decode()

    for page in (member, admin):
        assert "js/card_editors.js" in page and "css/card_editors.css" in page
        assert "data-lorebook-editor" in page and "data-tag-editor" in page
        assert "<script>" not in page.split("</head>")[0]  # no inline script (CSP)
    assert "Group-only greeting" in admin and "Group-only greeting" not in member
    assert "<legend>Lorebook</legend>" in member


def test_staff_edit_a_lorebook_in_the_admin(admin_client, rich):
    url, data = admin_change_form(admin_client, rich)
    data["character_book-0-constant"] = ["on"]
    data["group_only_greetings"] = ["Hello, all!", ""]

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    stored = Character.objects.get(pk=rich.pk)
    assert stored.character_book["entries"][0] == {
        **rich.character_book["entries"][0],
        "constant": True,
    }
    assert stored.group_only_greetings == ["Hello, all!"]


def test_the_admin_form_validates_like_the_import():
    form = CharacterForm(
        data={
            "name": "Nemo",
            **row_post("character_book", [new_row(keys="a", content="b", order="x")]),
            "extensions": "{}",
            "card_extra": "{}",
        }
    )

    assert not form.is_valid()
    assert form.errors["character_book"] == ["Lorebook entry 1: Order must be a number, not 'x'."]


def test_the_largest_lorebook_the_import_allows_fits_in_one_editor_post():
    # 14 fields per entry at most (the Remove box and every flag checked), plus the rest.
    from cardspec.lorebook import MAX_LOREBOOK_ENTRIES

    needed = MAX_LOREBOOK_ENTRIES * 14 + 100
    limit = django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    assert limit is None or limit >= needed


def test_a_card_with_the_v2_card_lorebook_round_trips_through_the_member_editor(client, alice):
    character, _ = import_card_file(
        to_json_bytes(v2_card()), "aiko.json", alice, visibility=Visibility.OWNER
    )
    client.force_login(alice)
    before = exported(client, character)
    url, data = edit_page(client, character)

    assert client.post(url, data).status_code == 302

    assert exported(client, character) == before
