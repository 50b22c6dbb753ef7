"""What a reply asks the upstream: its history read from the database, the context budget and
the request built from them by the pure prompt assembly (`cardspec.prompt`)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from cardspec.prompt import PromptCharacter, Turn, build_prompt
from characters.personas import persona_for
from chat.models import Conversation, Message
from chat.tree import branch_rows
from chat.upstream import CompletionRequest


@dataclass(frozen=True)
class PromptInputs:
    """Everything a reply's prompt is built from, read inside the send's database call, so that
    building it needs no database and can run off the shared database thread."""

    character: PromptCharacter | None  # None: no character, or the upstream persona alone
    history: list[Turn]
    user_name: str
    user_description: str
    context_tokens: int
    model: str
    temperature: float | None
    max_tokens: int | None
    character_id: str
    continuing: bool = False  # the history ends with the reply to carry on (Continue)


def history_up_to(conversation_id: int, message_id: int | None) -> list[Turn]:
    """The turns of the branch ending at `message_id`, root first: exactly what the conversation
    shows down to there, less empty turns and replies still streaming."""
    if message_id is None:
        return []
    return [
        Turn(role, content)
        for role, content, status in branch_rows(conversation_id, message_id)
        if content and status != Message.Status.STREAMING
    ]


def context_budget(conversation: Conversation) -> int:
    """Prompt tokens a reply may use: the character's budget, else the model's, else the site's."""
    character = conversation.character
    if character is not None and character.context_tokens:
        return character.context_tokens
    return settings.SERIKA_MODEL_CONTEXT_TOKENS.get(
        conversation.model, settings.SERIKA_CONTEXT_TOKENS
    )


def prompt_inputs(
    conversation: Conversation, reply: Message, *, continuing_from: str | None = None
) -> PromptInputs:
    """Read what `reply`'s prompt needs (its branch: one query), inside the database call.

    `continuing_from` is the text of a reply being continued: the history then ends with it.
    When the character's prompt mode is "upstream", only the Serika persona speaks: no local
    persona prompt is sent, just its `character_id` and the history.
    """
    character = conversation.character
    user_name, user_description = persona_for(conversation.owner)
    local = character is not None and not (
        character.prompt_mode == "upstream" and character.serika_character_id
    )
    history = history_up_to(conversation.pk, reply.parent_id)
    if continuing_from:
        history.append(Turn(Message.Role.ASSISTANT, continuing_from))
    return PromptInputs(
        character=character.as_prompt_character() if local else None,
        history=history,
        user_name=user_name,
        user_description=user_description,
        context_tokens=context_budget(conversation),
        model=conversation.model,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
        character_id=character.serika_character_id if character else "",
        continuing=bool(continuing_from),
    )


def _prompt_note(prompt) -> str:
    notes = []
    if prompt.trimmed_turns:
        turns = "message was" if prompt.trimmed_turns == 1 else "messages were"
        notes.append(
            f"{prompt.trimmed_turns} older {turns} left out to fit the model's context; "
            "the character does not see them."
        )
    elif prompt.dropped_examples:
        notes.append("Example dialogue was left out to fit the model's context.")
    if prompt.lore_unscanned:
        notes.append(
            "The lorebook was only partly scanned (its keys took too long to match): "
            f"{prompt.lore_unscanned} entries were not checked."
        )
    return " ".join(notes)


def build_request(inputs: PromptInputs) -> tuple[CompletionRequest, str]:
    """The upstream request and the note on what its prompt left out ("" if nothing).

    No database: called in a worker thread. The lorebook's key searches share the budget
    `CHAT_LOREBOOK_BUDGET_SECONDS` and look at the latest `CHAT_LOREBOOK_SCAN_DEPTH` messages
    unless the card's lorebook sets its own `scan_depth`.
    """
    prompt = build_prompt(
        inputs.character,
        inputs.history,
        user_name=inputs.user_name,
        user_description=inputs.user_description,
        context_tokens=inputs.context_tokens,
        lore_budget_seconds=settings.CHAT_LOREBOOK_BUDGET_SECONDS,
        lore_scan_depth=settings.CHAT_LOREBOOK_SCAN_DEPTH,
        continuing=inputs.continuing,
    )
    request = CompletionRequest(
        model=inputs.model,
        messages=prompt.messages,
        temperature=inputs.temperature,
        max_tokens=inputs.max_tokens,
        character_id=inputs.character_id,
    )
    return request, _prompt_note(prompt)
