from __future__ import annotations

from django.http import HttpRequest

from .models import Preferences


def preferences(request: HttpRequest) -> dict:
    """The viewer's display and notification settings (defaults until they save their own)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"prefs": Preferences()}
    return {"prefs": Preferences.objects.filter(user=user).first() or Preferences(user=user)}
