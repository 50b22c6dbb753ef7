// The Members page: "Copy link" copies the new invitation's link and says so beside it.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById(button.dataset.status);
  field.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(field.value);
    copied = true;
  } catch {
    // No clipboard API (a page over plain HTTP on another host): the browser's own copy of
    // the selected text may still work there.
    copied = document.execCommand("copy");
  }
  status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘+C) to copy.";
});
