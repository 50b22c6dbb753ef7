// Chat view niceties that need no server state: copying messages and code blocks, follow-scroll.
"use strict";

// Delegated, so code blocks and messages streamed in or re-rendered after page load work too.
// "Copy" on a message copies its raw text (markdown as written), "Copy code" a block's code.
function textToCopy(button) {
  if (button.matches(".copy-code")) return button.closest(".codeblock")?.querySelector("pre")?.innerText;
  const message = button.closest(".message");
  if (!message) return undefined;
  return message.dataset.content || message.querySelector(".body").innerText;
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy-code, button.copy-message");
  if (!button) return;
  const text = textToCopy(button);
  if (text === undefined) return;
  try {
    await navigator.clipboard.writeText(text);
    button.dataset.copied = "true";
    button.setAttribute("aria-description", "Copied");
  } catch {
    // Clipboard access needs a secure context and permission; say so rather than fail silently.
    button.setAttribute("aria-description", "Copy failed");
    button.dataset.copied = "false";
  }
});

// Follow-scroll: while the member has not scrolled up, whatever grows at the end of the
// transcript (a streaming reply, a retry's result) stays in view; once they scroll up, the view
// stays where they put it and "Jump to latest" brings them back (and following resumes).
(() => {
  const transcript = document.getElementById("transcript");
  const jump = document.getElementById("jump-to-latest");
  if (!transcript || !jump) return;
  const NEAR = 80; // px from the bottom that still count as "at the end"
  let following = true;
  let userScrolledAt = -Infinity; // when the member last wheeled, touched, pressed or clicked here

  const atEnd = () => transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < NEAR;
  const toEnd = () => {
    transcript.scrollTop = transcript.scrollHeight;
  };
  const setFollowing = (value) => {
    following = value;
    jump.hidden = following;
  };

  // Only the member's own scrolling (wheel, touch, keys, the scrollbar) stops the following;
  // the page's scrolling to the end never does.
  for (const type of ["wheel", "touchmove", "keydown", "pointerdown"]) {
    transcript.addEventListener(type, () => {
      userScrolledAt = performance.now();
    }, { passive: true });
  }
  transcript.addEventListener("scroll", () => {
    if (atEnd()) setFollowing(true);
    else if (performance.now() - userScrolledAt < 1000) setFollowing(false);
  }, { passive: true });

  new MutationObserver(() => {
    if (following) toEnd();
    else jump.hidden = false;
  }).observe(transcript, { childList: true, subtree: true, characterData: true });

  jump.addEventListener("click", () => {
    setFollowing(true);
    toEnd();
    document.getElementById("message")?.focus({ preventScroll: true });
  });
  // Opened at a search hit: that message, marked, in the middle of the view (and focused, so
  // the keyboard and a screen reader start there), not the end.
  const found = transcript.querySelector(".message[data-found]");
  if (found) {
    found.scrollIntoView({ block: "center" });
    found.focus({ preventScroll: true });
    setFollowing(atEnd());
  } else {
    toEnd();
  }
})();

// "Delete chat" asks first.
(() => {
  const form = document.getElementById("delete-chat");
  const dialog = document.getElementById("confirm-delete-chat");
  if (!form || !dialog) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    form.closest("details")?.removeAttribute("open"); // the "More" menu closes behind it
    dialog.returnValue = "";
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "delete") form.submit();
  });
})();
