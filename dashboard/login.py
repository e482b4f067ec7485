"""Login throttling: slowed, then locked (policy in project/settings.py, next to AXES_*).

django-axes does the locking (per account and per address, shared by every server process
through the database, with its admin to unlock). It has no "slowed" stage, so the login view
adds one from axes' own records: after a few failures in a row the next try must wait a growing
number of seconds, and a try made sooner is refused before any password is checked (so it is not
counted either). Waiting is enforced by refusing, never by sleeping in a request.
"""

from __future__ import annotations

import math
from datetime import datetime

from axes.helpers import get_client_ip_address, get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.views import LoginView
from django.db.models import Max, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

__all__ = ["login_delay_seconds", "login_wait_seconds", "ThrottledLoginView"]


def login_delay_seconds(failures: int) -> int:
    """How long after its last failure an account or address must wait: 0, then 2, 4, 8 … capped."""
    after = settings.LOGIN_SLOWDOWN_AFTER_FAILURES
    if failures < after:
        return 0
    return min(2 ** (failures - after + 1), settings.LOGIN_SLOWDOWN_MAX_SECONDS)


def login_wait_seconds(*, username: str, ip_address: str | None, now: datetime | None = None) -> int:
    """Seconds this account, or this address, must still wait before its next try (0: go ahead)."""
    now = now or timezone.now()
    recent = AccessAttempt.objects.all()
    cool_off = get_cool_off()
    if cool_off:  # axes forgets failures older than the cool-off; so do we
        recent = recent.filter(attempt_time__gte=now - cool_off)
    wait = 0.0
    for key in (Q(username=username) if username else None, Q(ip_address=ip_address) if ip_address else None):
        if key is None:
            continue
        totals = recent.filter(key).aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        if totals["failures"]:
            remaining = login_delay_seconds(totals["failures"]) - (now - totals["last"]).total_seconds()
            wait = max(wait, remaining)
    return math.ceil(wait) if wait > 0 else 0


class ThrottledLoginView(LoginView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        username = request.POST.get("username", "")[:150]
        wait = login_wait_seconds(username=username, ip_address=get_client_ip_address(request))
        if wait:
            # Not authenticated, not counted: an unbound form (a bound one would authenticate as soon as
            # the template asks for its errors) comes back with the reason and the wait.
            form = self.get_form_class()(request, initial={"username": username})
            return self.render_to_response(self.get_context_data(form=form, throttle_wait=wait), status=429)
        return super().post(request, *args, **kwargs)
