// The chat page's "Chat settings" panel: opens and closes, and saves without leaving the page
// (the form also works without this script: a plain POST and a redirect back).
"use strict";

(() => {
  const toggle = document.getElementById("settings-toggle");
  const form = document.getElementById("chat-settings");
  if (!toggle || !form) return;
  const status = document.getElementById("settings-status");
  const current = document.getElementById("current-model");

  const setOpen = (open) => {
    form.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) form.querySelector("select, input:not([type=hidden])").focus();
  };
  toggle.addEventListener("click", () => setOpen(form.hidden));
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      setOpen(false);
      toggle.focus();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "Saving…";
    let response;
    try {
      response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch {
      status.textContent = "Not saved: the server could not be reached.";
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const errors = Object.entries(body.errors || {}).map(
        ([field, messages]) => `${field.replace("_", " ")}: ${messages.join(" ")}`,
      );
      status.textContent = `Not saved. ${errors.join(" ") || "Try again."}`;
      return;
    }
    current.textContent = body.model;
    status.textContent = "Saved";
  });
})();
