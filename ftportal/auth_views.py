"""Account pages: changing one's password (which also revokes one's API tokens)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.models import User
from django.http import HttpResponse

from .tokens import api_tokens_revoke_for_user


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's view (it keeps this session and ends the others); a token made with the old
    password could be in the wrong hands, so every API token of the user is revoked too."""

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user
        assert isinstance(user, User)
        api_tokens_revoke_for_user(user=user)
        return response
