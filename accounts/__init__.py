"""Accounts: single sign-on with OpenID Connect (django-allauth) beside the password login."""
