// The card editors' buttons (characters/editors.py renders the fields, which all work without
// this script): tag chips with an "Add tag" box; Add / Remove greeting; the lorebook's Add entry,
// Remove entry, Move up and Move down. Rows are renumbered after every change, so what is posted
// stays `<name>-0-…`, `<name>-1-…` in page order. Loaded by the member's form and the admin
// (widget Media, in the page head), so it waits for the document.
"use strict";

(() => {
  // Controls that need this script start hidden; the plain fallbacks (a "Remove" box) go.
  const reveal = (root) => {
    root.querySelectorAll("[data-js-only]").forEach((element) => { element.hidden = false; });
    root.querySelectorAll("[data-nojs]").forEach((element) => element.remove());
  };

  const hiddenInput = (name, value) => {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    return input;
  };

  const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  // --- Tags -------------------------------------------------------------------------------------
  const setUpTags = (root) => {
    const line = root.querySelector("[data-tag-line]");
    if (!line) return;
    const name = line.name;
    const chips = document.createElement("ul");
    chips.className = "tag-chips";
    const box = document.createElement("input");
    box.type = "text";
    box.id = line.id;
    box.className = "tag-box";
    box.placeholder = "Add tag";
    box.setAttribute("aria-label", "Add tag");
    box.setAttribute("enterkeyhint", "enter");
    const described = line.getAttribute("aria-describedby");
    if (described) box.setAttribute("aria-describedby", described);

    const values = () => [...chips.querySelectorAll("input")].map((input) => input.value);
    const has = (tag) => values().some((value) => value.toLowerCase() === tag.toLowerCase());
    const addChip = (tag) => {
      const item = document.createElement("li");
      item.className = "tag-chip";
      const text = document.createElement("span");
      text.textContent = tag;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chip-remove";
      remove.textContent = "×";
      remove.title = `Remove tag ${tag}`;
      remove.setAttribute("aria-label", `Remove tag ${tag}`);
      remove.addEventListener("click", () => {
        const next = item.nextElementSibling || item.previousElementSibling;
        item.remove();
        (next ? next.querySelector("button") : box).focus();
      });
      item.append(text, hiddenInput(name, tag), remove);
      chips.append(item);
    };
    // Adds what was typed before the last comma (or all of it), skipping tags already there.
    const addTyped = (keepLast) => {
      const parts = box.value.split(",");
      const rest = keepLast ? parts.pop() : "";
      parts.map((part) => part.trim()).filter((tag) => tag && !has(tag)).forEach(addChip);
      box.value = rest.trimStart();
    };

    JSON.parse(root.dataset.tags || "[]").forEach(addChip);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault(); // adds the tag instead of submitting the form
        addTyped(false);
      }
    });
    box.addEventListener("input", () => {
      if (box.value.includes(",")) addTyped(true);
    });
    line.form?.addEventListener("submit", () => addTyped(false));
    line.replaceWith(chips, box, hiddenInput(`${name}-chips`, "1"));
  };

  // --- Greetings --------------------------------------------------------------------------------
  const setUpGreetings = (root) => {
    const list = root.querySelector("[data-greeting-list]");
    const template = root.querySelector("[data-greeting-template]");
    const add = root.querySelector("[data-add-greeting]");
    const baseId = root.dataset.baseId;
    const rows = () => [...list.querySelectorAll(":scope > [data-greeting-row]")];
    const renumber = () => rows().forEach((row, index) => {
      const id = `${baseId}-${index}`;
      const label = row.querySelector("label");
      row.querySelector("[data-number]").textContent = String(index + 1);
      row.querySelector("textarea").id = id;
      label.htmlFor = id;
      label.id = `${id}-label`;
      row.setAttribute("aria-labelledby", label.id);
    });

    // The empty greeting offered for adding without the script: "Add greeting" does that now.
    rows().filter((row) => row.hasAttribute("data-blank") && !row.querySelector("textarea").value.trim())
      .forEach((row) => row.remove());
    list.addEventListener("click", (event) => {
      const button = event.target.closest("[data-remove-greeting]");
      if (!button) return;
      const row = button.closest("[data-greeting-row]");
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      renumber();
      (next ? next.querySelector("textarea") : add).focus();
    });
    add.addEventListener("click", () => {
      const row = template.content.firstElementChild.cloneNode(true);
      reveal(row);
      list.append(row);
      renumber();
      row.querySelector("textarea").focus();
    });
    reveal(root);
    renumber();
  };

  // --- The lorebook -----------------------------------------------------------------------------
  const setUpLorebook = (root) => {
    const list = root.querySelector("[data-lore-entries]");
    const template = root.querySelector("[data-lore-template]");
    const add = root.querySelector("[data-lore-add]");
    const empty = root.querySelector("[data-lore-empty]");
    // `<name>-3-` in names and `<id>-3-` in ids, labels and descriptions; templates say __prefix__.
    const numbered = [root.dataset.name, root.dataset.baseId].map(
      (start) => [new RegExp(`^${escapeRegExp(start)}-(\\d+|__prefix__)(?=-|$)`), start]
    );
    const entries = () => [...list.querySelectorAll(":scope > [data-lore-entry]")];

    const renumber = () => {
      const all = entries();
      all.forEach((entry, index) => {
        const number = entry.querySelector("[data-entry-number]");
        if (number) number.textContent = String(index + 1);
        const numberedParts = [entry, ...entry.querySelectorAll("[name], [id], label[for], [aria-describedby]")];
        numberedParts.forEach((element) => {
          for (const attribute of ["name", "id", "for", "aria-describedby"]) {
            const value = element.getAttribute(attribute);
            if (value === null) continue;
            const renamed = numbered.reduce(
              (text, [pattern, start]) => text.replace(pattern, `${start}-${index}`), value
            );
            if (renamed !== value) element.setAttribute(attribute, renamed);
          }
        });
        entry.querySelector("[data-lore-up]").disabled = index === 0;
        entry.querySelector("[data-lore-down]").disabled = index === all.length - 1;
      });
      empty.hidden = all.length > 0;
    };
    const showDepth = (entry) => {
      const position = entry.querySelector("[data-lore-position]");
      entry.querySelector("[data-lore-depth]").hidden = position.value !== "at_depth";
    };
    // After a move, focus stays on the button used, or its twin once that one is disabled.
    const focusMove = (entry, used, twin) => {
      const button = entry.querySelector(used);
      (button.disabled ? entry.querySelector(twin) : button).focus();
    };

    // The blank entry offered for adding without the script: "Add entry" does that now.
    entries().filter((entry) => entry.hasAttribute("data-blank")).forEach((entry) => entry.remove());
    entries().forEach(showDepth);
    list.addEventListener("change", (event) => {
      if (event.target.matches("[data-lore-position]")) showDepth(event.target.closest("[data-lore-entry]"));
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      const entry = button?.closest("[data-lore-entry]");
      if (!entry) return;
      if (button.matches("[data-lore-remove]")) {
        const next = entry.nextElementSibling || entry.previousElementSibling;
        entry.remove();
        renumber();
        (next ? next.querySelector("[data-lore-remove]") : add).focus();
      } else if (button.matches("[data-lore-up]") && entry.previousElementSibling) {
        list.insertBefore(entry, entry.previousElementSibling);
        renumber();
        focusMove(entry, "[data-lore-up]", "[data-lore-down]");
      } else if (button.matches("[data-lore-down]") && entry.nextElementSibling) {
        list.insertBefore(entry.nextElementSibling, entry);
        renumber();
        focusMove(entry, "[data-lore-down]", "[data-lore-up]");
      }
    });
    add.addEventListener("click", () => {
      const entry = template.content.firstElementChild.cloneNode(true);
      reveal(entry);
      list.append(entry);
      showDepth(entry);
      renumber();
      entry.querySelector("[data-lore-keys]").focus();
    });
    reveal(root);
    renumber();
  };

  const start = () => {
    document.querySelectorAll("[data-tag-editor]").forEach(setUpTags);
    document.querySelectorAll("[data-greetings-editor]").forEach(setUpGreetings);
    document.querySelectorAll("[data-lorebook-editor]").forEach(setUpLorebook);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
