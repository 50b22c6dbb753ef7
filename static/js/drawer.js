// On a phone the conversation list is a drawer: the "Conversations" button opens it, Esc, the
// Close button or a tap outside closes it, and focus goes in and comes back.
"use strict";

(() => {
  const toggle = document.getElementById("conversations-toggle");
  const drawer = document.getElementById("sidebar");
  const close = document.getElementById("conversations-close");
  if (!toggle || !drawer) return;

  const isOpen = () => drawer.classList.contains("open");
  const setOpen = (open) => {
    drawer.classList.toggle("open", open);
    document.body.classList.toggle("drawer-open", open);
    toggle.setAttribute("aria-expanded", String(open));
    if (open) (drawer.querySelector("[aria-current=page]") || drawer.querySelector("a")).focus();
    else toggle.focus();
  };
  toggle.addEventListener("click", () => setOpen(!isOpen()));
  close?.addEventListener("click", () => setOpen(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && isOpen()) setOpen(false);
  });
  document.addEventListener("click", (event) => {
    if (isOpen() && !drawer.contains(event.target) && !toggle.contains(event.target)) {
      setOpen(false);
    }
  });
})();
