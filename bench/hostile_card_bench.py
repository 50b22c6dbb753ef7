"""What a hostile card costs the server (issue 9): a send with a slow lorebook, and the
character page and a new chat with huge markdown fields.

- **Send**: a conversation with a character of 2,000 regex lorebook entries whose key
  (`/^(a|aa)+$/`) backtracks on the message `"a" * 40 + "!"`. Measured: the send's wall time and
  CPU (`chat.actions.post_user_message`, every thread), and the longest a probe database call
  (one every 50 ms during the send) waited: how long everyone else's database work was held up.
- **Render**: the character page (`GET /characters/<id>/`) with 200 kB of `[` as creator notes,
  and a new chat (`POST /conversations/new/`) with a 480 kB markdown table as the greeting;
  wall and CPU time of the request, the first time and then again (the stored or cached
  rendering; the first creator-notes rendering happens when the character is saved).

Runs on whatever code is in the tree (so `git archive` an older commit to measure "before"),
on a fresh SQLite database of its own:

    python -m bench.hostile_card_bench [send] [render]     (default: both)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time

from bench.send_bench import _session

ENTRIES = 2000
KEY = "/^(a|aa)+$/"
MESSAGE = "a" * 40 + "!"
BRACKETS = "[" * 200_000
TABLE = "| a | b | c |\n|---|---|---|\n" + "| x | y | z |\n" * 34_000  # about 480 kB


async def _send_while_probing(access) -> dict:
    from channels.db import database_sync_to_async
    from django.contrib.auth.models import User

    from chat import actions

    @database_sync_to_async
    def probe() -> None:
        User.objects.exists()

    waits: list[float] = []

    async def probing(done: asyncio.Event) -> None:
        while not done.is_set():
            start = time.monotonic()
            await probe()
            waits.append(time.monotonic() - start)
            await asyncio.sleep(0.05)

    done = asyncio.Event()
    prober = asyncio.create_task(probing(done))
    await asyncio.sleep(0.1)
    wall, cpu = time.monotonic(), time.process_time()
    started = await actions.post_user_message(access, MESSAGE, "bench")
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    done.set()
    await prober
    return {
        "send_wall_s": round(wall, 3),
        "send_cpu_s": round(cpu, 3),
        "longest_database_wait_s": round(max(waits), 3),
        "prompt_note": started.reply.prompt_note,
    }


def run_send() -> dict:
    from django.contrib.auth.models import User
    from django.db import connections

    from characters.models import Character, Visibility
    from chat import actions
    from chat.access import SocketAccess

    user = User.objects.create_user(f"hostile-{time.time_ns()}")
    entries = [
        {"keys": [KEY], "content": f"Lore {i}.", "use_regex": True, "enabled": True}
        for i in range(ENTRIES)
    ]
    character = Character.objects.create(
        name="Backtracker",
        owner=user,
        visibility=Visibility.OWNER,
        character_book={"entries": entries},
    )
    conversation = actions.start_conversation(user, character)
    access = SocketAccess(_session(user), user.pk, conversation.pk)
    connections.close_all()  # the send's database thread opens its own connection
    return asyncio.run(_send_while_probing(access))


def run_render() -> dict:
    from django.contrib.auth.models import User
    from django.test import Client

    from characters.models import Character

    user = User.objects.create_user(f"render-{time.time_ns()}")
    client = Client()
    client.force_login(user)
    notes = Character.objects.create(name="Brackets", creator_notes=BRACKETS)
    greeting = Character.objects.create(name="Table", first_mes=TABLE)
    out = {}
    for name, request in {
        "character_page_200kB_brackets_s": lambda: client.get(f"/characters/{notes.pk}/"),
        "new_chat_480kB_table_s": lambda: client.post(
            "/conversations/new/", {"character": greeting.pk}
        ),
    }.items():
        times = []
        for _ in range(2):
            wall, cpu = time.monotonic(), time.process_time()
            response = request()
            times.append((time.monotonic() - wall, time.process_time() - cpu))
            assert response.status_code in (200, 302), response.status_code
        out[name] = {
            f"{when}_{kind}_s": round(times[i][j], 3)
            for i, when in enumerate(("first", "again"))
            for j, kind in enumerate(("wall", "cpu"))
        }
    return out


def main() -> None:
    directory = tempfile.mkdtemp(prefix="hostile-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
    os.environ["DEBUG"] = "true"
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1"
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    parts = {"send": run_send, "render": run_render}
    only = sys.argv[1:] or list(parts)
    print(json.dumps({name: parts[name]() for name in only}, indent=1))


if __name__ == "__main__":
    main()
