"""The Character Card specification and prompt assembly, in one Django-free home.

`characters/` (the Django app: models, import, export, pages) and `chat/` (the conversation)
both import from here; nothing here imports Django or either app, so the card rules cannot be
written twice or drift apart:

- `cards`: reading card files (PNG, JSON, CHARX, WebP) and writing them (PNG, JSON, CHARX), the
  import point for the app;
- `model`, `values`, `json_card`, `png`, `charx`, `webp`, `images`: what `cards` is built from;
- `macros`: the one `{{char}}`/`{{user}}` expander;
- `lorebook`: lorebook normalisation, V3 decorators, lenient value readers, entry placement;
- `prompt`: turning a persona and a chat history into Chat Completions messages.
"""
