"""Alert destinations: who may manage them, and which alerts go where.

A team's destinations are managed by its owners (or an admin), a personal one by its user alone;
the check is here, not in the view, so every caller gets it. Targets and secrets are encrypted
at rest (feeds.crypto) and leave this module only masked (`target_hint`), except a webhook secret
we generate, which is returned once, when made, for the receiver's configuration.

Matching (`alert_destinations_for`) is the one place that decides who hears of an alert:
- a rule's alert goes to the destinations its rule chose (`AlertDestination.rules`);
- a Knowsis alert (for an instrument's watchers) to the destinations of the teams watching the
  instrument, and of their members, whose minimum credibility it meets;
- a TrendSpottr alert (for one team) to that team's destinations, and its members', whose
  minimum level it meets.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db.models import Q
from django.utils import timezone

from feeds.models import Alert

from .models import AlertDestination, AlertRule, DestinationKind, Membership, Role, WatchlistItem
from .senders import secret_generate, secret_key_bytes

__all__ = [
    "alert_destination_create", "alert_destination_delete", "alert_destination_secret_rotate",
    "alert_destination_get_for_manager", "alert_destinations_for_user", "alert_destinations_for", "target_mask",
    "destination_to_json", "alert_destination_test_send", "SECRET_ROTATION_OVERLAP",
]

SECRET_ROTATION_OVERLAP = timezone.timedelta(hours=24)  # how long the old secret still signs
KNOWSIS_RANK = {"unknown": 0, "medium": 1, "high": 2}
TREND_RANK = {"Elevated": 0, "High": 1, "Extreme": 2}
_RULE_ALERT_ID = re.compile(r"^rule-(\d+)-")  # dashboard/alert_rules.py names a rule's alerts so
_TEAM_AUDIENCE = re.compile(r"^team-(\d+)$")  # feeds.groups.team_audience


def target_mask(kind: str, target: str) -> str:
    """What may be shown of a target: an address's domain, a URL's host. Slack and Teams webhook
    URLs carry their credential in the path, so no path is ever shown."""
    if kind == DestinationKind.EMAIL:
        local, _, domain = target.partition("@")
        return f"{local[:1]}…@{domain}"
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}/…"


def _validate_target(kind: str, target: str) -> None:
    if kind == DestinationKind.EMAIL:
        validate_email(target)
        return
    parts = urlsplit(target)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationError("The destination needs an http(s) URL.")
    if kind == DestinationKind.SLACK and parts.scheme == "https" and not (parts.hostname == "slack.com"
                                                                       or parts.hostname.endswith(".slack.com")):
        raise ValidationError("A Slack incoming webhook URL is on hooks.slack.com.")


def _team_owner(*, by, team_id: int) -> bool:
    return (Membership.objects.filter(user=by, team_id=team_id, role=Role.OWNER).exists()
            or by.has_perm("dashboard.change_alertdestination"))


def _require_manager(*, by, destination: AlertDestination) -> None:
    if destination.team_id is not None:
        if not _team_owner(by=by, team_id=destination.team_id):
            raise PermissionDenied("Only the team's owners manage its alert destinations.")
    elif destination.user_id != by.pk:
        raise PermissionDenied("A personal destination is managed by its user only.")


def alert_destination_create(*, by, kind: str, name: str, target: str, team=None, secret: str = "",
                             knowsis_min_credibility: str = "", trendspottr_min_level: str = "",
                             rule_ids: list[int] | tuple[int, ...] = ()) -> tuple[AlertDestination, str]:
    """Create a team (owners only) or personal destination. Returns it and, for a webhook, the
    secret to give the receiver (the one passed in, or a new one): shown once, never again."""
    target = target.strip()
    if kind not in DestinationKind.values:
        raise ValidationError("Unknown destination kind.")
    _validate_target(kind, target)
    if kind == DestinationKind.WEBHOOK:
        secret = secret.strip() or secret_generate()
        try:
            secret_key_bytes(secret)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
    else:
        secret = ""
    destination = AlertDestination(team=team, user=None if team else by, kind=kind, name=name.strip()[:120] or kind,
                                   target=target, target_hint=target_mask(kind, target), secret=secret,
                                   knowsis_min_credibility=knowsis_min_credibility,
                                   trendspottr_min_level=trendspottr_min_level)
    _require_manager(by=by, destination=destination)
    destination.full_clean(exclude=["target", "secret", "previous_secret", "rules"])
    rules = _rules_allowed(by=by, destination=destination, rule_ids=rule_ids)
    destination.save()
    destination.rules.set(rules)
    return destination, secret


def _rules_allowed(*, by, destination: AlertDestination, rule_ids) -> list[AlertRule]:
    """A team destination serves the team's rules; a personal one the user's own rules."""
    if not rule_ids:
        return []
    scope = (Q(team_id=destination.team_id, owner__isnull=True) if destination.team_id
             else Q(owner_id=by.pk))
    rules = list(AlertRule.objects.filter(scope, pk__in=rule_ids))
    if len(rules) != len(set(rule_ids)):
        raise ValidationError("A destination may only serve its own team's (or your own) rules.")
    return rules


def alert_destination_get_for_manager(*, by, destination_id: int) -> AlertDestination:
    destination = AlertDestination.objects.filter(pk=destination_id).first()
    if destination is None:
        raise AlertDestination.DoesNotExist
    _require_manager(by=by, destination=destination)
    return destination


def alert_destination_delete(*, by, destination: AlertDestination) -> None:
    _require_manager(by=by, destination=destination)
    destination.delete()


def alert_destination_secret_rotate(*, by, destination: AlertDestination, now=None,
                                    overlap=SECRET_ROTATION_OVERLAP) -> str:
    """A new signing secret; the old one keeps signing (both signatures sent) until now + overlap."""
    _require_manager(by=by, destination=destination)
    if destination.kind != DestinationKind.WEBHOOK:
        raise ValidationError("Only webhook destinations are signed.")
    now = now or timezone.now()
    new = secret_generate()
    destination.previous_secret, destination.previous_secret_until = destination.secret, now + overlap
    destination.secret = new
    destination.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
    return new


def destination_signing_secrets(destination: AlertDestination, *, now) -> list[str]:
    keep_old = destination.previous_secret and destination.previous_secret_until and now < destination.previous_secret_until
    return [destination.secret, destination.previous_secret] if keep_old else [destination.secret]


def alert_destinations_for_user(*, user) -> list[AlertDestination]:
    """The destinations this user manages: their own, and those of the teams they own."""
    owned = Membership.objects.filter(user=user, role=Role.OWNER).values_list("team_id", flat=True)
    return list(AlertDestination.objects.filter(Q(user=user) | Q(team_id__in=owned))
                .select_related("team").prefetch_related("rules"))


def destination_to_json(destination: AlertDestination) -> dict:
    """For pages: never the target or a secret."""
    return {"id": destination.pk, "name": destination.name, "kind": destination.kind,
            "kind_label": destination.get_kind_display(), "target": destination.target_hint,
            "team": destination.team.name if destination.team_id else None,
            "knowsis_min_credibility": destination.knowsis_min_credibility,
            "trendspottr_min_level": destination.trendspottr_min_level,
            "rules": [rule.pk for rule in destination.rules.all()],
            "enabled": destination.enabled, "disabled_reason": destination.disabled_reason,
            "rotating_until": destination.previous_secret_until.isoformat()
            if destination.previous_secret and destination.previous_secret_until else None}


# --- Which destinations hear of an alert --------------------------------------------------------

def _members_of(team_ids) -> Q:
    return Q(user__memberships__team_id__in=team_ids, user__is_active=True)


def alert_destinations_for(*, alert: Alert) -> list[AlertDestination]:
    """The enabled destinations this alert goes to (see the module's docstring)."""
    enabled = AlertDestination.objects.filter(enabled=True)
    if alert.provider == "rules":
        match = _RULE_ALERT_ID.match(alert.external_id)
        return list(enabled.filter(rules__pk=int(match.group(1)))) if match else []
    if alert.provider == "knowsis" and alert.instrument_id is not None and not alert.audience:
        rank = KNOWSIS_RANK.get(alert.level, 0)
        allowed = [level for level, r in KNOWSIS_RANK.items() if r <= rank]
        teams = set(WatchlistItem.objects.filter(instrument_id=alert.instrument_id)
                    .values_list("watchlist__team_id", flat=True))
        return list(enabled.filter(Q(team_id__in=teams) | _members_of(teams),
                                   knowsis_min_credibility__in=allowed).distinct())
    if alert.provider == "trendspottr" and alert.level in TREND_RANK:
        rank = TREND_RANK[alert.level]
        allowed = [level for level, r in TREND_RANK.items() if r <= rank]
        match = _TEAM_AUDIENCE.match(alert.audience)
        if match is None:
            return []
        teams = [int(match.group(1))]
        return list(enabled.filter(Q(team_id__in=teams) | _members_of(teams),
                                   trendspottr_min_level__in=allowed).distinct())
    return []


def alert_destination_test_send(*, by, destination: AlertDestination) -> str:
    """Send a test alert now (the manager's button); returns what happened, secret-free. Bounded
    by the senders' 10 s; not through the outbox: the person waits for the answer."""
    import httpx
    from asgiref.sync import async_to_sync

    from .senders import HTTP_TIMEOUT, AlertMessage, message_send, outcome_classify

    _require_manager(by=by, destination=destination)
    now = timezone.now()
    message = AlertMessage(kind="fire", provider="tickerwire", external_id=f"test-{destination.pk}", symbol="TEST",
                           level="", headline="This is a test alert from Tickerwire", description="",
                           url="", triggered_at=now, test=True)

    async def send():
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
            return await message_send(client, kind=destination.kind, target=destination.target,
                                      secrets=destination_signing_secrets(destination, now=now),
                                      msg_id=f"msg_test_{destination.pk}_{int(now.timestamp())}",
                                      message=message, now=now)

    outcome = outcome_classify(async_to_sync(send)())
    return "delivered" if outcome.action == "delivered" else f"failed: {outcome.error}"
