// Chat view niceties that need no server state: copying rendered code blocks.
"use strict";

// Delegated, so code blocks streamed in or re-rendered after page load work too.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy-code");
  if (!button) return;
  const pre = button.closest(".codeblock")?.querySelector("pre");
  if (!pre) return;
  try {
    await navigator.clipboard.writeText(pre.innerText);
    button.dataset.copied = "true";
    button.setAttribute("aria-description", "Copied");
  } catch {
    // Clipboard access needs a secure context and permission; say so rather than fail silently.
    button.setAttribute("aria-description", "Copy failed");
    button.dataset.copied = "false";
  }
});
