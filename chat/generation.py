"""Server-owned generation: one task per reply, independent of any socket.

A `Generation` streams from the upstream, keeps the text, and fans numbered deltas out to the
conversation's group. Per process, one control channel (stored on each reply it generates)
routes Stop and snapshot requests to the live generation by reply id, so any socket on any
process can reach it; one maintenance task saves the live replies' text about once a second,
marks them alive (heartbeat) and sweeps replies whose process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from chat import actions, events, presence, titles, upstream
from chat.actions import ReplyOutcome
from chat.database_health import database_health
from chat.models import Message
from serika_web import log_context, metrics
from serika_web.rendering import StreamingRenderer
from usage.accounting import Charge, measure

log = logging.getLogger(__name__)

# Live generations of this process, by reply id. Holding the task here is what keeps it alive
# after the socket that started it has gone.
_live: dict[int, Generation] = {}
# Live replies with text not yet saved; the maintenance task saves them all in one transaction.
_unflushed: set[int] = set()
_maintenance: asyncio.Task | None = None


class _SizeCapReached(Exception):
    pass


class ShuttingDown(Exception):
    """The process is draining for a restart: it starts no new replies."""


_SAVE_ON_SHUTDOWN_SECONDS = 10.0

# Set once SIGTERM arrived (serika_web.serve): live replies may finish, no new one starts here.
_draining = False


def batching_window() -> float:
    """How long a stream waits between upstream reads: not at all on a quiet server, longer
    as more replies stream at once.

    A read and a broadcast cost about the same CPU whether they carry one token or ten, so under
    load each stream reads its socket less often and sends what gathered meanwhile as one delta.
    An idle server still forwards each token the moment it arrives.
    """
    active = len(_live)
    if active <= BATCHING_THRESHOLD:
        return 0.0
    return min(BATCHING_MAX_WINDOW, active * BATCHING_SECONDS_PER_STREAM)


# Tuned with `make bench` (docs/benchmarks.md).
BATCHING_THRESHOLD = 16
BATCHING_SECONDS_PER_STREAM = 0.0001
BATCHING_MAX_WINDOW = 0.05
# A batch that took longer than this share of the window to arrive came from the network, not
# from data already buffered (a busy loop delays even buffered data a little).
NETWORK_WAIT_SHARE = 0.25


class Generation:
    """The generation of one reply."""

    def __init__(
        self,
        reply: Message,
        request: upstream.CompletionRequest,
        *,
        prefix: str = "",
        renderer: StreamingRenderer | None = None,
    ) -> None:
        self.reply_id = reply.pk
        self.conversation_id = reply.conversation_id
        self.reply = reply
        self.request = request
        self.seq = 0
        # A continued reply starts with its text so far, already rendered by `renderer`.
        self._sent: list[str] = [prefix] if prefix else []  # text already broadcast
        self._pending: list[str] = []  # text received, not yet broadcast
        self._received_chars = len(prefix)  # the size cap is the stored reply's
        self._prefix_chars = len(prefix)
        self._started_at = 0.0  # loop time of the upstream request
        self._pieces = 0  # text events received (tokens), counted in the metrics at the end
        self._renderer = renderer or StreamingRenderer()
        # A continued reply's usage so far: the new completion tokens add to it.
        self._earlier_usage = (reply.prompt_tokens, reply.completion_tokens) if prefix else None
        self._stream_task: asyncio.Task | None = None
        self._stopped = False
        self._interrupted = False
        # Set for the first replies of a conversation that has no title yet (see chat.titles).
        self.wants_title = False
        self.task: asyncio.Task | None = None

    # --- text bookkeeping ---------------------------------------------------------------
    def text(self) -> str:
        return "".join(self._sent) + "".join(self._pending)

    def snapshot(self) -> dict[str, Any]:
        """The reply as broadcast so far: exactly the text of deltas 1..seq."""
        content = "".join(self._sent)
        return events.message_payload(
            self.reply,
            content=content,
            html=self._renderer.frozen_html,
            frozen=self._renderer.frozen_upto,
            seq=self.seq,
        )

    async def _broadcast_pending(self) -> None:
        # Only the stream loop (and, at the end, `run`) sends, one delta at a time: deltas
        # reach every channel layer in seq order.
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._sent.append(text)
        self.seq += 1
        html = self._renderer.feed(text)
        await events.message_delta(
            self.conversation_id, self.reply_id, self.seq, text, html, self._renderer.frozen_upto
        )

    def _add_text(self, text: str) -> None:
        self._pieces += 1
        self._pending.append(text)
        self._received_chars += len(text)
        _unflushed.add(self.reply_id)
        if self._received_chars > settings.SERIKA_STREAM_MAX_CHARS:
            raise _SizeCapReached

    # --- the stream -----------------------------------------------------------------------
    async def _stream(self, outcome: ReplyOutcome) -> None:
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        async with (
            asyncio.timeout(settings.SERIKA_STREAM_MAX_SECONDS),
            # Closing the stream closes the upstream response, however this loop ends.
            contextlib.aclosing(upstream.stream_completion(self.request)) as batches,
        ):
            # A Stop cancels this task, but a cancellation can be lost in a library's await
            # (Python 3.11's `asyncio.wait_for`, which redis-py wraps around every command,
            # returns instead of raising when its inner call completes in the same loop
            # iteration): the flag ends the loop at the next await all the same.
            while not self._stopped:
                asked = loop.time()
                batch = await anext(batches, None)
                if batch is None:
                    return
                now = loop.time()
                had_text = self._received_chars
                for event in batch:
                    if isinstance(event, upstream.Delta):
                        self._add_text(event.text)
                    elif isinstance(event, upstream.Finish):
                        outcome.finish_reason = event.reason
                    elif isinstance(event, upstream.Usage):
                        outcome.prompt_tokens = event.prompt_tokens
                        outcome.completion_tokens = event.completion_tokens
                if not had_text and self._received_chars:
                    metrics.TIME_TO_FIRST_TOKEN.observe(now - self._started_at)
                window = batching_window()
                if not window:
                    await self._broadcast_pending()
                    continue
                # Under load: keep taking what is already buffered (the transport hands over
                # one received chunk per read); once a batch had to wait for the network, send
                # what gathered as one delta and let the socket fill for a while, so that the
                # next reads bring several tokens at once.
                if now - asked > window * NETWORK_WAIT_SHARE or now - last_sent >= window:
                    await self._broadcast_pending()
                    await asyncio.sleep(window)
                    last_sent = loop.time()

    async def run(self) -> None:
        """Stream the reply to its end and store exactly one final state, whatever happens."""
        outcome = ReplyOutcome(status=Message.Status.STREAMING, content="")
        self._started_at = asyncio.get_running_loop().time()
        # This task's own context (a copy of the socket's that started it): ids for its logs.
        log_context.conversation_id.set(self.conversation_id)
        log_context.reply_id.set(self.reply_id)
        metrics.STREAMS.inc()
        try:
            self._stream_task = asyncio.get_running_loop().create_task(self._stream(outcome))
            try:
                await self._stream_task
                if outcome.finish_reason:
                    outcome.status = Message.Status.COMPLETE
                elif self._stopped:
                    outcome.status = Message.Status.STOPPED
                else:
                    outcome.status = Message.Status.TRUNCATED
                    outcome.error_code = "truncated"
                    outcome.error = (
                        "The reply ended before the Serika API said it was finished; "
                        "it may be incomplete."
                    )
            except asyncio.CancelledError:
                if self._interrupted:
                    outcome.status = Message.Status.INTERRUPTED
                    outcome.error_code = "interrupted"
                    outcome.error = (
                        "The server restarted while this reply was being written; "
                        "the text so far is kept."
                    )
                elif not self._stopped:
                    raise
                else:
                    outcome.status = Message.Status.STOPPED
            except upstream.UpstreamError as exc:
                outcome.status = Message.Status.FAILED
                outcome.error_code = exc.code
                outcome.error = exc.message
            except _SizeCapReached:
                outcome.status = Message.Status.TRUNCATED
                outcome.error_code = "size_limit"
                outcome.error = (
                    f"The reply passed the server's limit of {settings.SERIKA_STREAM_MAX_CHARS} "
                    "characters and was stopped."
                )
            except TimeoutError:
                outcome.status = Message.Status.TRUNCATED
                outcome.error_code = "time_limit"
                outcome.error = (
                    f"The reply took longer than the server's limit of "
                    f"{settings.SERIKA_STREAM_MAX_SECONDS:g} s and was stopped."
                )
            except Exception:
                log.exception("Generation of reply %s failed", self.reply_id)
                outcome.status = Message.Status.FAILED
                outcome.error_code = "internal"
                outcome.error = "The server failed while writing this reply."
        finally:
            if outcome.status == Message.Status.STREAMING:
                # Cancelled from outside (process shutting down): keep what arrived.
                outcome.status = Message.Status.INTERRUPTED
                outcome.error_code = "interrupted"
                outcome.error = "The server stopped while this reply was being written."
            outcome.content = self.text()
            # Before the earlier parts' usage is added in: the aggregates count this call only.
            outcome.charge = self._charge(outcome)
            if self._earlier_usage is not None:
                self._add_earlier_usage(outcome)
            try:
                # Every delta goes out before "done", so followers end with the full text.
                await self._broadcast_pending()
                await self._save_final(outcome)
                if self.wants_title and outcome.status == Message.Status.COMPLETE:
                    titles.schedule_title(self.reply_id)
            finally:
                metrics.STREAMS.dec()
                metrics.REPLIES.labels(outcome.status).inc()
                if outcome.status == Message.Status.FAILED:
                    metrics.UPSTREAM_ERRORS.labels(outcome.error_code).inc()
                seconds = asyncio.get_running_loop().time() - self._started_at
                metrics.REPLY_SECONDS.observe(seconds)
                metrics.TOKENS.inc(self._pieces)
                log.info(
                    "Reply %s %s: %d characters in %.1f s",
                    self.reply_id,
                    outcome.status,
                    len(outcome.content),
                    seconds,
                )
                _live.pop(self.reply_id, None)
                _unflushed.discard(self.reply_id)

    def _charge(self, outcome: ReplyOutcome) -> Charge:
        """What this upstream call used: the upstream's usage, or our estimate of the prompt
        sent and of the text this call added (a continue's prefix is not its output)."""
        new_text = outcome.content[self._prefix_chars :]
        return measure(
            outcome.prompt_tokens,
            outcome.completion_tokens,
            prompt_messages=self.request.messages,
            new_text=new_text,
            # A call refused or unreachable before any text costs no prompt.
            prompt_processed=bool(new_text) or outcome.status != Message.Status.FAILED,
        )

    def _add_earlier_usage(self, outcome: ReplyOutcome) -> None:
        prompt_tokens, completion_tokens = self._earlier_usage
        if outcome.prompt_tokens is None:
            outcome.prompt_tokens = prompt_tokens
        if outcome.completion_tokens is None:
            outcome.completion_tokens = completion_tokens
        elif completion_tokens:
            outcome.completion_tokens += completion_tokens

    async def _save_final(self, outcome: ReplyOutcome) -> None:
        """Store the final state, retrying while the database is away.

        The text lives only here until it is stored, so it is kept (and the reply stays live:
        its heartbeat goes on and no sweep takes it) for up to `CHAT_SAVE_RETRY_SECONDS`.
        The save is unconditional: it also wins over an "interrupted" mark that another
        process's sweep may have made meanwhile.
        """
        deadline = time.monotonic() + settings.CHAT_SAVE_RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                await actions.finish_reply(self.reply, outcome, self.seq)
            except DatabaseError as exc:
                database_health.failed(exc)
                if time.monotonic() + delay > deadline:
                    log.error(
                        "Reply %s could not be stored within %g s and is lost after the text "
                        "saved last (%s)",
                        self.reply_id,
                        settings.CHAT_SAVE_RETRY_SECONDS,
                        exc,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _retry_cap())
                continue
            database_health.succeeded()
            return

    # --- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel the upstream request now; what arrived is kept and marked stopped."""
        if self._stream_task is not None and not self._stream_task.done():
            self._stopped = True
            self._stream_task.cancel()

    def interrupt(self) -> None:
        """End the stream for a shutdown: what arrived is kept and marked interrupted."""
        if self._stream_task is not None and not self._stream_task.done():
            self._interrupted = True
            self._stopped = True  # ends the stream loop even if the cancellation is lost
            self._stream_task.cancel()


# --- the process's control channel -----------------------------------------------------------
# One listener per process, never cancelled mid-receive, routes Stop and snapshot requests to
# the live generation by reply id. (A receive cancelled while it holds channels_redis' receive
# lock can lose a message meant for another channel; a listener per reply would also cost a
# waiting receive per stream.)
_control: tuple[asyncio.AbstractEventLoop, str, asyncio.Task] | None = None


async def _route_control(channel: str) -> None:
    layer = get_channel_layer()
    while True:
        message = await layer.receive(channel)
        live = _live.get(message.get("reply_id"))
        kind = message.get("type")
        if live is None:
            continue  # finished already: its "done" event carries the final state
        if kind == "generation.stop":
            live.stop()
        elif kind == "generation.sync" and message.get("reply_to"):
            # Asked through the layer: a socket of another process follows this reply.
            presence.mark_followed(live.conversation_id)
            try:
                await layer.send(
                    message["reply_to"], {"type": "reply.snapshot", "message": live.snapshot()}
                )
            except Exception as exc:
                # The asking socket resyncs again; the listener must live on.
                log.warning("Could not send reply %s's snapshot: %s", live.reply_id, exc)


async def new_generator_channel() -> str:
    """This process's control channel, stored on each reply it generates.

    Raises `ShuttingDown` while the process drains: a reply must start where it can finish.
    """
    global _control
    if _draining:
        raise ShuttingDown
    loop = asyncio.get_running_loop()
    if _control is None or _control[0] is not loop or _control[2].done():
        channel = await get_channel_layer().new_channel()
        _control = (loop, channel, loop.create_task(_route_control(channel)))
        if events.layer_is_shared():
            global _alive_beat
            if _alive_beat is not None:
                _alive_beat.cancel()
            _alive_beat = loop.create_task(_mark_alive(channel))
    return _control[1]


_alive_beat: asyncio.Task | None = None


async def _mark_alive(channel: str) -> None:
    # Its own task, apart from the database work of `_maintain`, which an outage can hold up.
    every = min(settings.CHAT_HEARTBEAT_INTERVAL, 2.0)
    ttl = max(settings.CHAT_HEARTBEAT_INTERVAL * 3, presence.ALIVE_SECONDS)
    while True:
        try:
            await presence.mark_generator_alive(channel, ttl)
        except Exception as exc:
            log.debug("Could not mark this process alive in Redis: %s", exc)
        await asyncio.sleep(every)


def is_live(reply_id: int) -> bool:
    """Whether this process is generating reply `reply_id`."""
    return reply_id in _live


def launch(started: actions.StartedReply) -> Generation:
    """Start generating a stored reply in this process; it outlives the socket that asked."""
    ensure_maintenance()
    reply = started.reply
    generation = Generation(
        reply, started.request, prefix=started.prefix, renderer=started.renderer
    )
    generation.wants_title = (
        settings.SERIKA_AUTO_TITLES
        and not started.prefix
        and started.conversation.title_source == started.conversation.TitleSource.DEFAULT
    )
    _live[reply.pk] = generation
    generation.task = asyncio.get_running_loop().create_task(generation.run())
    generation.task.add_done_callback(_log_failure)
    return generation


def _log_failure(task: asyncio.Task) -> None:
    # `run` handles every failure it can; anything else is logged now, not as "Task exception
    # was never retrieved" whenever the task happens to be collected.
    if not task.cancelled() and task.exception() is not None:
        log.error("A generation ended with an error", exc_info=task.exception())


async def request_stop(channel: str, reply_id: int) -> None:
    """Ask the process listening on `channel` to stop generating reply `reply_id`."""
    live = _live.get(reply_id)
    if live is not None:
        # Generated here: stop at once. (Through channels_redis a control message can wait up
        # to its 5 s blocking read when several receivers of one process race for its list.)
        live.stop()
        return
    await get_channel_layer().send(channel, {"type": "generation.stop", "reply_id": reply_id})


async def request_snapshot(channel: str, reply_id: int, reply_to: str) -> None:
    """Ask the process on `channel` to send reply `reply_id`'s snapshot to channel `reply_to`.

    A reply generated here, for a socket of this process, is answered at once, without the
    layer. Raises when the layer cannot take the request (the socket resyncs later).
    """
    live = _live.get(reply_id)
    socket = events.local_socket(reply_to)
    if live is not None and socket is not None:
        await socket.dispatch({"type": "reply.snapshot", "message": live.snapshot()})
        return
    await get_channel_layer().send(
        channel, {"type": "generation.sync", "reply_id": reply_id, "reply_to": reply_to}
    )


# --- per-process maintenance ------------------------------------------------------------------
def _retry_cap() -> float:
    # Retries come at least once a heartbeat interval, so that after an outage this process
    # marks and saves its replies before another process's sweep may take them for dead.
    return max(0.1, min(1.0, settings.CHAT_HEARTBEAT_INTERVAL))


async def flush_unflushed() -> list[int]:
    """Save the text so far of every live reply that received some since the last flush.

    One transaction for all of them: per reply it is still one write a flush interval, but the
    process pays one commit instead of hundreds, off the streams' own paths. When the database
    cannot be reached, the replies stay unflushed for the next turn (their text is in memory).
    """
    batch = {rid: _live[rid].text() for rid in _unflushed if rid in _live}
    _unflushed.clear()
    if batch:
        try:
            with metrics.FLUSH_SECONDS.time():
                await actions.flush_replies(batch)
        except BaseException:
            _unflushed.update(rid for rid in batch if rid in _live)
            raise
    return list(batch)


async def _maintain() -> None:
    loop = asyncio.get_running_loop()
    beat_every = settings.CHAT_HEARTBEAT_INTERVAL
    next_beat = 0.0
    written_since_beat: set[int] = set()
    # A process sweeps others' replies only after three heartbeat intervals in which it reached
    # the database: after an outage every owner has had time to mark its live replies again.
    healthy_since: float | None = None
    while True:
        try:
            written_since_beat.update(await flush_unflushed())
            if loop.time() >= next_beat or healthy_since is None:
                # A flush already marked a reply as alive; only quiet ones need the heartbeat.
                await actions.touch_replies([rid for rid in _live if rid not in written_since_beat])
                written_since_beat.clear()
                next_beat = loop.time() + beat_every
                if healthy_since is None:
                    healthy_since = loop.time()
                elif loop.time() - healthy_since >= beat_every * 3:
                    alive = await presence.alive_generators() if events.layer_is_shared() else set()
                    await actions.interrupt_stale_replies(beat_every * 3, list(_live), alive)
            database_health.succeeded()
        except DatabaseError as exc:
            healthy_since = None
            database_health.failed(exc)
        except Exception:
            log.exception("Reply maintenance failed; retrying")
        await asyncio.sleep(min(settings.CHAT_FLUSH_INTERVAL, beat_every, _retry_cap()))


def ensure_maintenance() -> None:
    """Start this process's heartbeat and stale-reply sweep (once per event loop)."""
    global _maintenance
    loop = asyncio.get_running_loop()
    if _maintenance is None or _maintenance.done() or _maintenance.get_loop() is not loop:
        _maintenance = loop.create_task(_maintain())


async def drain(grace: float) -> None:
    """Let live replies finish for up to `grace` seconds, then save the rest as interrupted.

    Called once on SIGTERM, before daphne stops. No reply starts meanwhile. Every interrupted
    reply is stored with all the text it received (its final save, not the last flush).
    """
    global _draining
    _draining = True
    running = [g.task for g in _live.values() if g.task is not None]
    if running:
        await asyncio.wait(running, timeout=grace)
    remaining = [g for g in _live.values() if g.task is not None]
    if remaining:
        log.warning(
            "Shutting down: %d replies still streaming after %g s are saved as interrupted",
            len(remaining),
            grace,
        )
    for generation in remaining:
        generation.interrupt()
    tasks = [g.task for g in remaining]
    if tasks:
        # Their final saves: bounded, since a service manager kills a process that takes too
        # long (with the database away, a save retries far longer than a restart may take).
        _, late = await asyncio.wait(tasks, timeout=_SAVE_ON_SHUTDOWN_SECONDS)
        if late:
            log.error("Shutting down: %d interrupted replies could not be saved", len(late))


async def shutdown() -> None:
    """Stop maintenance and the control listener, and end live generations; used by tests."""
    global _maintenance, _control, _alive_beat
    _unflushed.clear()
    if _control is not None:
        _control[2].cancel()
        _control = None
    if _alive_beat is not None:
        _alive_beat.cancel()
        _alive_beat = None
    if _maintenance is not None:
        _maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await _maintenance
        _maintenance = None
    for generation in list(_live.values()):
        if generation.task is not None:
            generation.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await generation.task
    _live.clear()
    global _draining
    _draining = False
    await titles.cancel_titles()
    await events.stop_publishing()
    await actions.close_maintenance_connections()
