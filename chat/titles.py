"""Automatic conversation titles: after the first reply, one short non-streaming request.

It runs as a task of its own once the reply is stored, so it never delays a reply; a failure
leaves the default title (the character's name) and is only logged. Its tokens are the member's:
a member whose daily or monthly quota has no room left for it gets no title (the quota is
checked, not reserved: a title is small, and costs at most TITLE_MAX_TOKENS past its prompt).
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.contrib.auth import get_user_model

from cardspec.prompt import count_message_tokens
from chat import conversation_actions, upstream
from chat.database_threads import database_call
from usage import models as usage
from usage.accounting import measure

log = logging.getLogger(__name__)

TITLE_INSTRUCTION = (
    "Write a short title (at most six words) for the conversation below, in its language. "
    "Answer with the title alone: no quotes, no full stop."
)
TITLE_MAX_TOKENS = 24
TITLE_TIMEOUT_SECONDS = 20.0
# Enough of the first exchange to say what it is about; the rest would only cost tokens.
EXCERPT_CHARS = 1_500

# Running title tasks, held so they are not collected mid-request.
_tasks: set[asyncio.Task] = set()
# Titles written at once per process; the others wait their turn. A burst of first replies
# (a team starting their day) would otherwise queue four database calls per title in front of
# every send on the one database thread: 500 at once added seconds to the next replies' first
# token (docs/benchmarks.md, "Why these figures differ").
TITLE_CONCURRENCY = 2
_turns: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _turn() -> asyncio.Semaphore:
    """This event loop's semaphore of title turns (a semaphore belongs to one loop)."""
    loop = asyncio.get_running_loop()
    turn = _turns.get(loop)
    if turn is None:
        for stale in [other for other in _turns if other.is_closed()]:
            del _turns[stale]
        turn = _turns[loop] = asyncio.Semaphore(TITLE_CONCURRENCY)
    return turn


def title_request(task: conversation_actions.TitleTask) -> upstream.CompletionRequest:
    """The upstream request that asks for `task`'s title."""
    exchange = f"User: {task.question[:EXCERPT_CHARS]}\n\nAssistant: {task.answer[:EXCERPT_CHARS]}"
    return upstream.CompletionRequest(
        model=settings.SERIKA_TITLE_MODEL or task.model,
        messages=[
            {"role": "system", "content": TITLE_INSTRUCTION},
            {"role": "user", "content": exchange},
        ],
        max_tokens=TITLE_MAX_TOKENS,
        stream=False,
    )


def quota_refusal(owner_id: int, need: int) -> str | None:
    """Why the member's token quotas leave no room for a title that may use `need` tokens, or
    None when they do (or the member is exempt). The replies-per-minute quota is not asked: a
    title is not a reply the member started."""
    owner = get_user_model().objects.only("is_staff").get(pk=owner_id)
    if usage.is_exempt(owner):
        return None
    standing = usage.standing(owner_id)
    for period, left in (
        ("daily", standing.left_today()),
        ("monthly", standing.left_this_month()),
    ):
        if left is not None and left < need:
            return f"the {period} token quota has {left} left, the title may use {need}"
    return None


async def write_title(reply_id: int) -> None:
    """Ask for and store the title of reply `reply_id`'s conversation, if it still has none
    (at most TITLE_CONCURRENCY at once)."""
    async with _turn():
        await _write_title(reply_id)


async def _write_title(reply_id: int) -> None:
    task = await conversation_actions.claim_auto_title(reply_id)
    if task is None:
        return
    request = title_request(task)
    # Claimed all the same: like a failed title, a skipped one is not asked again.
    need = count_message_tokens(request.messages) + TITLE_MAX_TOKENS
    refusal = await database_call(quota_refusal)(task.owner_id, need)
    if refusal is not None:
        log.info("No title for conversation %s: %s", task.conversation_id, refusal)
        return
    try:
        completion = await upstream.complete(request, TITLE_TIMEOUT_SECONDS)
    except upstream.UpstreamError as exc:
        log.warning("No title for conversation %s: %s", task.conversation_id, exc.code)
        return
    # The title's tokens are the member's usage, like their replies'.
    await database_call(usage.record)(
        task.owner_id,
        task.character,
        request.model,
        measure(
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
            prompt_messages=request.messages,
            new_text=completion.text,
            prompt_processed=True,
        ),
    )
    title = conversation_actions.clean_title(completion.text)
    if title:
        await conversation_actions.set_auto_title(task.conversation_id, title)


def schedule_title(reply_id: int) -> None:
    """Write the title of reply `reply_id`'s conversation in the background."""
    task = asyncio.get_running_loop().create_task(write_title(reply_id))
    _tasks.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("Writing a title failed", exc_info=task.exception())


async def cancel_titles() -> None:
    """Cancel running title tasks (tests; a process exiting needs nothing)."""
    for task in list(_tasks):
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)
