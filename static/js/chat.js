// The chat page: one websocket per tab, replay from the server, then live deltas.
// All HTML inserted here was sanitized on the server; plain text goes through textContent.
// The transcript shows one branch of the conversation's message tree (root first); the server
// says which, and every tab of the conversation shows the same one.
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
  const deleteDialog = document.getElementById("confirm-delete");
  const author = root.dataset.author;
  const conversationId = root.dataset.conversation;

  const live = new Map(); // reply id -> {raw, frozen, seq, el, parts, dirty}
  let socket = null;
  let retryDelay = 500;
  // The text of a send the server has not confirmed yet: the box keeps it until then, so a
  // refusal or a lost connection never loses what was typed.
  let unconfirmed = null;
  // The same for an edit: its editor stays open until the server confirms it.
  let pendingEdit = null; // {id, content}
  let renderQueued = false;

  const byId = (id) => transcript.querySelector(`.message[data-id="${Number(id)}"]`);
  const shownMessages = () => transcript.querySelectorAll(".message[data-id]");

  // The newest message id below which everything shown is final: a sync after it brings
  // back anything newer and every reply still streaming.
  function lastKnownId() {
    let max = 0;
    let firstOpen = Infinity;
    for (const el of shownMessages()) {
      const id = Number(el.dataset.id);
      if (id > max) max = id;
      if (el.dataset.status === "streaming" && id < firstOpen) firstOpen = id;
    }
    return firstOpen === Infinity ? max : firstOpen - 1;
  }

  function resync() {
    const have = Array.from(shownMessages(), (el) => Number(el.dataset.id));
    send({ type: "sync", after: lastKnownId(), have });
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

  // The element of `message`, its data brought up to date; made (not yet placed) when
  // `create` is set, else null for a message this tab does not show.
  function messageElement(message, create) {
    let el = byId(message.id);
    if (!el) {
      if (!create) return null;
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
      const foot = document.createElement("footer");
      foot.className = "message-foot";
      el.append(who, body, notice, foot);
    }
    el.className = `message ${message.role} status-${message.status}`;
    el.dataset.status = message.status;
    if ("parent" in message) el.dataset.parent = message.parent === null ? "" : String(message.parent);
    if (message.siblings) el.dataset.siblings = message.siblings.join(",");
    if (message.created_at) el.dataset.created = message.created_at;
    if (message.edited_at) el.dataset.edited = message.edited_at;
    if (message.role === "assistant") {
      el.dataset.model = message.model || "";
      el.dataset.promptTokens = message.usage?.prompt_tokens ?? "";
      el.dataset.completionTokens = message.usage?.completion_tokens ?? "";
    }
    if (message.greeting_index !== null && message.greeting_index !== undefined) {
      el.dataset.greeting = String(message.greeting_index);
    }
    return el;
  }

  // Put `el` right after its parent's element (first, for a root), in place of whatever this
  // tab showed there: a new alternative replaces the old one, a new branch the old branch.
  function place(el, parentId) {
    const parentEl = parentId === null || parentId === undefined ? null : byId(parentId);
    if (parentId !== null && parentId !== undefined && !parentEl) {
      resync(); // this tab is behind: the server sends the branch it shows
      return false;
    }
    let node = parentEl ? parentEl.nextElementSibling : transcript.firstElementChild;
    while (node) {
      const next = node.nextElementSibling;
      if (node !== el && node.matches(".message")) drop(node);
      node = next;
    }
    if (parentEl) {
      if (parentEl.nextElementSibling !== el) parentEl.after(el);
    } else if (transcript.firstElementChild !== el) {
      transcript.prepend(el);
    }
    return true;
  }

  function drop(el) {
    live.delete(Number(el.dataset.id));
    el.remove();
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

  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const today = new Date().toDateString() === date.toDateString();
    return today
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function button(label, cls, name) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `link ${cls}`;
    b.textContent = label;
    if (name) b.setAttribute("aria-label", name);
    return b;
  }

  // A message's footer: its alternatives ("2 / 3"), what wrote it and when, and its tools.
  // Built from the element's data, so server-rendered and streamed messages look alike.
  function decorate(el) {
    const foot = el.querySelector(".message-foot");
    if (!foot) return;
    foot.replaceChildren();
    const id = Number(el.dataset.id);
    const siblings = (el.dataset.siblings || String(id)).split(",").filter(Boolean).map(Number);
    const index = siblings.indexOf(id);
    if (siblings.length > 1 && index >= 0) {
      const nav = document.createElement("nav");
      nav.className = "alternatives";
      nav.setAttribute("aria-label", "Alternatives");
      const prev = button("‹", "alternative-prev", "Previous alternative");
      const next = button("›", "alternative-next", "Next alternative");
      prev.disabled = index === 0;
      next.disabled = index === siblings.length - 1;
      prev.dataset.target = String(siblings[index - 1] ?? "");
      next.dataset.target = String(siblings[index + 1] ?? "");
      const where = document.createElement("span");
      where.className = "counter";
      where.textContent = `${index + 1} / ${siblings.length}`;
      nav.append(prev, where, next);
      foot.append(nav);
    }
    const meta = document.createElement("span");
    meta.className = "meta";
    const parts = [];
    if (el.classList.contains("assistant") && el.dataset.model && el.dataset.greeting === undefined) {
      parts.push(document.createTextNode(el.dataset.model));
    }
    if (el.dataset.completionTokens) {
      const tokens = document.createElement("span");
      const count = Number(el.dataset.completionTokens);
      tokens.textContent = `${count} ${count === 1 ? "token" : "tokens"}`;
      if (el.dataset.promptTokens) tokens.title = `${el.dataset.promptTokens} prompt tokens, ${el.dataset.completionTokens} reply tokens`;
      parts.push(tokens);
    }
    if (el.dataset.created) {
      const time = document.createElement("time");
      time.dateTime = el.dataset.created;
      time.textContent = when(el.dataset.created);
      parts.push(time);
    }
    if (el.dataset.edited) parts.push(document.createTextNode("edited"));
    parts.forEach((part, i) => {
      if (i) meta.append(" · ");
      meta.append(part);
    });
    foot.append(meta);

    const tools = document.createElement("div");
    tools.className = "tools";
    tools.append(button("Copy", "copy-message"));
    if (el.dataset.status !== "streaming") {
      tools.append(button("Edit", "edit-message tree-action"));
      if (el.classList.contains("assistant")) {
        if (el.dataset.parent) tools.append(button("Regenerate", "regenerate tree-action leaf-only"));
        if (el.dataset.content) tools.append(button("Continue", "continue tree-action leaf-only"));
      }
      tools.append(button("Delete", "delete-message tree-action"));
    }
    foot.append(tools);
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
    const el = messageElement(message, false);
    if (!el) return;
    closeEditor(el);
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
    decorate(el);
    queueRender();
    updateControls();
  }

  // What this tab has shown of a reply, so far as it knows.
  function shownText(id) {
    const state = live.get(id);
    if (state) return state.raw;
    const el = byId(id);
    return el ? el.dataset.content || "" : "";
  }

  function showFinal(message) {
    const shown = shownText(message.id);
    const wasNear = nearBottom();
    const el = messageElement(message, false);
    live.delete(message.id);
    if (!el) {
      updateControls();
      return;
    }
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
    decorate(el);
    scrollIfFollowing(wasNear);
    updateControls();
  }

  function upsert(message, create) {
    const el = messageElement(message, create);
    if (!el) return null;
    if (message.status === "streaming") {
      if (!live.has(message.id)) startLive(message);
    } else {
      showFinal(message);
    }
    return el;
  }

  function updateControls() {
    const streaming = live.size > 0;
    root.dataset.busy = String(streaming);
    stopButton.hidden = !streaming;
    const messages = shownMessages();
    const last = messages[messages.length - 1];
    const retryable = ["failed", "truncated", "interrupted", "stopped"];
    retryButton.hidden =
      streaming ||
      !last ||
      !(
        (last.classList.contains("assistant") && last.dataset.parent && retryable.includes(last.dataset.status)) ||
        last.classList.contains("user")
      );
    for (const b of transcript.querySelectorAll(".alternatives button")) {
      b.disabled = streaming || !b.dataset.target;
    }
  }

  // --- the server's frames ---------------------------------------------------------------
  // Make the transcript the server's branch: `path` in order, each message from `messages`
  // when sent, else as shown already.
  function applySync(frame) {
    const payloads = new Map(frame.messages.map((m) => [m.id, m]));
    if (!frame.path) {
      frame.messages.forEach((m) => place(upsert(m, true), m.parent));
      return;
    }
    const ordered = [];
    for (const id of frame.path) {
      const payload = payloads.get(id);
      const el = payload ? messageElement(payload, true) : byId(id);
      if (!el) continue;
      el.dataset.siblings = (frame.alternatives?.[String(id)] || [id]).join(",");
      ordered.push(el);
    }
    const keep = new Set(ordered);
    for (const el of Array.from(shownMessages())) if (!keep.has(el)) drop(el);
    let prev = null;
    for (const el of ordered) {
      const expected = prev ? prev.nextElementSibling : transcript.firstElementChild;
      if (expected !== el) {
        if (prev) prev.after(el);
        else transcript.prepend(el);
      }
      prev = el;
    }
    frame.messages.forEach((m) => upsert(m, false));
    ordered.forEach(decorate);
    updateControls();
  }

  const handlers = {
    "conversation.sync": applySync,
    "message.created": (frame) => {
      const message = frame.message;
      const el = messageElement(message, true);
      if (!place(el, message.parent)) return;
      upsert(message, false);
      if (message.role === "user") {
        if (unconfirmed !== null && message.content === unconfirmed) {
          // Stored: only now does the box let go of the text (unless it was edited since).
          if (input.value === unconfirmed) input.value = "";
          unconfirmed = null;
        }
        if (pendingEdit !== null && message.content === pendingEdit.content) pendingEdit = null;
        transcript.scrollTop = transcript.scrollHeight;
      }
    },
    "message.continued": (frame) => startLive(frame.message),
    "message.updated": (frame) => {
      if (pendingEdit !== null && pendingEdit.id === frame.message.id) pendingEdit = null;
      const el = byId(frame.message.id);
      if (el) closeEditor(el);
      showFinal(frame.message);
    },
    "path.changed": (frame) => {
      const parentEl = frame.parent === null ? null : byId(frame.parent);
      if (frame.parent !== null && !parentEl) {
        resync();
        return;
      }
      // Messages this tab shows already keep their elements (and where the member was
      // reading, and a search hit's mark); the rest below the parent go.
      const keep = new Set(frame.messages.map((m) => m.id));
      let node = parentEl ? parentEl.nextElementSibling : transcript.firstElementChild;
      while (node) {
        const next = node.nextElementSibling;
        if (node.matches(".message") && !keep.has(Number(node.dataset.id))) drop(node);
        node = next;
      }
      let prev = parentEl;
      for (const message of frame.messages) {
        const el = messageElement(message, true);
        if ((prev ? prev.nextElementSibling : transcript.firstElementChild) !== el) {
          if (prev) prev.after(el);
          else transcript.prepend(el);
        }
        upsert(message, false);
        prev = el;
      }
      updateControls();
    },
    "conversation.updated": (frame) => showConversation(frame.conversation),
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
      // A refused send or edit stored nothing; its text is still in its box.
      unconfirmed = null;
      pendingEdit = null;
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
      if (root.dataset.showBranch) {
        // Opened at a search hit on a branch the conversation did not show: the page shows it
        // already; make it the shown one, as the alternative arrows do, so the other tabs
        // follow and the next message goes on it. Once: a reconnect takes what the server has.
        send({ type: "branch.switch", id: Number(root.dataset.showBranch) });
        delete root.dataset.showBranch;
      }
      resync();
    });
    socket.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      const handler = handlers[frame.type];
      if (handler) handler(frame);
    });
    socket.addEventListener("close", (event) => {
      root.dataset.connected = "false";
      unconfirmed = null;
      pendingEdit = null;
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

  // --- editing a message in place ----------------------------------------------------------
  function closeEditor(el) {
    const editor = el.querySelector(".editor");
    if (!editor) return;
    editor.remove();
    el.querySelector(".body").hidden = false;
    el.querySelector(".message-foot").hidden = false;
    el.classList.remove("editing");
  }

  function openEditor(el) {
    if (el.querySelector(".editor")) {
      el.querySelector(".editor textarea").focus();
      return;
    }
    const isUser = el.classList.contains("user");
    const editor = document.createElement("form");
    editor.className = "editor";
    const box = document.createElement("textarea");
    box.setAttribute("aria-label", "Edit message");
    box.value = el.dataset.content || el.querySelector(".body").innerText;
    box.rows = Math.min(12, Math.max(2, box.value.split("\n").length + 1));
    box.maxLength = Number(root.dataset.maxChars) || 100000;
    const actions = document.createElement("div");
    actions.className = "editor-actions";
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "primary";
    save.textContent = isUser ? "Save and send" : "Save";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    actions.append(cancel, save);
    editor.append(box, actions);
    el.querySelector(".body").hidden = true;
    el.querySelector(".message-foot").hidden = true;
    el.classList.add("editing");
    el.querySelector(".notice").before(editor);
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);

    cancel.addEventListener("click", () => closeEditor(el));
    editor.addEventListener("submit", (event) => {
      event.preventDefault();
      const content = box.value;
      if (!content.trim() || pendingEdit !== null) return;
      const id = Number(el.dataset.id);
      if (send({ type: "message.edit", id, content })) {
        pendingEdit = { id, content };
        showStatus("");
      }
    });
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeEditor(el);
        input.focus();
      } else if (event.key === "Enter" && !event.isComposing && (isUser ? !event.shiftKey : event.ctrlKey || event.metaKey)) {
        // As in the message box: Enter sends a question (Shift+Enter: a new line); a reply's
        // text has paragraphs, so it is saved with Ctrl+Enter.
        event.preventDefault();
        editor.requestSubmit();
      }
    });
  }

  // --- the conversation's title ---------------------------------------------------------------
  const heading = document.getElementById("conversation-title");
  const titleButton = heading.querySelector(".title-button");

  // A conversation's new title, here and wherever this page lists it.
  function showConversation(conversation) {
    for (const link of document.querySelectorAll(`[data-conversation-link="${Number(conversation.id)}"] .title`)) {
      link.textContent = conversation.title;
    }
    if (String(conversation.id) !== conversationId) return;
    titleButton.textContent = conversation.title;
    document.title = `${conversation.title} · Serika Web`;
    const editor = heading.querySelector("input");
    if (editor && editor.dataset.sent === editor.value) closeRename();
  }

  function closeRename() {
    const box = heading.querySelector("input");
    titleButton.hidden = false;
    if (!box || box.dataset.closing) return;
    box.dataset.closing = "true"; // removing it blurs it, which would close it again
    box.remove();
  }

  // Click the title to rename it: Enter saves, Esc (or leaving the box) cancels.
  titleButton.addEventListener("click", () => {
    const box = document.createElement("input");
    box.type = "text";
    box.className = "title-input";
    box.maxLength = 200;
    box.value = titleButton.textContent;
    box.setAttribute("aria-label", "Conversation title");
    titleButton.hidden = true;
    heading.append(box);
    box.focus();
    box.select();
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        const title = box.value.trim();
        if (title === titleButton.textContent) closeRename();
        else if (title && send({ type: "conversation.rename", title })) box.dataset.sent = box.value;
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeRename();
        titleButton.focus();
      }
    });
    box.addEventListener("blur", () => {
      if (!box.dataset.sent) closeRename();
    });
  });

  // --- the member's actions ----------------------------------------------------------------
  let deleting = null;
  transcript.addEventListener("click", (event) => {
    const b = event.target.closest("button");
    if (!b || !transcript.contains(b)) return;
    const el = b.closest(".message");
    if (!el) return;
    const id = Number(el.dataset.id);
    if (b.matches(".alternative-prev, .alternative-next")) {
      if (b.dataset.target) send({ type: "branch.switch", id: Number(b.dataset.target) });
    } else if (b.matches(".edit-message")) {
      openEditor(el);
    } else if (b.matches(".regenerate")) {
      send({ type: "message.regenerate", id });
    } else if (b.matches(".continue")) {
      send({ type: "message.continue", id });
    } else if (b.matches(".delete-message")) {
      deleting = id;
      deleteDialog.returnValue = "";
      deleteDialog.showModal();
    }
  });
  deleteDialog.addEventListener("close", () => {
    if (deleteDialog.returnValue === "delete" && deleting !== null) {
      send({ type: "message.delete", id: deleting });
    }
    deleting = null;
  });

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
    } else if (event.key === "ArrowUp" && input.value === "" && live.size === 0) {
      // As in ChatGPT and Open WebUI: Up in an empty box edits the last question.
      const mine = transcript.querySelectorAll(".message.user");
      if (mine.length) {
        event.preventDefault();
        openEditor(mine[mine.length - 1]);
      }
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && live.size > 0 && !deleteDialog.open) {
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
  shownMessages().forEach(decorate);
  updateControls();
  transcript.scrollTop = transcript.scrollHeight;
  connect();
})();
