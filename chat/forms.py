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
