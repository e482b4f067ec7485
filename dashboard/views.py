"""Thin views: authenticate, call a selector, render."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

import csv
import logging
import re
from datetime import datetime
from datetime import timezone as dt_timezone

from django.http import Http404

from django.contrib.admin.views.decorators import staff_member_required

from feeds.history import HISTORY_INTERVALS, history_csv_rows
from feeds.selectors import feed_status_list

import json
from zoneinfo import available_timezones

from django import forms
from django.contrib import messages
from django.db.models import Q
from django.shortcuts import redirect

from .models import AlertRule, Preferences, RuleKind, Watchlist

from django.core.exceptions import PermissionDenied
from django.views.decorators.http import require_http_methods

from feeds.models import Instrument

from .selectors import (
    alert_get_for_user,
    alert_inbox_for_user,
    board_snapshot_for_user,
    instrument_detail_for_user,
    instrument_history_for_user,
    instrument_get_for_user,
    instrument_search,
    watchlist_get_for_user,
)
from .selectors import instrument_ids_visible_to_user, team_ids_for_user
from .services import (
    alert_acknowledge,
    alert_rule_create,
    alert_rule_delete,
    watchlist_add_instrument,
    watchlist_remove_instrument,
)

from django.core.exceptions import ValidationError

from .destinations import (
    alert_destination_create,
    alert_destination_delete,
    alert_destination_get_for_manager,
    alert_destination_secret_rotate,
    alert_destination_test_send,
    alert_destinations_for_user,
    destination_to_json,
)
from .models import AlertDestination, Membership, Role, Team

log = logging.getLogger(__name__)


def _instrument_or_404(request: HttpRequest, instrument_id: int):
    instrument = instrument_get_for_user(user=request.user, instrument_id=instrument_id)
    if instrument is None:  # not on any of the user's watchlists (or no such instrument): same answer
        log.warning("user %s refused instrument %s", request.user.pk, instrument_id)
        raise Http404("No such instrument on your watchlists.")
    return instrument


@require_GET
@login_required
def board(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/board.html",
        {"snapshot_url": reverse("board-snapshot"), "ws_path": "/ws/stream/"},
    )


@require_GET
@never_cache
def board_snapshot(request: HttpRequest) -> JsonResponse:
    # An API endpoint answers 401 instead of redirecting to the login page.
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    return JsonResponse(board_snapshot_for_user(user=request.user))


@require_GET
@login_required
def instrument_page(request: HttpRequest, instrument_id: int) -> HttpResponse:
    instrument = _instrument_or_404(request, instrument_id)
    return render(request, "dashboard/instrument.html", {
        "instrument": instrument, "ws_path": "/ws/stream/",
        "detail_url": reverse("instrument-detail", args=[instrument.pk]),
        "history_url": reverse("instrument-history", args=[instrument.pk]),
    })


@require_GET
@never_cache
def instrument_data(request: HttpRequest, instrument_id: int) -> JsonResponse:
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    detail = instrument_detail_for_user(user=request.user, instrument_id=instrument_id)
    if detail is None:  # not on any of the user's watchlists (or no such instrument): same answer
        log.warning("user %s refused instrument %s", request.user.pk, instrument_id)
        raise Http404("No such instrument on your watchlists.")
    return JsonResponse(detail)


def _history_params(request: HttpRequest) -> tuple[str, datetime, int] | None:
    interval = request.GET.get("interval", "1m")
    try:
        before = datetime.fromisoformat(request.GET["before"]) if request.GET.get("before") else timezone.now()
        limit = int(request.GET.get("limit", 300))
    except ValueError:
        return None
    if interval not in HISTORY_INTERVALS or limit < 1:
        return None
    return interval, (before if before.tzinfo else before.replace(tzinfo=dt_timezone.utc)), limit


@require_GET
@never_cache
def instrument_history(request: HttpRequest, instrument_id: int) -> HttpResponse:
    """?interval=1m|5m|1h|1d&before=<iso>&limit=N[&format=csv]: a page of stored history, older
    pages by `next_before`. CSV: the same window, as a download."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    params = _history_params(request)
    if params is None:
        return JsonResponse({"error": "interval must be one of 1m, 5m, 1h, 1d; before an ISO time; limit a "
                                      "positive integer"}, status=400)
    interval, before, limit = params
    page = instrument_history_for_user(user=request.user, instrument_id=instrument_id, interval=interval,
                                       before=before, limit=limit)
    if page is None:
        log.warning("user %s refused instrument %s history", request.user.pk, instrument_id)
        raise Http404("No such instrument on your watchlists.")
    if request.GET.get("format") != "csv":
        return JsonResponse(page)
    # The symbol is ours, but a filename is a header: only safe characters reach it.
    symbol = re.sub(r"[^A-Za-z0-9._-]", "_", page["instrument"]["symbol"]) or "instrument"
    stamp = page["before"].replace("-", "").replace(":", "")[:13]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{symbol}-{interval}-{stamp}.csv"'
    csv.writer(response).writerows(history_csv_rows(page))
    return response


@require_GET
@staff_member_required
def health_page(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/health.html", {"ws_path": "/ws/stream/", "data_url": reverse("health-data")})


@require_GET
@never_cache
def health_data(request: HttpRequest) -> JsonResponse:
    if not (request.user.is_authenticated and request.user.is_staff):
        return JsonResponse({"error": "staff only"}, status=403)
    now = timezone.now()
    # server_time lets the page age rows (stale_after) on the server's clock, not the browser's.
    return JsonResponse({"feeds": feed_status_list(now=now), "server_time": now.isoformat().replace("+00:00", "Z")})


@require_GET
def instruments_search(request: HttpRequest) -> JsonResponse:
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    return JsonResponse({"instruments": instrument_search(query=request.GET.get("q", ""))})


@require_http_methods(["POST", "DELETE"])
def watchlist_items(request: HttpRequest, watchlist_id: int, instrument_id: int | None = None) -> JsonResponse:
    """POST {"instrument_id": n} adds; DELETE .../<instrument_id>/ removes. CSRF-protected."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    watchlist = watchlist_get_for_user(user=request.user, watchlist_id=watchlist_id)
    if watchlist is None:
        log.warning("user %s refused watchlist %s", request.user.pk, watchlist_id)
        return JsonResponse({"error": "not_found"}, status=404)
    if request.method == "POST":
        try:
            instrument_id = int(json.loads(request.body or b"{}").get("instrument_id"))
        except (ValueError, TypeError, AttributeError):
            return JsonResponse({"error": "instrument_id required"}, status=400)
    instrument = Instrument.objects.filter(pk=instrument_id).first()
    if instrument is None:
        return JsonResponse({"error": "no such instrument"}, status=404)
    try:
        if request.method == "POST":
            watchlist_add_instrument(watchlist=watchlist, instrument=instrument, by=request.user)
        else:
            watchlist_remove_instrument(watchlist=watchlist, instrument=instrument, by=request.user)
    except PermissionDenied as exc:
        log.warning("user %s: watchlist %s change refused: %s", request.user.pk, watchlist_id, exc)
        return JsonResponse({"error": str(exc)}, status=403)
    return JsonResponse({"ok": True})


@require_GET
@login_required
def inbox_page(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/inbox.html", {"ws_path": "/ws/stream/", "data_url": reverse("inbox-data")})


@require_GET
@never_cache
def inbox_data(request: HttpRequest) -> JsonResponse:
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    return JsonResponse(alert_inbox_for_user(user=request.user))


@require_http_methods(["POST"])
def alert_ack(request: HttpRequest) -> JsonResponse:
    """POST {"provider": ..., "external_id": ...}: the user has dealt with this alert. CSRF-protected."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    try:
        body = json.loads(request.body or b"{}")
        provider, external_id = str(body["provider"]), str(body["external_id"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "provider and external_id required"}, status=400)
    alert = alert_get_for_user(user=request.user, provider=provider, external_id=external_id)
    if alert is None:
        log.warning("user %s refused alert %s:%s", request.user.pk, provider, external_id)
        return JsonResponse({"error": "not_found"}, status=404)
    alert_acknowledge(user=request.user, alert=alert)
    return JsonResponse({"ok": True})


class PreferencesForm(forms.ModelForm):
    class Meta:
        model = Preferences
        fields = ["time_zone", "theme", "notify_knowsis_credible", "notify_trendspottr_level", "notify_sound"]

    def clean_time_zone(self) -> str:
        value = self.cleaned_data["time_zone"].strip()
        if value and value not in available_timezones():
            raise forms.ValidationError("Not a time zone name (e.g. Europe/London, America/New_York).")
        return value


@require_http_methods(["GET", "POST"])
@login_required
def settings_page(request: HttpRequest) -> HttpResponse:
    prefs = Preferences.objects.filter(user=request.user).first() or Preferences(user=request.user)
    form = PreferencesForm(request.POST or None, instance=prefs)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved.")
        return redirect("settings")
    return render(request, "dashboard/settings.html", {"form": form})


class AlertRuleForm(forms.Form):
    """Scope is one of the user's watchlists, or one instrument on them."""

    scope = forms.ChoiceField(help_text="A whole watchlist, or one instrument.")
    kind = forms.ChoiceField(choices=RuleKind.choices)
    threshold = forms.FloatField()
    provider = forms.ChoiceField(required=False, choices=[("", "any"), ("knowsis", "Knowsis"),
                                                          ("stocktwits", "StockTwits"), ("stocknews", "StockNews")])
    cooldown_seconds = forms.IntegerField(min_value=0, initial=300)
    personal = forms.BooleanField(required=False, initial=True, help_text="Only for me (else the whole team).")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.watchlists = {f"w{w.pk}": w for w in Watchlist.objects.filter(team_id__in=team_ids_for_user(user=user))
                           .select_related("team")}  # str(watchlist) names its team
        self.instruments = {f"i{i.pk}": i for i in Instrument.objects.filter(pk__in=instrument_ids_visible_to_user(user=user))}
        self.fields["scope"].choices = [(k, f"Watchlist: {w}") for k, w in self.watchlists.items()] + [
            (k, f"Instrument: {i.symbol}") for k, i in self.instruments.items()]


@require_http_methods(["GET", "POST"])
@login_required
def rules_page(request: HttpRequest) -> HttpResponse:
    form = AlertRuleForm(request.POST or None, user=request.user)
    if request.method == "POST" and request.POST.get("delete"):
        rule = AlertRule.objects.filter(pk=request.POST["delete"], team_id__in=team_ids_for_user(user=request.user)).first()
        try:
            if rule is None:
                raise PermissionDenied("No such rule.")
            alert_rule_delete(by=request.user, rule=rule)
            messages.success(request, "Rule deleted.")
        except PermissionDenied as exc:
            messages.error(request, str(exc))
        return redirect("rules")
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        scope = form.watchlists.get(data["scope"]) or form.instruments.get(data["scope"])
        try:
            alert_rule_create(by=request.user, scope=scope, personal=data["personal"], kind=data["kind"],
                              threshold=data["threshold"], provider=data["provider"],
                              cooldown_seconds=data["cooldown_seconds"])
            messages.success(request, "Rule saved.")
            return redirect("rules")
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
    rules = (AlertRule.objects.filter(team_id__in=team_ids_for_user(user=request.user))
             .filter(Q(owner__isnull=True) | Q(owner=request.user))
             .select_related("team", "owner", "watchlist__team", "instrument"))
    return render(request, "dashboard/rules.html", {"form": form, "rules": rules})


# --- Alert destinations (the settings page's section; rules in dashboard/destinations.py) ---------------

def _destinations_payload(user) -> dict:
    owned = Membership.objects.filter(user=user, role=Role.OWNER).select_related("team")
    rules = (AlertRule.objects.filter(Q(owner=user) | Q(owner__isnull=True, team_id__in=[m.team_id for m in owned]))
             .select_related("team"))
    return {"destinations": [destination_to_json(d) for d in alert_destinations_for_user(user=user)],
            "teams": [{"id": m.team_id, "name": m.team.name} for m in owned],
            "rules": [{"id": r.pk, "label": f"{r} ({'mine' if r.owner_id else r.team.name})",
                       "team": None if r.owner_id else r.team_id} for r in rules]}


@require_http_methods(["GET", "POST"])
def destinations_api(request: HttpRequest) -> JsonResponse:
    """GET: the destinations this user manages (masked). POST (JSON, CSRF): create one; a webhook's
    secret is in this answer once and never again."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    if request.method == "GET":
        return JsonResponse(_destinations_payload(request.user))
    try:
        body = json.loads(request.body or b"{}")
        team = Team.objects.filter(pk=int(body["team"])).first() if body.get("team") else None
        if body.get("team") and team is None:
            raise PermissionDenied("No such team.")
        made, secret = alert_destination_create(
            by=request.user, team=team, kind=str(body.get("kind", "")), name=str(body.get("name", "")),
            target=str(body.get("target", "")), secret=str(body.get("secret", "")),
            knowsis_min_credibility=str(body.get("knowsis_min_credibility", "")),
            trendspottr_min_level=str(body.get("trendspottr_min_level", "")),
            rule_ids=[int(i) for i in body.get("rules", [])])
    except PermissionDenied as exc:
        return JsonResponse({"error": str(exc)}, status=403)
    except (ValueError, TypeError, ValidationError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else "bad request"
        return JsonResponse({"error": message}, status=400)
    return JsonResponse({"destination": destination_to_json(made), "secret": secret}, status=201)


@require_http_methods(["POST"])
def destination_action(request: HttpRequest, destination_id: int, action: str) -> JsonResponse:
    """POST (CSRF) delete | test | rotate one destination the user manages."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    try:
        destination = alert_destination_get_for_manager(by=request.user, destination_id=destination_id)
        if action == "delete":
            alert_destination_delete(by=request.user, destination=destination)
            return JsonResponse({"ok": True})
        if action == "test":
            return JsonResponse({"result": alert_destination_test_send(by=request.user, destination=destination)})
        return JsonResponse({"secret": alert_destination_secret_rotate(by=request.user, destination=destination)})
    except AlertDestination.DoesNotExist:
        return JsonResponse({"error": "not_found"}, status=404)
    except PermissionDenied as exc:
        return JsonResponse({"error": str(exc)}, status=403)
    except ValidationError as exc:
        return JsonResponse({"error": "; ".join(exc.messages)}, status=400)
