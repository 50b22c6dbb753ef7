"""Automatic conversation titles: after the first reply, one short non-streaming request.

It runs as a task of its own once the reply is stored, so it never delays a reply; a failure
leaves the default title (the character's name) and is only logged.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from chat import conversation_actions, upstream
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


async def write_title(reply_id: int) -> None:
    """Ask for and store the title of reply `reply_id`'s conversation, if it still has none."""
    task = await conversation_actions.claim_auto_title(reply_id)
    if task is None:
        return
    request = title_request(task)
    try:
        completion = await upstream.complete(request, TITLE_TIMEOUT_SECONDS)
    except upstream.UpstreamError as exc:
        log.warning("No title for conversation %s: %s", task.conversation_id, exc.code)
        return
    # The title's tokens are the member's usage, like their replies'.
    await database_sync_to_async(usage.record)(
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
