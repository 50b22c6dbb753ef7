// The chat page: one websocket per tab, replay from the server, then live deltas.
// All HTML inserted here was sanitized on the server; plain text goes through textContent.
"use strict";

(function () {
  const root = document.getElementById("chat");
  if (!root) return;
  const transcript = document.getElementById("transcript");
  const form = document.getElementById("composer");
  const input = document.getElementById("message");
  const stopButton = document.getElementById("stop");
  const retryButton = document.getElementById("retry");
  const statusLine = document.getElementById("status");
  const author = root.dataset.author;
  const conversationId = root.dataset.conversation;

  const live = new Map(); // reply id -> {raw, frozen, seq, el}
  let socket = null;
  let retryDelay = 500;
  // The text of a send the server has not confirmed yet: the box keeps it until then, so a
  // refusal or a lost connection never loses what was typed.
  let unconfirmed = null;
  let renderQueued = false;

  // The newest message id below which everything shown is final: a sync after it brings
  // back anything newer and every reply still streaming.
  function lastKnownId() {
    let max = 0;
    let firstOpen = Infinity;
    for (const el of transcript.querySelectorAll(".message[data-id]")) {
      const id = Number(el.dataset.id);
      if (id > max) max = id;
      if (el.dataset.status === "streaming" && id < firstOpen) firstOpen = id;
    }
    return firstOpen === Infinity ? max : firstOpen - 1;
  }

  function nearBottom() {
    return transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
  }

  function scrollIfFollowing(wasNear) {
    if (wasNear) transcript.scrollTop = transcript.scrollHeight;
  }

  function showStatus(text) {
    statusLine.textContent = text;
    statusLine.hidden = !text;
  }

  function messageElement(message) {
    let el = transcript.querySelector(`.message[data-id="${message.id}"]`);
    if (!el) {
      el = document.createElement("article");
      el.dataset.id = String(message.id);
      const who = document.createElement("div");
      who.className = "author";
      who.textContent = message.role === "user" ? "You" : author;
      const body = document.createElement("div");
      body.className = "body";
      const notice = document.createElement("div");
      notice.className = "notice";
      notice.hidden = true;
      const tools = document.createElement("div");
      tools.className = "tools";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "link copy-message";
      copy.textContent = "Copy";
      tools.append(copy);
      el.append(who, body, notice, tools);
      transcript.append(el);
    }
    el.className = `message ${message.role} status-${message.status}`;
    el.dataset.status = message.status;
    if (message.greeting_index !== null && message.greeting_index !== undefined) {
      el.dataset.greeting = String(message.greeting_index);
    }
    return el;
  }

  function renderNotice(el, message) {
    const notice = el.querySelector(".notice");
    notice.replaceChildren();
    const add = (cls, text, role) => {
      const p = document.createElement("p");
      p.className = cls;
      p.textContent = text;
      if (role) p.setAttribute("role", role);
      notice.append(p);
    };
    if (message.prompt_note) add("note", message.prompt_note);
    if (message.status === "stopped") add("note", "Stopped.");
    if (message.finish_reason === "length") add("note", "Cut off by the token limit.");
    if (message.error) add("alert", message.error, "alert");
    notice.hidden = notice.childElementCount === 0;
  }

  // A streaming reply shows its frozen blocks as server-rendered HTML and the open tail as
  // plain text; only the tail is redrawn, once per animation frame at most.
  function streamingBody(el) {
    const body = el.querySelector(".body");
    let frozen = body.querySelector(".frozen");
    let tail = body.querySelector(".tail");
    if (!frozen || !tail) {
      body.replaceChildren();
      frozen = document.createElement("div");
      frozen.className = "frozen";
      tail = document.createElement("div");
      tail.className = "tail";
      body.append(frozen, tail);
    }
    return { frozen, tail };
  }

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      const wasNear = nearBottom();
      for (const state of live.values()) {
        if (state.dirty) {
          state.parts.tail.textContent = state.raw.slice(state.frozen);
          state.dirty = false;
        }
      }
      scrollIfFollowing(wasNear);
    });
  }

  function startLive(message) {
    const el = messageElement(message);
    const parts = streamingBody(el);
    parts.frozen.innerHTML = message.html || "";
    const state = {
      raw: message.content || "",
      frozen: message.frozen || 0,
      seq: message.seq || 0,
      el,
      parts,
      dirty: true,
    };
    if (!message.html) state.frozen = 0;
    live.set(message.id, state);
    renderNotice(el, message);
    queueRender();
    updateControls();
  }

  // What this tab has shown of a reply, so far as it knows.
  function shownText(id) {
    const state = live.get(id);
    if (state) return state.raw;
    const el = transcript.querySelector(`.message[data-id="${id}"]`);
    return el ? el.dataset.content || "" : "";
  }

  function showFinal(message) {
    const shown = shownText(message.id);
    live.delete(message.id);
    const wasNear = nearBottom();
    const el = messageElement(message);
    // A reply marked interrupted holds the text saved before its server went quiet; when this
    // tab was shown more of it, it keeps that (the generating server may still store it all).
    const shorter =
      message.status === "interrupted" &&
      shown.length > message.content.length &&
      shown.startsWith(message.content);
    if (!shorter) {
      el.querySelector(".body").innerHTML = message.html;
      el.dataset.content = message.content;
    }
    renderNotice(el, message);
    scrollIfFollowing(wasNear);
    updateControls();
  }

  function upsert(message) {
    if (message.status === "streaming") {
      if (!live.has(message.id)) startLive(message);
    } else {
      showFinal(message);
    }
  }

  // Before the first user message, the opening greeting can be swapped for an alternate one.
  const greetingCount = Number(root.dataset.greetings || 0);

  function renderGreetingSwitcher() {
    for (const old of transcript.querySelectorAll(".greeting-switcher")) old.remove();
    const greeting = transcript.querySelector(".message[data-greeting]");
    if (!greeting || greetingCount < 2 || transcript.querySelector(".message.user")) return;
    const index = Number(greeting.dataset.greeting);
    const nav = document.createElement("div");
    nav.className = "greeting-switcher";
    const button = (label, name, target) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = label;
      b.setAttribute("aria-label", name);
      b.disabled = target < 0 || target >= greetingCount;
      b.addEventListener("click", () => send({ type: "greeting.switch", index: target }));
      return b;
    };
    const where = document.createElement("span");
    where.textContent = `Greeting ${index + 1} of ${greetingCount}`;
    nav.append(button("‹", "Previous greeting", index - 1), where, button("›", "Next greeting", index + 1));
    greeting.append(nav);
  }

  function updateControls() {
    renderGreetingSwitcher();
    const streaming = live.size > 0;
    stopButton.hidden = !streaming;
    const messages = transcript.querySelectorAll(".message");
    const last = messages[messages.length - 1];
    const retryable = ["failed", "truncated", "interrupted", "stopped"];
    retryButton.hidden =
      streaming || !last || !last.classList.contains("assistant") || !retryable.includes(last.dataset.status);
  }

  const handlers = {
    "conversation.sync": (frame) => frame.messages.forEach(upsert),
    "message.created": (frame) => {
      upsert(frame.message);
      if (frame.message.role === "user") {
        if (unconfirmed !== null && frame.message.content === unconfirmed) {
          // Stored: only now does the box let go of the text (unless it was edited since).
          if (input.value === unconfirmed) input.value = "";
          unconfirmed = null;
        }
        transcript.scrollTop = transcript.scrollHeight;
      }
    },
    "message.snapshot": (frame) => startLive(frame.message),
    "message.delta": (frame) => {
      const state = live.get(frame.id);
      if (!state || frame.seq <= state.seq) return;
      state.seq = frame.seq;
      state.raw += frame.text;
      if (frame.html) {
        state.parts.frozen.insertAdjacentHTML("beforeend", frame.html);
        state.frozen = frame.frozen;
      }
      state.dirty = true;
      queueRender();
    },
    "message.done": (frame) => showFinal(frame.message),
    error: (frame) => {
      // A refused send stored nothing; its text is still in the box.
      unconfirmed = null;
      showStatus(frame.message);
    },
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/conversations/${conversationId}/`);
    socket.addEventListener("open", () => {
      retryDelay = 500;
      root.dataset.connected = "true";
      showStatus("");
      socket.send(JSON.stringify({ type: "sync", after: lastKnownId() }));
    });
    socket.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      const handler = handlers[frame.type];
      if (handler) handler(frame);
    });
    socket.addEventListener("close", (event) => {
      root.dataset.connected = "false";
      unconfirmed = null;
      if (event.code === 4401) {
        showStatus("You have been logged out. Reload the page to log in again.");
        return;
      }
      if (event.code === 4404) {
        showStatus("This conversation no longer exists.");
        return;
      }
      showStatus("Connection lost. Reconnecting…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showStatus("Not connected yet. Try again in a moment.");
      return false;
    }
    socket.send(JSON.stringify(frame));
    return true;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = input.value;
    if (!content.trim()) return;
    if (unconfirmed !== null) return; // one send at a time, until the server answers
    if (send({ type: "message.send", content })) {
      unconfirmed = content;
      showStatus("");
    }
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && live.size > 0) {
      event.preventDefault();
      send({ type: "generation.stop" });
    }
  });
  stopButton.addEventListener("click", () => send({ type: "generation.stop" }));
  retryButton.addEventListener("click", () => send({ type: "message.retry" }));

  for (const el of transcript.querySelectorAll('.message[data-status="streaming"]')) {
    // Rendered by the server mid-stream: the sync after connecting replaces it with live text.
    el.querySelector(".body").classList.add("pending");
  }
  updateControls();
  transcript.scrollTop = transcript.scrollHeight;
  connect();
})();
