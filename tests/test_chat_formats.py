"""Chat files in and out (`chat/formats/`): every reader on real samples, round trips, Markdown,
and every refusal with its message. Pure: no database, no network, no files but the fixtures.

Where each sample came from (tests/fixtures/chats/), as stored by the search index:

- `sillytavern/megumin-1673323621108.jsonl`, `aqua-1673181146000.jsonl`,
  `darkness-1673225255706.jsonl`: SillyTavern/SillyTavern `public/chats/Megumin/1673323621108.jsonl`
  (commit 151bcde012e663af4ea17601fc7a0d5121da63f6), `public/chats/Aqua/1673181146000.jsonl` and
  `public/chats/Darkness/1673225255706.jsonl` (commit 7b87227cd2f73241b54a52f50fdc8ef4c73fc81b):
  chats SillyTavern shipped in 2023, byte for byte.
- `chatgpt/librechat-chatgpt-tree.json`, `librechat-chatgpt-modern-export.json`:
  danny-avila/LibreChat `api/server/utils/import/__data__/chatgpt-tree.json` (commit
  f406aaafdca210934869ad340be51bfe320c2c73) and `chatgpt-modern-export.json` (commit
  6acce5d9c58470ad8ab9717ce2a048bcdb3afc09), byte for byte.
- `chatgpt/librechat-chatgpt-export-trimmed.json`: the first conversation of LibreChat's
  `__data__/chatgpt-export.json` (commit 915022bc0830ba1ab9b14a6ec4a97d16564eae36, 170 kB),
  trimmed: its first exchange only (9 nodes: root, hidden system message, question, two browser
  tool calls, three tool results, answer), the tool results' page texts cut to a line, the
  citation lists and the later nodes dropped, `current_node` set to the answer. Everything kept
  is as in the original.
- `openwebui/librechat-openwebui-export.json`: LibreChat `__data__/openwebui-export.json`
  (commit 89e0c58a155cdebf8c8fe395ffa6ce7c822c5b2f), byte for byte.
- `openwebui/docs-standard-format.json`, `docs-legacy-format.json`, `docs-minimal.json`: the
  three examples of open-webui/docs `docs/features/chat-conversations/data-controls/
  import-export.md` (commit 0037f77caf4f0f84ee0b7d6eb14e39b92921305c).

Hand-made, since no public repository the index holds has them:

- `sillytavern/handmade-swipes.jsonl`: SillyTavern 1.12 to 1.13 lines in the shapes of
  /work/shared/notes/chat-formats.md §1 (swipes with a short `swipe_info`, an `is_system`
  comment, a narrator line, `display_text`, every `send_date` form and an unreadable one).
  No real SillyTavern file with swipes is published: SillyTavern's repository stopped shipping
  chats before swipes existed, and importers' tests build theirs inline.
- `sillytavern/handmade-modern-header.jsonl`: the header SillyTavern writes since late 2025
  (`"user_name":"unused"`), after the shape its own `tests/chat-*.test.js` use.
- `serika/example-v1.json`: our own format, written by `write_ours` from `example_chat()`.
- `hostile/*`: cycles, a self-parent, a dangling parent, non-text content and ids, bad UTF-8.
  The huge ones (50 MB, 100,000 messages, deep nesting) are built in memory by the tests.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from chat.formats import (
    CharacterRef,
    Chat,
    ChatFormatError,
    ChatMessage,
    ChatSettings,
    read_chat_file,
    read_chatgpt,
    read_openwebui,
    read_ours,
    read_sillytavern,
    write_markdown,
    write_ours,
    write_sillytavern,
)
from chat.formats.openwebui import strip_blocks
from chat.formats.sillytavern import parse_date

FIXTURES = Path(__file__).parent / "fixtures" / "chats"
JSON_READERS = [read_ours, read_chatgpt, read_openwebui]
ALL_READERS = [*JSON_READERS, read_sillytavern]
EXPORTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def shape(chat: Chat) -> list[tuple[str, str | None, str, str]]:
    """The tree as (key, parent, role, content), in the chat's order."""
    return [(m.key, m.parent, m.role, m.content) for m in chat.messages]


def refusal(reader, data: bytes) -> str:
    with pytest.raises(ChatFormatError) as caught:
        reader(data)
    return str(caught.value)


def at(*parts: int, tz=UTC) -> datetime:
    return datetime(*parts, tzinfo=tz)


def jsonl(*lines: dict) -> bytes:
    return "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()


def ours_file(*chats: dict, version: int = 1) -> bytes:
    envelope = {"format": "serika-web-chats", "version": version, "chats": list(chats)}
    return json.dumps(envelope).encode()


def example_chat() -> Chat:
    """A conversation with everything our database holds.

    Two greetings (the second shown); a question with two replies: the first stopped and with
    a branch of its own below it, the second complete, corrected in place; below that an edited
    question (two alternatives) whose reply failed.
    """
    return Chat(
        title="The lighthouse",
        character_name="Iris",
        character=CharacterRef(name="Iris", creator="Ann", character_version="1.2"),
        settings=ChatSettings(model="gpt-4o", temperature=0.8, max_tokens=512),
        created_at=at(2025, 11, 30, 9, 50, 0, 250000),
        updated_at=at(2025, 11, 30, 10, 10),
        shown_leaf="110",
        messages=[
            ChatMessage(key="101", parent=None, role="assistant", content="Hello.",
                        created_at=at(2025, 11, 30, 9, 50, 0, 250000), greeting_index=0),
            ChatMessage(key="102", parent=None, role="assistant", content="Hi *there*.",
                        created_at=at(2025, 11, 30, 9, 50, 0, 250000), greeting_index=1),
            ChatMessage(key="103", parent="102", role="user",
                        content="Tell me about the lighthouse.\nAll of it.",
                        created_at=at(2025, 11, 30, 9, 51)),
            ChatMessage(key="104", parent="103", role="assistant", content="It is old and",
                        created_at=at(2025, 11, 30, 9, 51, 5), status="stopped",
                        model="gpt-4o-mini", prompt_tokens=120, completion_tokens=4),
            ChatMessage(key="105", parent="104", role="user", content="Why did you stop?",
                        created_at=at(2025, 11, 30, 9, 52)),
            ChatMessage(key="106", parent="105", role="assistant", content="Sorry.",
                        created_at=at(2025, 11, 30, 9, 52, 3), model="gpt-4o-mini",
                        prompt_tokens=140, completion_tokens=2, finish_reason="stop"),
            ChatMessage(key="107", parent="103", role="assistant",
                        content="It has stood there for a century — 灯台.",
                        created_at=at(2025, 11, 30, 9, 53), model="gpt-4o",
                        prompt_tokens=130, completion_tokens=9, finish_reason="stop",
                        edited_at=at(2025, 11, 30, 11, 54, 30, 5, tz=CEST)),
            ChatMessage(key="108", parent="107", role="user", content="Who keeps it?",
                        created_at=at(2025, 11, 30, 9, 54)),
            ChatMessage(key="109", parent="107", role="user", content="Who lives there?",
                        created_at=at(2025, 11, 30, 9, 55)),
            ChatMessage(key="110", parent="109", role="assistant", content="", status="failed",
                        created_at=at(2025, 11, 30, 9, 55, 1), model="gpt-4o"),
        ],
    )  # fmt: skip


# --- Our own format ---------------------------------------------------------------------------


def test_our_example_file_reads_as_the_chat_it_was_written_from():
    """The documented example file (docs/chat-export-format.md) holds `example_chat()`."""
    (chat,) = read_ours(fixture("serika/example-v1.json"))
    assert chat == example_chat()
    assert chat.warnings == []
    assert chat.messages[6].edited and not chat.messages[5].edited
    assert chat.messages[6].edited_at.utcoffset() == timedelta(hours=2)


def test_our_export_is_lossless_from_chats_to_bytes_and_back():
    chats = [example_chat(), Chat(title="Empty"), example_chat()]
    chats[2].shown_leaf = None
    data = b"".join(write_ours(chats, exported_at=EXPORTED_AT))
    assert read_ours(data) == chats


def test_our_export_is_lossless_from_bytes_to_chats_and_back():
    data = fixture("serika/example-v1.json")
    assert b"".join(write_ours(read_ours(data), exported_at=EXPORTED_AT)) == data


def test_our_export_holds_the_documented_envelope_and_one_chat_per_line():
    data = b"".join(write_ours([example_chat(), example_chat()], exported_at=None))
    lines = data.decode().split("\n")
    assert lines[0] == '{"format":"serika-web-chats","version":1,"exported_at":null,"chats":['
    assert lines[-2:] == ["]}", ""]
    assert len(lines) == 5
    obj = json.loads(data)
    message = obj["chats"][0]["messages"][6]
    assert message == {
        "key": "107", "parent": "103", "role": "assistant",
        "content": "It has stood there for a century — 灯台.", "status": "complete",
        "created_at": "2025-11-30T09:53:00+00:00", "edited_at": "2025-11-30T11:54:30.000005+02:00",
        "model": "gpt-4o", "usage": {"prompt_tokens": 130, "completion_tokens": 9},
        "finish_reason": "stop", "greeting_index": None,
    }  # fmt: skip
    assert obj["chats"][0]["character_card"] == {
        "name": "Iris",
        "creator": "Ann",
        "character_version": "1.2",
    }
    assert obj["chats"][0]["settings"] == {"model": "gpt-4o", "temperature": 0.8, "max_tokens": 512}


def test_our_writer_streams_each_chat_as_it_is_fetched():
    """The lead's view passes a generator over the member's conversations: nothing is read
    ahead, so the download never holds more than one chat."""
    fetched = []

    def conversations():
        for number in range(3):
            fetched.append(number)
            yield Chat(title=f"Chat {number}")

    chunks = write_ours(conversations(), exported_at=EXPORTED_AT)
    assert next(chunks).startswith(b'{"format"')
    assert fetched == []
    next(chunks)
    assert fetched == [0]
    rest = list(chunks)
    assert fetched == [0, 1, 2]
    assert len(rest) == 3  # two chats and the closing bracket


def test_our_writer_refuses_a_chat_the_database_could_not_have_held():
    naive = example_chat()
    naive.messages[0].created_at = datetime(2025, 1, 1)  # noqa: DTZ001 - the mistake under test
    with pytest.raises(ChatFormatError, match="without a time zone"):
        list(write_ours([naive]))
    streaming = example_chat()
    streaming.messages[-1].status = "streaming"
    with pytest.raises(ChatFormatError, match="unknown status"):
        list(write_ours([streaming]))
    orphan = example_chat()
    orphan.messages[2].parent = "999"
    with pytest.raises(ChatFormatError, match="'999', which is not in the file"):
        list(write_ours([orphan]))


def test_our_reader_puts_parents_first_and_keeps_the_order_of_alternatives():
    data = ours_file(
        {
            "messages": [
                {"key": "c", "parent": "a", "role": "assistant", "content": "second reply"},
                {"key": "b", "parent": "a", "role": "assistant", "content": "first reply"},
                {"key": "a", "parent": None, "role": "user", "content": "question"},
            ]
        }
    )
    (chat,) = read_ours(data)
    assert [m.key for m in chat.messages] == ["a", "c", "b"]
    assert chat.leaf_key() == "b"  # no shown leaf: the newest branch, as chat/tree.py does


def test_our_reader_reads_a_streaming_reply_as_interrupted_and_defaults_the_rest():
    message = {"key": "1", "role": "assistant", "content": "Half a", "status": "streaming"}
    (chat,) = read_ours(ours_file({"messages": [message]}))
    assert chat.messages[0] == ChatMessage(
        key="1", parent=None, role="assistant", content="Half a", status="interrupted"
    )
    assert chat.title == "" and chat.settings == ChatSettings() and chat.character is None


def test_our_reader_cuts_long_titles_to_the_column_and_ignores_unknown_keys():
    (chat,) = read_ours(
        ours_file({"title": "T" * 500, "mood": "later versions may add keys", "messages": []})
    )
    assert chat.title == "T" * 199 + "…"
    assert read_ours(ours_file()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"chats": []}', 'This is not a Serika Web chat export (it has no "format"'),
        (b"[]", "This is not a Serika Web chat export"),
        (ours_file(version=2), "made by a newer Serika Web (format version 2); this one reads version 1"),
        (ours_file(version=0), "format version 0 does not exist"),
        (b'{"format": "serika-web-chats", "version": "1", "chats": []}', "'version' must be a number, not text"),
        (b'{"format": "serika-web-chats", "version": 1, "chats": {}}', "'chats' must be a list, not an object"),
        (ours_file(["not a chat"]), "Chat 1 must be an object, not a list"),
        (ours_file({"title": "no messages"}), "Chat 1: 'messages' must be a list, not null"),
        (ours_file({"messages": [{"key": 7, "role": "user", "content": "x"}]}),
         "Chat 1, message 1: 'key' must be text, not a number"),
        (ours_file({"messages": [{"key": "", "role": "user", "content": "x"}]}), "'key' is empty"),
        (ours_file({"messages": [{"key": "k" * 201, "role": "user", "content": "x"}]}),
         "'key' is longer than 200 characters"),
        (ours_file({"messages": [{"key": "1", "role": "system", "content": "x"}]}),
         "Chat 1, message '1': the role must be 'user' or 'assistant'"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": 5}]}),
         "Chat 1, message '1': 'content' must be text, not a number"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "x", "status": "done"}]}),
         "unknown status 'done'"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "x",
                                  "created_at": "2025-01-01T10:00:00"}]}), "'created_at' has no time zone"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "x",
                                  "created_at": "yesterday"}]}), "'created_at' is not an ISO 8601 time"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "x",
                                  "usage": {"prompt_tokens": -1}}]}), "'prompt_tokens' must be a whole number"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "x",
                                  "greeting_index": 1.5}]}), "'greeting_index' must be a small whole number"),
        (ours_file({"messages": [], "settings": {"temperature": 7}}), "the temperature 7 is not within 0 to 2"),
        (ours_file({"messages": [], "settings": {"temperature": True}}), "must be a number, not true/false"),
        (ours_file({"messages": [], "settings": {"max_tokens": 0}}), "max_tokens must be a whole number from 1"),
        (ours_file({"messages": [], "character_card": "Iris"}), "'character_card' must be an object or null"),
        (ours_file({"messages": [], "title": "x" * 10_001}), "'title' is longer than 10,000 characters"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "x" * 1_000_001}]}),
         "is longer than 1,000,000 characters"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "a"},
                                 {"key": "1", "role": "user", "content": "b"}]}),
         "Chat 1: Two messages have the key '1'"),
        (ours_file({"messages": [{"key": "1", "parent": "1", "role": "user", "content": "a"}]}),
         "Chat 1: The message '1' is its own parent"),
        (ours_file({"messages": [{"key": "1", "parent": "0", "role": "user", "content": "a"}]}),
         "The message '1' has the parent '0', which is not in the file"),
        (ours_file({"messages": [{"key": "1", "role": "user", "content": "a"}], "shown_leaf": "2"}),
         "The shown message '2' is not in the chat"),
        (fixture("hostile/ours-cycle.json"),
         "Chat 1: The messages form a cycle ('a' → 'c' → 'b' → 'a'): no message starts it"),
    ],
)  # fmt: skip
def test_our_reader_refuses_a_broken_file_saying_what_is_wrong(data, message):
    assert message in refusal(read_ours, data)


# --- SillyTavern: reading -------------------------------------------------------------------


def test_sillytavern_reads_megumin_a_real_2023_chat():
    """SillyTavern/SillyTavern public/chats/Megumin/1673323621108.jsonl: header with Author's
    Note metadata, the server's "2023-4-21 @20h 02m 47s 124ms" dates, TavernAI's `is_name`."""
    (chat,) = read_sillytavern(fixture("sillytavern/megumin-1673323621108.jsonl"))
    assert (chat.character_name, chat.user_name, chat.title) == ("Megumin", "You", "")
    assert chat.created_at == at(2023, 1, 24, 11, 31, 40, 991000)  # create_date 1674559900991
    assert [(key, parent, role) for key, parent, role, _ in shape(chat)] == [
        ("2", None, "assistant"),
        ("3", "2", "user"),
        ("4", "3", "assistant"),
    ]
    assert chat.messages[0].content.startswith("*It was day, the weather was sunny and windless.")
    assert chat.messages[1].content == (
        "I am here to go on an adventure with you Megumin. I happen to be a mage too!"
    )
    assert chat.messages[2].content == (
        "smiles excitedly You have come just right now! Are you ready for this test!?"
    )
    assert [m.created_at for m in chat.messages] == [
        at(2023, 4, 21, 20, 2, 47, 124000),
        at(2023, 4, 21, 20, 3, 6, 446000),
        at(2023, 4, 21, 20, 3, 13, 567000),
    ]
    assert chat.shown_leaf == "4"
    assert chat.shown_path() == chat.messages
    assert chat.warnings == []


@pytest.mark.parametrize(
    ("name", "character", "sent", "opening"),
    [
        ("aqua-1673181146000.jsonl", "Aqua", at(2023, 1, 24, 12, 29, 31, 558000),
         '*I am in the town square at a city named "Axel".'),
        ("darkness-1673225255706.jsonl", "Darkness", at(2023, 1, 24, 12, 55, 14, 912000),
         "*It's a sunny day, in a big park"),
    ],
)  # fmt: skip
def test_sillytavern_reads_a_greeting_only_chat_with_millisecond_dates(
    name, character, sent, opening
):
    """SillyTavern/SillyTavern public/chats/Aqua/1673181146000.jsonl and
    public/chats/Darkness/1673225255706.jsonl: numeric `create_date` and `send_date` (epoch ms),
    no `chat_metadata`."""
    (chat,) = read_sillytavern(fixture(f"sillytavern/{name}"))
    assert chat.character_name == character and chat.user_name == "You"
    (greeting,) = chat.messages
    assert (greeting.key, greeting.parent, greeting.role) == ("2", None, "assistant")
    assert greeting.content.startswith(opening)
    assert greeting.created_at == sent
    assert chat.shown_leaf == "2"


def test_sillytavern_swipes_become_alternatives_and_hidden_lines_are_left_out():
    """Hand-made (no published ST file has swipes): see the module docstring."""
    (chat,) = read_sillytavern(fixture("sillytavern/handmade-swipes.jsonl"))
    assert (chat.character_name, chat.user_name) == ("Iris", "Ann")
    assert chat.created_at == at(2024, 10, 18, 20, 52, 17)
    assert shape(chat) == [
        ("2.0", None, "assistant", "Hello."),
        ("2", None, "assistant", "Hi there."),
        ("3", "2", "user", "Hi! Tell me about the lighthouse."),
        ("4.0", "3", "assistant", "It is old."),
        ("4.1", "3", "assistant", "Nobody goes there."),
        ("4", "3", "assistant", "It has stood there for a century."),
        # Line 5, a hidden /comment, is left out: line 6 follows line 4.
        ("6", "4", "user", "Who keeps it?"),
        ("7", "6", "assistant", "The wind picks up."),  # the narrator, as the character
        ("8", "7", "assistant", "My aunt does. [waves at the window]"),  # mes, not display_text
        ("8.1", "7", "assistant", "The keeper."),
        ("8.2", "7", "assistant", "Nobody, now."),
        ("9", "8", "user", "Thanks."),
        ("10", "9", "assistant", 'Gern geschehen — 灯台 is "lighthouse".'),
    ]
    assert chat.shown_leaf == "10"
    assert [m.key for m in chat.shown_path()] == ["2", "3", "4", "6", "7", "8", "9", "10"]
    by_key = {m.key: m for m in chat.messages}
    # Each swipe's time and model from swipe_info; the shown one's from the line itself.
    assert [(by_key[k].model, by_key[k].created_at) for k in ("4.0", "4.1", "4")] == [
        ("gpt-4o-mini", at(2025, 11, 30, 9, 58)),
        ("gpt-4o", at(2025, 11, 30, 9, 59)),
        ("gpt-4o", at(2025, 11, 30, 10, 0)),
    ]
    assert by_key["4"].completion_tokens == 9 and by_key["4.0"].completion_tokens is None
    # swipe_info shorter than swipes: those swipes have no time.
    assert by_key["8"].created_at == at(2025, 11, 30, 10, 2, 25)  # digits: epoch ms
    assert by_key["8.1"].created_at is None and by_key["8.1"].model == ""
    assert by_key["2.0"].created_at is None  # greeting swipes have swipe_info []
    assert by_key["6"].created_at == at(2025, 11, 30, 10, 2, 5, 682000)
    assert by_key["7"].created_at == at(2025, 11, 30, 10, 2, 10)  # a number: epoch ms
    assert by_key["9"].created_at is None  # "sometime last week"
    assert by_key["10"].created_at == at(2025, 11, 30, 11, 3, 10, tz=timezone(timedelta(hours=1)))
    assert all(m.status == "complete" and m.greeting_index is None for m in chat.messages)
    assert chat.warnings == [
        "1 hidden message (SillyTavern's system notes, comments and hidden lines) was left out.",
        "1 narrator message became the character's messages.",
        "1 message had a separate display text; the message text was kept, the display text "
        "left out.",
        "1 date could not be read and was left empty.",
    ]


def test_sillytavern_takes_names_from_the_lines_when_the_header_says_unused():
    """SillyTavern writes `"user_name":"unused","character_name":"unused"` since late 2025."""
    (chat,) = read_sillytavern(fixture("sillytavern/handmade-modern-header.jsonl"))
    assert (chat.character_name, chat.user_name) == ("Seraphina", "Tom")
    assert chat.created_at == at(2025, 12, 1, 7, 4, 12, 6000)  # no create_date: the first message
    assert [(m.key, m.parent, m.model, m.completion_tokens) for m in chat.messages] == [
        ("2", None, "", None),
        ("3", "2", "", None),
        ("4", "3", "gpt-4o", 6),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("June 19, 2023 2:20pm", at(2023, 6, 19, 14, 20)),
        ("May 23, 2026 3:10PM", at(2026, 5, 23, 15, 10)),
        ("December 1, 2024 12:05am", at(2024, 12, 1, 0, 5)),
        ("December 1, 2024 12:05pm", at(2024, 12, 1, 12, 5)),
        ("Sept 3, 2024 9:00am", at(2024, 9, 3, 9, 0)),
        ("2025-11-30T10:00:00.000Z", at(2025, 11, 30, 10, 0)),
        ("2026-07-01T10:01:00+08:00", at(2026, 7, 1, 10, 1, tz=timezone(timedelta(hours=8)))),
        ("2024-01-01T12:00:00", at(2024, 1, 1, 12, 0)),
        ("2024-6-5 @14h 56m 50s 682ms", at(2024, 6, 5, 14, 56, 50, 682000)),
        ("2024-07-12@01h31m37s", at(2024, 7, 12, 1, 31, 37)),
        ("2025-09-26@15h04m33s123ms", at(2025, 9, 26, 15, 4, 33, 123000)),
        ("2023-4-21 @20h 02m 47s 124ms", at(2023, 4, 21, 20, 2, 47, 124000)),
        (1674563371558, at(2023, 1, 24, 12, 29, 31, 558000)),
        ("1674563371558", at(2023, 1, 24, 12, 29, 31, 558000)),
        (1700000000, at(2023, 11, 14, 22, 13, 20)),  # seconds, below 1e11
        ("Tue Jan 24 2023 13:30:00 GMT+0100 (Central European Standard Time)",
         at(2023, 1, 24, 13, 30, tz=timezone(timedelta(hours=1)))),
        ("Tue Jan 24 2023 13:30:00 GMT-0500", at(2023, 1, 24, 13, 30, tz=timezone(timedelta(hours=-5)))),
        ("sometime last week", None),
        ("Smarch 3, 2024 9:00am", None),
        ("2024-2-30 @10h 00m 00s", None),
        ("", None),
        (None, None),
        (True, None),
        (1e300, None),
        (-5, None),
        ("x" * 200, None),
    ],
)  # fmt: skip
def test_sillytavern_dates_are_read_in_every_form_it_writes(value, expected):
    assert parse_date(value) == expected


def test_sillytavern_reads_crlf_a_bom_blank_lines_and_no_header():
    """A group chat file (no header line in 1.12) saved on Windows with a byte order mark."""
    data = "\ufeff" + "\r\n".join(
        [
            '{"name":"Iris","is_user":false,"mes":"Hello."}',
            "",
            '{"name":"Ann","is_user":true,"mes":"Hi."}',
            '{"name":"Bo","is_user":false,"mes":"Hey, I am Bo."}',
            "",
        ]
    )
    (chat,) = read_sillytavern(data.encode())
    assert shape(chat) == [
        ("1", None, "assistant", "Hello."),
        ("3", "1", "user", "Hi."),
        ("4", "3", "assistant", "Hey, I am Bo."),  # other speakers become the character
    ]
    assert (chat.character_name, chat.user_name, chat.created_at) == ("Iris", "Ann", None)


def test_sillytavern_reads_chub_nested_texts_and_lets_mes_win_over_its_swipe():
    data = jsonl(
        {"user_name": "Ann", "character_name": "Iris", "chat_metadata": {}},
        {"name": "Iris", "is_user": False, "mes": {"message": "primary", "id": 1},
         "swipes": [{"message": "first"}, "stale copy"], "swipe_id": 1},
        {"name": "Ann", "is_user": True, "mes": "ok", "swipes": ["nope", "ok"]},
    )  # fmt: skip
    (chat,) = read_sillytavern(data)
    assert shape(chat) == [
        ("2.0", None, "assistant", "first"),
        ("2", None, "assistant", "primary"),
        ("3.0", "2", "user", "nope"),  # no swipe_id: the swipe that equals mes is shown
        ("3", "2", "user", "ok"),
    ]


def test_sillytavern_keeps_only_the_header_when_a_chat_has_no_messages():
    (chat,) = read_sillytavern(jsonl({"user_name": "Ann", "character_name": "Iris"}))
    assert chat.messages == [] and chat.shown_leaf is None and chat.character_name == "Iris"


def test_sillytavern_reads_a_long_chat_without_recursion():
    lines = [{"user_name": "Ann", "character_name": "Iris"}]
    lines += [{"name": "x", "is_user": n % 2 == 0, "mes": f"line {n}"} for n in range(20_000)]
    (chat,) = read_sillytavern(jsonl(*lines))
    assert len(chat.messages) == 20_000 and len(chat.shown_path()) == 20_000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"\n \n", "The file is empty."),
        (b'{"user_name":"Ann"}\n{"name":"Iris","mes":"cut off', "Line 2 is not valid JSON (Unterminated string"),
        (b'{"user_name":"Ann"}\n["a list"]', "Line 2 must be a JSON object, not a list."),
        (b'{"user_name":"Ann"}\n{"name":"Iris"}', "Line 2 is not a message: it has no 'mes'."),
        (b'{"title":"not ST"}', "line 1 is neither a chat header nor a message"),
        (b'[{"mapping": {}}]', "This is a JSON list, not a SillyTavern chat (.jsonl)"),
        (jsonl({"user_name": "Ann"}, {"mes": 42}), "Line 2: 'mes' must be text, not a number."),
        (jsonl({"user_name": "Ann"}, {"mes": "a", "swipes": "a"}), "Line 2: 'swipes' must be a list, not text."),
        (jsonl({"user_name": "Ann"}, {"mes": "a", "swipes": ["a", 3]}), "Line 2: swipe 2 must be text, not a number."),
        (jsonl({"user_name": "Ann"}, {"mes": "a", "swipes": ["a", "b"], "swipe_id": 2}),
         "Line 2: 'swipe_id' 2 does not point at one of its 2 swipes."),
        (jsonl({"user_name": "Ann"}, {"mes": "a", "swipes": ["a"], "swipe_id": "0"}),
         "Line 2: 'swipe_id' must be a number, not text."),
        (jsonl({"user_name": "Ann"}, {"mes": "x" * 1_000_001}), "Line 2: 'mes' is longer than 1,000,000 characters"),
        (jsonl({"user_name": "Ann"}, {"mes": "a", "is_system": True, "swipes": {}}),
         "Line 2: 'swipes' must be a list"),
        (b'{"user_name":"Ann"}\n{"mes": NaN}', "Line 2 contains NaN, which JSON does not allow."),
        (fixture("hostile/sillytavern-invalid-utf8.jsonl"), "The file is not valid UTF-8 text (byte 145 cannot be read)."),
    ],
)  # fmt: skip
def test_sillytavern_refuses_a_broken_file_saying_which_line(data, message):
    assert message in refusal(read_sillytavern, data)


def test_sillytavern_counts_swipes_against_the_message_cap():
    line = {"name": "Iris", "mes": "a", "swipes": ["a"] * 30_000}
    data = jsonl({"user_name": "Ann"}, line, line)
    assert refusal(read_sillytavern, data) == (
        "The file holds 60,000 messages with their swipes; at most 50,000 can be imported at once."
    )


# --- SillyTavern: writing and round trips ---------------------------------------------------


def _lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().split("\n")]


def _swipe_view(line: dict) -> tuple:
    """What a SillyTavern line says about its text: mes, swipes (or [mes]) and swipe_id."""
    return (line["mes"], line.get("swipes") or [line["mes"]], line.get("swipe_id", 0))


@pytest.mark.parametrize(
    ("name", "user", "character"),
    [
        ("handmade-swipes.jsonl", "Ann", "Iris"),
        ("handmade-modern-header.jsonl", "Tom", "Seraphina"),  # the header said "unused"
        ("megumin-1673323621108.jsonl", "You", "Megumin"),
        ("aqua-1673181146000.jsonl", "You", "Aqua"),
    ],
)
def test_sillytavern_to_ours_and_back_keeps_every_line_the_model_holds(name, user, character):
    """ST → ours → ST keeps the header's names and create_date, and every kept line's mes,
    swipes, swipe_id, send_date, model and token count, and each swipe's time and model.
    Not kept (docs/chat-export-format.md): is_system lines, chat_metadata, other extra keys,
    gen_started/gen_finished, line names other than the two, the narrator type, unreadable
    dates, the raw date forms; a line without swipes gets [mes]."""
    original = fixture(f"sillytavern/{name}")
    ours = b"".join(write_ours(read_sillytavern(original), exported_at=EXPORTED_AT))
    (back,) = read_ours(ours)
    again = b"".join(write_sillytavern(back))
    before, after = _lines(original), _lines(again)
    assert (after[0]["user_name"], after[0]["character_name"]) == (user, character)
    if "create_date" in before[0]:
        assert parse_date(after[0]["create_date"]) == parse_date(before[0]["create_date"])
    kept = [line for line in before[1:] if line.get("is_system") is not True]
    assert len(after) == len(kept) + 1
    for old, new in zip(kept, after[1:], strict=True):
        assert _swipe_view(new) == _swipe_view(old)
        assert new["is_user"] == old["is_user"]
        assert parse_date(new.get("send_date")) == parse_date(old.get("send_date"))
        if not old["is_user"]:
            old_extra, new_extra = old.get("extra") or {}, new["extra"]
            assert new_extra.get("model") == old_extra.get("model")
            assert new_extra.get("token_count") == old_extra.get("token_count")
            for index, old_info in enumerate(old.get("swipe_info") or []):
                if index == old.get("swipe_id", 0):
                    continue  # the shown swipe's details are the line's own
                new_info = new["swipe_info"][index]
                assert parse_date(new_info.get("send_date")) == parse_date(old_info["send_date"])
                assert new_info["extra"].get("model") == old_info["extra"].get("model")
    # Reading it again gives the same tree; only keys differ, since hidden lines are gone.
    assert _without_keys(read_sillytavern(again)[0]) == _without_keys(back)


def _without_keys(chat: Chat) -> tuple:
    position = {message.key: index for index, message in enumerate(chat.messages)}
    tree = [
        (position.get(m.parent), m.role, m.content, m.created_at, m.model, m.completion_tokens)
        for m in chat.messages
    ]
    return tree, position[chat.leaf_key()], chat.character_name, chat.user_name, chat.created_at


def test_sillytavern_writer_keeps_the_shown_branch_with_alternatives_as_swipes():
    data = b"".join(write_sillytavern(example_chat()))
    assert not data.endswith(b"\n")
    assert _lines(data) == [
        {"user_name": "User", "character_name": "Iris",
         "create_date": "2025-11-30@09h50m00s250ms", "chat_metadata": {}},
        {"name": "Iris", "is_user": False, "is_system": False,
         "send_date": "2025-11-30T09:50:00.250Z", "mes": "Hi *there*.", "extra": {},
         "swipe_id": 1, "swipes": ["Hello.", "Hi *there*."],
         "swipe_info": [{"send_date": "2025-11-30T09:50:00.250Z", "extra": {}},
                        {"send_date": "2025-11-30T09:50:00.250Z", "extra": {}}]},
        {"name": "User", "is_user": True, "is_system": False, "send_date": "2025-11-30T09:51:00.000Z",
         "mes": "Tell me about the lighthouse.\nAll of it.", "extra": {}},
        {"name": "Iris", "is_user": False, "is_system": False,
         "send_date": "2025-11-30T09:53:00.000Z", "mes": "It has stood there for a century — 灯台.",
         "extra": {"model": "gpt-4o", "token_count": 9},
         "swipe_id": 1, "swipes": ["It is old and", "It has stood there for a century — 灯台."],
         "swipe_info": [
             {"send_date": "2025-11-30T09:51:05.000Z", "extra": {"model": "gpt-4o-mini", "token_count": 4}},
             {"send_date": "2025-11-30T09:53:00.000Z", "extra": {"model": "gpt-4o", "token_count": 9}}]},
        {"name": "User", "is_user": True, "is_system": False, "send_date": "2025-11-30T09:55:00.000Z",
         "mes": "Who lives there?", "extra": {},
         "swipe_id": 1, "swipes": ["Who keeps it?", "Who lives there?"],
         "swipe_info": [{"send_date": "2025-11-30T09:54:00.000Z", "extra": {}},
                        {"send_date": "2025-11-30T09:55:00.000Z", "extra": {}}]},
        {"name": "Iris", "is_user": False, "is_system": False,
         "send_date": "2025-11-30T09:55:01.000Z", "mes": "", "extra": {"model": "gpt-4o"},
         "swipe_id": 0, "swipes": [""],
         "swipe_info": [{"send_date": "2025-11-30T09:55:01.000Z", "extra": {"model": "gpt-4o"}}]},
    ]  # fmt: skip


def test_sillytavern_writer_drops_exactly_what_sillytavern_cannot_hold():
    """The branch below the stopped reply (105, 106) is gone; so are statuses, finish reasons,
    prompt tokens, "edited", greeting indexes, the title, the settings and the card."""
    (back,) = read_sillytavern(b"".join(write_sillytavern(example_chat())))
    original = example_chat()
    assert [m.content for m in back.messages] == [
        m.content for m in original.messages if m.key not in ("105", "106")
    ]
    assert [m.content for m in back.shown_path()] == [m.content for m in original.shown_path()]
    assert {m.status for m in back.messages} == {"complete"}
    assert all(
        m.prompt_tokens is None and m.finish_reason == "" and not m.edited for m in back.messages
    )
    assert all(m.greeting_index is None for m in back.messages)
    assert (back.title, back.settings, back.character) == ("", ChatSettings(), None)
    assert (back.character_name, back.user_name) == ("Iris", "User")


def test_sillytavern_writer_streams_one_line_per_chunk_and_writes_an_empty_chat():
    chunks = list(write_sillytavern(example_chat()))
    assert len(chunks) == 6 and all(chunk.startswith(b"\n") for chunk in chunks[1:])
    (only,) = write_sillytavern(Chat(character_name="Iris"))
    assert json.loads(only) == {"user_name": "User", "character_name": "Iris", "chat_metadata": {}}


def test_sillytavern_writer_follows_the_newest_branch_when_no_leaf_is_shown():
    chat = example_chat()
    chat.shown_leaf = None
    (back,) = read_sillytavern(b"".join(write_sillytavern(chat)))
    assert [m.content for m in back.shown_path()][-1] == ""  # 102 → 103 → 107 → 109 → 110


# --- ChatGPT ----------------------------------------------------------------------------------


def test_chatgpt_tree_with_two_branch_points_becomes_our_tree():
    """LibreChat __data__/chatgpt-tree.json: a null root, a hidden system message, an edited
    question (two user siblings), a regenerated joke (two assistant siblings), an interrupted
    story."""
    (chat,) = read_chatgpt(fixture("chatgpt/librechat-chatgpt-tree.json"))
    assert chat.title == "Assist user with summary"
    assert chat.created_at == datetime.fromtimestamp(1714585031.148505, tz=UTC)
    assert chat.updated_at == datetime.fromtimestamp(1714585060.879308, tz=UTC)
    assert chat.settings == ChatSettings(model="text-davinci-002-render-sha")
    story = "Sure! Here's a short story for you:\n\n---\n\nOnce upon a time, in a small village nestled between rolling"
    joke = "Sure, here's one for you:\n\nWhy don't scientists trust atoms?\n\nBecause they make up everything!"
    assert [(k[:8], p and p[:8], r, c) for k, p, r, c in shape(chat)] == [
        ("aaa297ba", None, "user", "hi there"),  # re-parented past the null root and system
        ("bda8a275", "aaa297ba", "assistant", "Hello! How can I assist you today?"),
        ("aaa24023", "bda8a275", "user", "so cool bro"),
        ("23afbea9", "aaa24023", "assistant", "Thanks! What brings you here today?"),
        ("aaa292cc", "23afbea9", "user", "tell me a story"),
        ("ada93f81", "aaa292cc", "assistant", story),
        ("aaa236a3", "bda8a275", "user", "hi again"),
        ("db88eddf", "aaa236a3", "assistant", "Hey! Welcome back. What's on your mind?"),
        ("aaa20127", "db88eddf", "user", "tell me a joke"),
        ("d0d2a7df", "aaa20127", "assistant", joke),
        ("f63b8e17", "aaa20127", "assistant", joke),
    ]  # fmt: skip
    assert chat.shown_leaf == "f63b8e17-aa5c-4ca6-a1bf-d4d285e269b8"
    assert [m.key[:8] for m in chat.shown_path()] == [
        "aaa297ba", "bda8a275", "aaa236a3", "db88eddf", "aaa20127", "f63b8e17",
    ]  # fmt: skip
    children = chat.children()
    assert [m.key[:8] for m in children["bda8a275-886d-4f59-b38c-d7037144f0d5"]] == [
        "aaa24023",
        "aaa236a3",
    ]
    story_reply = chat.messages[5]
    assert (story_reply.status, story_reply.finish_reason) == ("interrupted", "")
    hello = chat.messages[1]
    assert (hello.status, hello.finish_reason, hello.model) == (
        "complete",
        "stop",
        "text-davinci-002-render-sha",
    )
    assert hello.created_at == datetime.fromtimestamp(1714585031.757056, tz=UTC)
    assert chat.messages[0].model == "" and chat.messages[0].finish_reason == ""
    assert chat.warnings == ["1 system or tool message was left out."]


def test_chatgpt_tool_calls_and_results_are_left_out_and_the_answer_follows_the_question():
    """LibreChat __data__/chatgpt-export.json, first exchange (trimmed, see the docstring):
    search and mclick calls to the browser, three tool results, then the answer."""
    (chat,) = read_chatgpt(fixture("chatgpt/librechat-chatgpt-export-trimmed.json"))
    assert chat.title == "Conversation 1. Web Search"
    question, answer = chat.messages
    assert (question.key, question.parent, question.role) == (
        "bbb277e8-11d0-44f4-86c9-01dc3027228a",
        None,
        "user",
    )
    assert question.content == (
        "What is the fuel consumption of vw  transporter with 8 people in l/km"
    )
    assert (answer.parent, answer.role, answer.model) == (question.key, "assistant", "gpt-4")
    assert answer.content.startswith("The fuel consumption of a Volkswagen Transporter")
    assert answer.content.endswith("\u30106\u2020source\u3011\u30107\u2020source\u3011.")
    assert chat.shown_leaf == answer.key
    assert chat.settings.model == "" and chat.updated_at is not None
    assert chat.warnings == [
        "4 system or tool messages were left out.",
        "2 tool calls were left out.",
    ]


def test_chatgpt_modern_export_with_a_hidden_context_node_and_a_corrupted_entry():
    """LibreChat __data__/chatgpt-modern-export.json: custom instructions as a hidden user node,
    null times, an entry without `mapping`, `default_model_slug` per conversation."""
    deploy, corrupted, pasta = read_chatgpt(fixture("chatgpt/librechat-chatgpt-modern-export.json"))
    assert shape(deploy) == [
        ("user-1", None, "user", "How do I roll back the deploy?"),
        ("assistant-1", "user-1", "assistant", "Run `helm rollback staging`."),
        ("user-2", "assistant-1", "user", "And if that fails?"),
        ("assistant-2", "user-2", "assistant", "Restore from the last known-good chart."),
    ]
    assert [m.model for m in deploy.messages] == ["", "", "", "o4-mini"]
    assert deploy.settings.model == "gpt-5-thinking" and deploy.shown_leaf == "assistant-2"
    assert deploy.warnings == ["1 hidden message was left out."]
    assert (corrupted.title, corrupted.messages, corrupted.shown_leaf) == (
        "Corrupted entry",
        [],
        None,
    )
    assert corrupted.warnings == ["Conversation 2 has no messages in the export."]
    assert corrupted.created_at == at(2025, 8, 24, 1, 55)
    assert shape(pasta) == [
        ("user-3", None, "user", "Something with anchovies?"),
        ("assistant-3", "user-3", "assistant", "Puttanesca."),
    ]
    assert pasta.warnings == []


def _chatgpt(mapping: dict, **extra) -> bytes:
    return json.dumps([{"title": "T", "mapping": mapping, **extra}]).encode()


def _node(key, parent, message=None, **message_fields):
    if message is None and message_fields:
        message = {"author": {"role": message_fields.pop("role", "user")}, **message_fields}
    return {"id": key, "parent": parent, "children": [], "message": message}


def test_chatgpt_keeps_the_text_of_images_and_code_and_notes_what_it_left_out():
    """Hand-made in the documented shapes (notes §2): multimodal parts with image and audio
    pointers, a dict part holding text, code addressed to everyone, a length-cut reply."""
    mapping = {
        "r": _node("r", None),
        "u": _node("u", "r", content={"content_type": "multimodal_text", "parts": [
            {"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-1",
             "size_bytes": 1, "width": 2, "height": 3},
            "What is in this photo?", None,
            {"content_type": "audio_asset_pointer", "asset_pointer": "sediment://file_2"},
        ]}),
        "a": _node("a", "u", role="assistant", content={"content_type": "multimodal_text",
                   "parts": [{"content_type": "text", "text": "A cat."}, "", "It is asleep."]},
                   metadata={"model_slug": "gpt-4o", "finish_details": {"type": "max_tokens"}}),
        "u2": _node("u2", "a", content={"content_type": "multimodal_text", "parts": [
            {"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-3"}]}),
        "c": _node("c", "u2", role="assistant", recipient="all",
                   content={"content_type": "code", "language": "python", "text": "print(1)"}),
        "t": _node("t", "c", role="assistant", content={"content_type": "thoughts", "thoughts": []}),
        "e": _node("e", "t", role="assistant", content={"content_type": "text", "parts": [""]}),
    }  # fmt: skip
    (chat,) = read_chatgpt(_chatgpt(mapping, current_node="e"))
    assert shape(chat) == [
        ("u", None, "user", "What is in this photo?"),
        ("a", "u", "assistant", "A cat.\nIt is asleep."),
        ("u2", "a", "user", ""),  # only an image: kept, so the reply below keeps its question
        ("c", "u2", "assistant", "```python\nprint(1)\n```"),
    ]
    assert (chat.messages[1].status, chat.messages[1].finish_reason) == ("truncated", "length")
    assert chat.shown_leaf == "c"  # the shown node was empty: its nearest kept ancestor
    assert chat.warnings == [
        "1 empty message was left out.",
        "1 reasoning or instructions block was left out.",
        "3 images or files were left out: the export holds only pointers to them, the text "
        "around them was kept.",
    ]


def test_chatgpt_without_a_current_node_shows_the_newest_branch_and_reads_one_object():
    mapping = {
        "u": _node("u", None, content={"parts": ["Q"]}),
        "a1": _node("a1", "u", role="assistant", content={"parts": ["first"]}),
        "a2": _node("a2", "u", role="assistant", content={"parts": ["second"]}),
    }
    conversation = {"title": None, "mapping": mapping, "current_node": None}
    (chat,) = read_chatgpt(json.dumps(conversation).encode())
    assert chat.shown_leaf is None and chat.leaf_key() == "a2" and chat.title == ""


def test_chatgpt_times_that_are_no_times_are_left_empty_and_counted():
    mapping = {"u": _node("u", None, content={"parts": ["Q"]}, create_time=1e300)}
    (chat,) = read_chatgpt(_chatgpt(mapping, create_time="yesterday"))
    assert chat.created_at is None and chat.messages[0].created_at is None
    assert chat.warnings == ["2 times could not be read and were left empty."]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (fixture("hostile/chatgpt-cycle.json"),
         "The nodes form a cycle ('a' → 'b' → 'a'): no node starts it."),
        (fixture("hostile/chatgpt-self-parent.json"), "The node 'u1' is its own parent."),
        (fixture("hostile/chatgpt-non-string-part.json"),
         "Conversation 1, message 'u1': part 2 of the content is a number, neither text nor an attachment."),
        (_chatgpt({"u": _node("u", "gone", content={"parts": ["x"]})}),
         "The node 'u' has the parent 'gone', which is not in the file."),
        (_chatgpt({"u": _node("u", 5, content={"parts": ["x"]})}),
         "Conversation 1, node 'u': 'parent' must be text, not a number."),
        (_chatgpt({"u": "node"}), "Conversation 1, node 'u' must be an object, not text."),
        (_chatgpt({"u": _node("u", None, message=[])}), "'message' must be an object or null, not a list."),
        (_chatgpt({"u": _node("u", None, content="hi")}), "'content' must be an object, not text."),
        (_chatgpt({"u": _node("u", None, content={"parts": "hi"})}), "'parts' must be a list, not text."),
        (_chatgpt({"u": _node("u", None, content={"parts": ["x"]})}, current_node="z"),
         "Conversation 1: 'current_node' 'z' is not one of its messages."),
        (_chatgpt({"k" * 201: _node("k", None)}), "a node's id is longer than 200 characters."),
        (json.dumps([{"title": "T", "mapping": []}]).encode(), "Conversation 1: 'mapping' must be an object, not a list."),
        (b'"conversations"', "A ChatGPT export is a list of conversations, not text."),
        (b'[1]', "Conversation 1 must be an object, not a number."),
        (json.dumps([{"title": ["T"], "mapping": {}}]).encode(), "Conversation 1: the title must be text, not a list."),
    ],
)  # fmt: skip
def test_chatgpt_refuses_a_broken_file_saying_what_is_wrong(data, message):
    assert message in refusal(read_chatgpt, data)


# --- Open WebUI -------------------------------------------------------------------------------


def test_openwebui_librechat_sample_loses_its_reasoning_and_tool_blocks_only():
    """LibreChat __data__/openwebui-export.json: a reasoning reply, a tool-call reply and a
    plain chat, each with `output[]` and `<details>` blocks in the text."""
    reasoning, tool, simple = read_openwebui(fixture("openwebui/librechat-openwebui-export.json"))
    assert (reasoning.title, reasoning.settings.model) == ("Chat with reasoning", "deepseek-r1")
    assert shape(reasoning) == [
        ("ra1", None, "user", "What is 15 * 17?"),
        ("ra2", "ra1", "assistant", "255"),
    ]
    assert reasoning.messages[1].model == "deepseek-r1"
    assert reasoning.messages[1].created_at == at(2023, 11, 14, 22, 13, 30)
    assert reasoning.created_at == at(2023, 11, 14, 22, 13, 20)
    assert reasoning.updated_at == at(2023, 11, 14, 22, 13, 30)
    assert reasoning.shown_leaf == "ra2"
    assert reasoning.warnings == ["1 reasoning or tool-call block was left out."]
    assert shape(tool) == [
        ("ta1", None, "user", "What's the weather in Paris?"),
        ("ta2", "ta1", "assistant", "The weather in Paris is 18C with rain."),
    ]
    assert shape(simple) == [
        ("sa1", None, "user", "Hello"),
        ("sa2", "sa1", "assistant", "Hi there!"),
    ]
    assert simple.messages[1].model == "llama3.1:latest" and simple.warnings == []
    assert all(m.status == "complete" for c in (reasoning, tool, simple) for m in c.messages)


@pytest.mark.parametrize(
    ("name", "title", "expected", "created"),
    [
        ("docs-standard-format.json", "My Conversation",
         [("message-id-1", None, "user", "Hello, how are you?"),
          ("message-id-2", "message-id-1", "assistant", "I'm doing well, thank you!")],
         at(2023, 11, 14, 22, 13, 20)),
        ("docs-legacy-format.json", "My Conversation",
         [("message-id-1", None, "user", "Hello!"),
          ("message-id-2", "message-id-1", "assistant", "Hi there!")], None),
        ("docs-minimal.json", "Quick Chat", [("msg-1", None, "user", "Hello!")], None),
    ],
)  # fmt: skip
def test_openwebui_reads_the_documented_standard_legacy_and_minimal_forms(
    name, title, expected, created
):
    """open-webui/docs import-export.md: the three example files."""
    (chat,) = read_openwebui(fixture(f"openwebui/{name}"))
    assert (chat.title, shape(chat), chat.created_at) == (title, expected, created)
    assert chat.shown_leaf == expected[-1][0]


def _openwebui(messages: dict, current=None, **chat) -> bytes:
    body = {
        "title": "T",
        "models": ["llama3"],
        "history": {"currentId": current, "messages": messages},
        **chat,
    }
    return json.dumps(
        [{"id": "c1", "title": "Branches", "chat": body, "created_at": 1700000000}]
    ).encode()


def _message(key, parent, role="user", content="x", **fields):
    return {
        "id": key,
        "parentId": parent,
        "childrenIds": [],
        "role": role,
        "content": content,
        **fields,
    }


def test_openwebui_branches_usage_errors_and_left_out_messages():
    """Hand-made in the shapes of notes §3: regenerated replies (siblings), a system message
    (left out, its child re-parented), a failed and an unfinished reply, attached files, both
    usage styles, and chat params."""
    messages = {
        "s": _message("s", None, "system", "You are terse."),
        "u": _message("u", "s", content="Hi", files=[{"type": "image", "url": "data:..."}],
                      timestamp=1700000000000),
        "a1": _message("a1", "u", "assistant", "Hello", model="llama3", done=True,
                       usage={"prompt_eval_count": 26, "eval_count": 3}),
        "a2": _message("a2", "u", "assistant", "Hey", model="gpt-4o",
                       usage={"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}),
        "a3": _message("a3", "u", "assistant", "", error={"content": "Ollama: 500"}),
        "a4": _message("a4", "u", "assistant", "Hel", done=False),
    }  # fmt: skip
    params = {"temperature": 0.4, "max_tokens": 300}
    (chat,) = read_openwebui(_openwebui(messages, current="a2", params=params))
    assert shape(chat) == [
        ("u", None, "user", "Hi"),
        ("a1", "u", "assistant", "Hello"),
        ("a2", "u", "assistant", "Hey"),
        ("a3", "u", "assistant", ""),
        ("a4", "u", "assistant", "Hel"),
    ]
    u, a1, a2, _, _ = chat.messages
    assert u.created_at == at(2023, 11, 14, 22, 13, 20)  # milliseconds, read as such
    assert (a1.prompt_tokens, a1.completion_tokens, a1.model) == (26, 3, "llama3")
    assert (a2.prompt_tokens, a2.completion_tokens, a2.model) == (20, 2, "gpt-4o")
    assert [m.status for m in chat.messages] == [
        "complete", "complete", "complete", "failed", "interrupted",
    ]  # fmt: skip
    assert chat.settings == ChatSettings(model="llama3", temperature=0.4, max_tokens=300)
    assert chat.shown_leaf == "a2"
    assert chat.warnings == [
        "1 attached file was left out.",
        "1 message with another role than user or assistant was left out.",
    ]


def test_openwebui_leaves_out_settings_that_are_out_of_range_and_reads_a_flat_chat():
    data = json.dumps([{"title": "Old", "models": [], "params": {"temperature": 9, "max_tokens": -1},
                        "messages": [{"role": "user", "content": "a"},
                                     {"id": "b", "role": "assistant", "content": "b"}]}]).encode()  # fmt: skip
    (chat,) = read_openwebui(data)
    assert chat.settings == ChatSettings()
    assert shape(chat) == [("1", None, "user", "a"), ("b", "1", "assistant", "b")]
    assert chat.shown_leaf is None and chat.leaf_key() == "b"


def test_openwebui_strips_blocks_in_one_pass_even_from_a_hostile_reply():
    assert strip_blocks(
        '<details type="reasoning" done="true"><summary>x</summary>y</details>\n\nAnswer'
    ) == (
        "Answer",
        1,
    )
    assert strip_blocks("<details open><summary>Mine</summary></details>kept") == (
        "<details open><summary>Mine</summary></details>kept",
        0,
    )
    hostile = '<details type="reasoning">' * 40_000 + "<details " * 40_000
    started = time.perf_counter()
    assert strip_blocks(hostile) == (hostile, 0)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (fixture("hostile/openwebui-dangling-parent.json"),
         "The message 'm2' has the parent 'gone', which is not in the file."),
        (fixture("hostile/openwebui-non-string-content.json"),
         "Chat 1, message 'm1': 'content' must be text, not an object."),
        (fixture("hostile/openwebui-non-string-ids.json"),
         "Chat 1, message '2': 'parentId' must be text, not a number."),
        (fixture("chatgpt/librechat-chatgpt-tree.json"),
         "This is a ChatGPT export (its chats have a 'mapping'), not an Open WebUI one."),
        (_openwebui({"a": _message("a", "b"), "b": _message("b", "a")}),
         "The messages form a cycle ('a' → 'b' → 'a'): no message starts it."),
        (_openwebui({"a": _message("a", "a")}), "The message 'a' is its own parent."),
        (_openwebui({"a": _message("a", None)}, current="z"), "Chat 1: 'currentId' 'z' is not one of its messages."),
        (_openwebui({"a": _message("a", None)}, current=3), "Chat 1: 'currentId' must be text, not a number."),
        (_openwebui({"a": "message"}), "Chat 1, message 'a' must be an object, not text."),
        (json.dumps([{"title": "No history", "chat": {}}]).encode(), "Chat 1 has no message 'history' object."),
        (json.dumps([{"chat": {"history": {"messages": []}}}]).encode(),
         "Chat 1: 'history.messages' must be an object, not a list."),
        (json.dumps([{"chat": "text"}]).encode(), "Chat 1: 'chat' must be an object, not text."),
        (b"42", "An Open WebUI export is a list of chats, not a number."),
        (b'["chat"]', "Chat 1 must be an object, not text."),
    ],
)  # fmt: skip
def test_openwebui_refuses_a_broken_file_saying_what_is_wrong(data, message):
    assert message in refusal(read_openwebui, data)


# --- Hostile files, every reader --------------------------------------------------------------


def test_a_50_mb_file_is_refused_by_every_reader_before_it_is_parsed():
    data = b"[" + b" " * (50 * 1024 * 1024) + b"]"
    for reader, limit in [
        (read_ours, "32 MiB"),
        (read_chatgpt, "32 MiB"),
        (read_openwebui, "32 MiB"),
        (read_sillytavern, "16 MiB"),
        (lambda d: read_chat_file(d), "32 MiB"),
    ]:
        assert refusal(reader, data) == f"The file is larger than {limit}, the limit."


def test_deep_nesting_is_refused_by_every_reader():
    deep = b"[" * 100_000 + b"]" * 100_000
    for reader in JSON_READERS:
        assert refusal(reader, deep) == "The file is nested too deeply (more than 100 levels)."
    line = b'{"user_name":"Ann"}\n{"mes":"a","extra":' + b'{"x":' * 150 + b"1" + b"}" * 151
    assert refusal(read_sillytavern, line) == "Line 2 is nested too deeply (more than 100 levels)."


def test_nesting_the_parser_accepts_but_we_do_not_is_refused_too():
    data = json.dumps([{"title": "T", "mapping": {}, "deep": json.loads("[" * 150 + "]" * 150)}])
    assert "nested too deeply (more than 100 levels)" in refusal(read_chatgpt, data.encode())


def test_bad_utf8_is_refused_by_every_reader():
    data = b'[{"title": "caf\xe9"}]'
    for reader in ALL_READERS:
        assert refusal(reader, data) == "The file is not valid UTF-8 text (byte 16 cannot be read)."


def test_a_hundred_thousand_messages_are_refused_by_every_reader():
    nodes = {
        f"n{i}": {"parent": f"n{i - 1}" if i else None, "message": None} for i in range(100_000)
    }
    chatgpt = json.dumps([{"title": "Big", "mapping": nodes}]).encode()
    assert refusal(read_chatgpt, chatgpt) == (
        "The file holds 100,000 messages; at most 50,000 can be imported at once."
    )
    messages = {f"m{i}": {"parentId": None, "role": "user", "content": ""} for i in range(100_000)}
    openwebui = json.dumps([{"chat": {"history": {"messages": messages}}}]).encode()
    assert "holds 100,000 messages" in refusal(read_openwebui, openwebui)
    ours = ours_file({"messages": [{"key": str(i), "role": "user", "content": ""}
                                   for i in range(100_000)]})  # fmt: skip
    assert "holds 100,000 messages" in refusal(read_ours, ours)
    st = b'{"user_name":"Ann"}' + b'\n{"mes":""}' * 100_000
    assert refusal(read_sillytavern, st) == (
        "The file holds 100,000 messages; at most 50,000 can be imported at once."
    )


def test_nan_and_endless_numbers_are_refused():
    assert refusal(read_chatgpt, b'[{"create_time": NaN}]') == (
        "The file contains NaN, which JSON does not allow."
    )
    assert refusal(read_ours, b'{"version": Infinity}') == (
        "The file contains Infinity, which JSON does not allow."
    )
    assert refusal(read_openwebui, b"[" + b"9" * 5000 + b"]") == (
        "The file contains a number that is too long."
    )


def test_text_the_database_cannot_store_is_cleaned_not_refused():
    data = ours_file({"title": "a\u0000b", "messages": [
        {"key": "1", "role": "user", "content": "nul\u0000 and \ud800 surrogate"}]})  # fmt: skip
    (chat,) = read_ours(data)
    assert chat.title == "ab"
    assert chat.messages[0].content == "nul and \ufffd surrogate"


def test_a_long_chain_is_read_without_recursion():
    messages = [{"key": str(i), "parent": str(i - 1) if i else None, "role": "user", "content": ""}
                for i in range(40_000)]  # fmt: skip
    (chat,) = read_ours(ours_file({"messages": messages, "shown_leaf": "39999"}))
    assert len(chat.shown_path()) == 40_000


# --- Recognising a file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("serika/example-v1.json", "serika"),
        ("sillytavern/megumin-1673323621108.jsonl", "sillytavern"),
        ("sillytavern/handmade-modern-header.jsonl", "sillytavern"),
        ("sillytavern/aqua-1673181146000.jsonl", "sillytavern"),
        ("chatgpt/librechat-chatgpt-tree.json", "chatgpt"),
        ("chatgpt/librechat-chatgpt-modern-export.json", "chatgpt"),
        ("openwebui/librechat-openwebui-export.json", "openwebui"),
        ("openwebui/docs-legacy-format.json", "openwebui"),
    ],
)
def test_read_chat_file_recognises_every_format_by_content(name, expected):
    found, chats = read_chat_file(fixture(name))
    reader = {
        "serika": read_ours,
        "sillytavern": read_sillytavern,
        "chatgpt": read_chatgpt,
        "openwebui": read_openwebui,
    }[expected]
    assert found == expected
    assert chats == reader(fixture(name))


def test_read_chat_file_recognises_chatgpt_when_the_first_entry_lost_its_mapping():
    data = json.dumps([{"title": "Corrupted entry"}, {"title": "T", "mapping": {}}]).encode()
    assert read_chat_file(data)[0] == "chatgpt"


def test_read_chat_file_reads_one_line_json_exports_and_names_a_broken_sillytavern_line():
    conversation = {"title": "T", "mapping": {"u": _node("u", None, content={"parts": ["Q"]})}}
    found, (chat,) = read_chat_file(json.dumps(conversation).encode())
    assert (found, shape(chat)) == ("chatgpt", [("u", None, "user", "Q")])
    found, (chat,) = read_chat_file(ours_file({"title": "One line", "messages": []}))
    assert (found, chat.title) == ("serika", "One line")
    broken = b'{"user_name":"Ann",}\n{"mes":"hi"}'
    assert "Line 1 is not valid JSON" in refusal(read_chat_file, broken)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "The file holds no chats."),
        (b'{"name": "Iris", "spec": "chara_card_v2"}', "This file is not a chat export we know"),
        (b"[1, 2]", "This file is not a chat export we know"),
        (b"not json", "The file is not valid JSON"),
    ],
)
def test_read_chat_file_refuses_what_it_does_not_know(data, message):
    assert message in refusal(read_chat_file, data)


def test_read_chat_file_applies_each_formats_own_size_cap():
    big_st = b'{"user_name":"Ann"}\n{"mes":"' + b"a" * (17 * 1024 * 1024) + b'"}'
    assert refusal(read_chat_file, big_st) == "The file is larger than 16 MiB, the limit."


# --- Markdown ----------------------------------------------------------------------------------

EXAMPLE_MARKDOWN = """\
# The lighthouse

Character: Iris · Model: gpt-4o · Started: 2025-11-30 09:50 UTC

## Iris

*2025-11-30 09:50 UTC · alternative 2 of 2*

Hi *there*.

## You

*2025-11-30 09:51 UTC*

Tell me about the lighthouse.
All of it.

## Iris

*2025-11-30 09:53 UTC · gpt-4o · alternative 2 of 2 · edited*

It has stood there for a century — 灯台.

## You

*2025-11-30 09:55 UTC · alternative 2 of 2*

Who lives there?

## Iris

*2025-11-30 09:55 UTC · gpt-4o · failed*
"""


def test_markdown_holds_the_shown_branch_with_its_details():
    assert b"".join(write_markdown([example_chat()])).decode() == EXAMPLE_MARKDOWN


def test_markdown_escapes_titles_and_names_and_separates_chats():
    chat = Chat(
        title="# <b>[click](javascript:x)</b>",
        character_name="*Iris*",
        user_name="Ann_\nSmith",
        messages=[ChatMessage(key="1", parent=None, role="user", content="**hi**")],
    )
    chunks = list(write_markdown([chat, Chat()]))
    assert chunks == [
        b"# \\# \\<b\\>\\[click\\](javascript:x)\\</b\\>\n\nCharacter: \\*Iris\\*\n\n"
        b"## Ann\\_ Smith\n\n**hi**\n",
        b"\n---\n\n# Conversation\n",
    ]
