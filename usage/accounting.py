"""Token counts and quota arithmetic, without the database.

What one upstream call cost (`Charge`, from the upstream's `usage` or an estimate), what a reply
about to start may cost (`reservation_tokens`), and whether a member's quotas leave room for it
(`Standing.refusal`). `usage.models` reads and writes the figures; these functions only decide.

Days and months are UTC: a daily quota resets at 00:00 UTC, a monthly one on the 1st.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from cardspec.prompt import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    count_message_tokens,
    estimate_tokens,
)

if TYPE_CHECKING:
    from chat.reply_requests import PromptInputs

# The messages a prompt has besides the history: the system prompt, example dialogue, the
# post-history instructions or the continue nudge.
_PROMPT_EXTRA_MESSAGES = 3


class QuotaExceeded(Exception):
    """A reply refused by the member's quotas; the message says which and when it resets."""


@dataclass(frozen=True)
class Charge:
    """The tokens of one upstream call. `estimated_tokens` is the part of the two counts that
    is our estimate (the upstream sent no `usage`), 0 when the upstream counted them all."""

    prompt_tokens: int
    completion_tokens: int
    estimated_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def measure(
    prompt_tokens: int | None,
    completion_tokens: int | None,
    *,
    prompt_messages: Sequence[Mapping[str, str]],
    new_text: str,
    prompt_processed: bool,
) -> Charge:
    """What one call cost: the upstream's counts where it sent them, else estimates.

    `new_text` is the text this call produced (for a continue, only what it added);
    `prompt_processed` is false when the call failed before the upstream produced anything (it
    refused the request or could not be reached), which costs no prompt.
    """
    estimated = 0
    if prompt_tokens is None:
        prompt_tokens = count_message_tokens(prompt_messages) if prompt_processed else 0
        estimated += prompt_tokens
    if completion_tokens is None:
        completion_tokens = estimate_tokens(new_text)
        estimated += completion_tokens
    return Charge(prompt_tokens, completion_tokens, estimated)


def estimate_prompt(inputs: PromptInputs) -> int:
    """A cheap estimate of a prompt that is not built yet, for its reservation.

    The prompt is assembled after the send's database call (off the database thread), so this
    counts the characters it will be made of (the branch's turns, the character's card fields,
    the member's persona) at `CHARS_PER_TOKEN`, the prompt builder's own rate, never above the
    context budget the builder trims the prompt to. It leaves out lorebook entries and macro
    expansion: the settlement at the end replaces it with the real figure.
    """
    chars = sum(len(turn.content) for turn in inputs.history) + len(inputs.user_description)
    character = inputs.character
    if character is not None:
        chars += (
            len(character.system_prompt)
            + len(character.description)
            + len(character.personality)
            + len(character.scenario)
            + len(character.mes_example)
            + len(character.post_history_instructions)
        )
    messages = len(inputs.history) + _PROMPT_EXTRA_MESSAGES
    estimate = math.ceil(chars / CHARS_PER_TOKEN) + messages * MESSAGE_OVERHEAD_TOKENS
    return min(estimate, inputs.context_tokens)


@dataclass(frozen=True)
class Limits:
    """A member's quotas; None: no limit."""

    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    requests_per_minute: int | None = None

    @property
    def any(self) -> bool:
        return any(
            limit is not None
            for limit in (self.tokens_per_day, self.tokens_per_month, self.requests_per_minute)
        )


def next_day(now: datetime) -> datetime:
    return datetime.combine(
        now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC
    )


def next_month(now: datetime) -> date:
    today = now.astimezone(UTC).date()
    return date(today.year + today.month // 12, today.month % 12 + 1, 1)


@dataclass(frozen=True)
class Standing:
    """A member's quotas and what counts against them at `now`.

    `reserved` is what the member's replies still being written may use (their reservations);
    `recent_requests` the upstream calls started in the last minute, the oldest at
    `oldest_recent`.
    """

    limits: Limits
    today: int
    this_month: int
    reserved: int
    recent_requests: int
    oldest_recent: datetime | None
    now: datetime

    def left_today(self) -> int | None:
        limit = self.limits.tokens_per_day
        return None if limit is None else max(0, limit - self.today - self.reserved)

    def left_this_month(self) -> int | None:
        limit = self.limits.tokens_per_month
        return None if limit is None else max(0, limit - self.this_month - self.reserved)

    def refusal(self, need: int) -> str | None:
        """Why a reply that may use `need` tokens cannot start now, or None when it may."""
        rpm = self.limits.requests_per_minute
        if rpm is not None and self.recent_requests >= rpm:
            return self._too_many_requests(rpm)
        month_reset = next_month(self.now)
        for period, limit, used, resets in (
            ("daily", self.limits.tokens_per_day, self.today, "at 00:00 UTC"),
            (
                "monthly",
                self.limits.tokens_per_month,
                self.this_month,
                f"on {month_reset.day} {month_reset:%B} at 00:00 UTC",
            ),
        ):
            if limit is not None and used + self.reserved + need > limit:
                return _over_quota(period, limit, used, self.reserved, need, resets)
        return None

    def _too_many_requests(self, rpm: int) -> str:
        replies = "reply" if rpm == 1 else "replies"
        if rpm == 0:
            return "Your quota allows no replies at the moment; ask an administrator."
        wait = 60
        if self.oldest_recent is not None:
            wait = 60 - (self.now - self.oldest_recent).total_seconds()
        return (
            f"Your quota allows {rpm} {replies} a minute; try again in {max(1, math.ceil(wait))} s."
        )


def _over_quota(period: str, limit: int, used: int, reserved: int, need: int, resets: str) -> str:
    quota = f"Your {period} quota of {limit:,} tokens"
    if used >= limit:
        return f"{quota} is used up; it resets {resets}."
    if used + reserved >= limit:
        return (
            f"{quota} is taken up by the replies being written now; "
            f"try again when they finish (it resets {resets})."
        )
    left = limit - used - reserved
    return (
        f"{quota} has {left:,} tokens left, fewer than this reply may use (up to {need:,} "
        f"with its prompt); it resets {resets}. A lower maximum reply length in Chat settings "
        "needs fewer."
    )
