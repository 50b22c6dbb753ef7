"""The forms of the login, sign-up, invitation and password pages: Django's own, with this site's
labels, plus the staff's invitation form."""

from __future__ import annotations

from axes.utils import reset as reset_login_failures
from django import forms
from django.conf import settings
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from accounts import signup


class LoginForm(auth_forms.AuthenticationForm):
    """Django's login form, which also tells a member waiting for approval, who gave the right
    password, that their account is pending (instead of "didn't match")."""

    pending = False

    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            if self._is_pending_with_right_password():
                self.pending = True
                # Django refused the login (the account is inactive), so django-axes counted a
                # failure; a right password resets the count, as a successful login does
                # (AXES_RESET_ON_SUCCESS), or a member checking whether they were approved yet
                # would lock themselves out.
                reset_login_failures(username=self.cleaned_data["username"])
            raise

    def _is_pending_with_right_password(self) -> bool:
        # Never while django-axes has locked the username or address out: the answer would
        # tell a guesser that a password is right. The failed attempt counted all the same.
        if getattr(self.request, "axes_locked_out", False):
            return False
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if not username or not password:
            return False
        user = get_user_model()._default_manager.filter(username=username).first()
        return bool(user and signup.is_pending(user) and user.check_password(password))


class SignupForm(auth_forms.UserCreationForm):
    """Username and password twice, checked by Django's rules (a username not taken in any
    letter case) and AUTH_PASSWORD_VALIDATORS; with e-mail configured, an optional address for
    password resets."""

    password1, password2 = auth_forms.SetPasswordMixin.create_password_fields(
        label1="Password", label2="Password (again)"
    )

    class Meta(auth_forms.UserCreationForm.Meta):
        fields = ("username",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if settings.EMAIL_URL:
            self.fields["email"] = forms.EmailField(
                label="Email (optional)",
                required=False,
                help_text="Only used to send you a link when you forget your password.",
                widget=forms.EmailInput(attrs={"autocomplete": "email"}),
            )

    def save(self, commit: bool = True):
        user = super().save(commit=False)
        user.email = self.cleaned_data.get("email", "")
        if commit:
            user.save()
        return user


class InvitationForm(forms.Form):
    label = forms.CharField(
        label="Who it is for",
        max_length=100,
        required=False,
        help_text="Optional; only staff see it.",
    )
    days = forms.IntegerField(label="Valid for (days)", min_value=1, max_value=365)
    groups = forms.ModelMultipleChoiceField(
        label="Groups",
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The new member joins these groups.",
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["days"].initial = settings.INVITATION_DAYS
        if not user.has_perm("auth.change_user"):
            # A group can carry permissions: staff who may not change accounts in the admin
            # may invite people only into their own groups, so no invitation grants more than
            # its maker has.
            self.fields["groups"].queryset = user.groups.order_by("name")


def _relabel(form: forms.Form, labels: dict[str, str]) -> None:
    for name, label in labels.items():
        form.fields[name].label = label


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _relabel(
            self,
            {
                "old_password": "Current password",
                "new_password1": "New password",
                "new_password2": "New password (again)",
            },
        )


class SetPasswordForm(auth_forms.SetPasswordForm):
    """The last step of a password reset."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _relabel(self, {"new_password1": "New password", "new_password2": "New password (again)"})
