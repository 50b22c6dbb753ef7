"""The chat page's "Chat settings" form: model, temperature and max tokens of a conversation."""

from __future__ import annotations

from django import forms

# The upstream's own bounds for temperature; max_tokens is bounded by the model, not by us,
# beyond a sanity cap.
MAX_TOKENS_CAP = 1_000_000


class ChatSettingsForm(forms.Form):
    """Validated on the server; empty temperature or max tokens mean "not sent upstream"."""

    model = forms.ChoiceField(label="Model")
    temperature = forms.FloatField(
        label="Temperature", required=False, min_value=0.0, max_value=2.0, step_size=None
    )
    max_tokens = forms.IntegerField(
        label="Max tokens", required=False, min_value=1, max_value=MAX_TOKENS_CAP
    )

    def __init__(self, *args, models: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m, m) for m in models]


class ImportChatsForm(forms.Form):
    """The import page's upload: one chat file, recognised by its content."""

    file = forms.FileField(
        label="Chat file", widget=forms.FileInput(attrs={"accept": ".json,.jsonl"})
    )


class ImportCharactersForm(forms.Form):
    """The import's second step: a character (or none) for each character name of the file
    that matches none the member may see. `names` are those names; `characters` the choices.
    With `may_create`, a new character of the member's own by that name is offered too."""

    NEW = "new"

    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(
        self, *args, names: list[str], characters: list, may_create: bool = False, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.characters = {str(c.pk): c for c in characters}
        existing = [(str(c.pk), c.name) for c in characters]
        for index, name in enumerate(names):
            new = [(self.NEW, f"A new character of mine named {name}")] if may_create else []
            self.fields[f"character_{index}"] = forms.ChoiceField(
                label=f"Character for the chats with {name}",
                choices=[("", "No character"), *new, *existing],
                required=False,
            )

    def chosen(self, index: int):
        """The character chosen for name `index` (None: no character; `NEW`: create one)."""
        value = self.cleaned_data.get(f"character_{index}") or ""
        return self.NEW if value == self.NEW else self.characters.get(value)
