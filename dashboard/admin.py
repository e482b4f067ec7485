from django.contrib import admin
from django.db import models

from django.utils import timezone

from . import admin_trendspottr  # noqa: F401  (registers the TrendSpottr admin)
from .delivery import alert_deliveries_resend
from .models import (
    AlertDelivery, AlertDestination, AlertRule, Membership, OutboxState, Team, Watchlist, WatchlistItem,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class WatchlistItemInline(admin.TabularInline):
    model = WatchlistItem
    extra = 1
    autocomplete_fields = ["instrument"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Watchlist)
class WatchlistAdmin(admin.ModelAdmin):
    list_display = ["name", "team"]
    list_filter = ["team"]
    inlines = [WatchlistItemInline]


# Removing a member (here, in the Team page's inline, or by the bulk delete action), changing a role,
# and deactivating a user or setting a password on the auth admin's pages all reach that user's open
# sockets within a second: the rows' signals call the access services (dashboard/receivers.py).
@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role"]
    list_filter = ["team", "role"]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["__str__", "team", "owner", "watchlist", "instrument", "provider", "cooldown_seconds", "enabled"]
    list_filter = ["team", "kind", "enabled"]


# --- Alert destinations and their outbox (dashboard/delivery.py) ----------------------------------------

@admin.register(AlertDestination)
class AlertDestinationAdmin(admin.ModelAdmin):
    # The target and the secrets are never rendered (not even as form values): people manage them on
    # the settings page, where a secret is shown once, when made. Here: masked, filters, enable.
    list_display = ["name", "kind", "target_hint", "team", "user", "enabled", "disabled_reason"]
    list_filter = ["kind", "enabled"]
    fields = ["name", "kind", "target_hint", "team", "user", "knowsis_min_credibility", "trendspottr_min_level",
              "rules", "enabled", "disabled_reason", "previous_secret_until", "created_at"]
    readonly_fields = ["kind", "target_hint", "team", "user", "previous_secret_until", "created_at"]
    filter_horizontal = ["rules"]

    def has_add_permission(self, request) -> bool:
        return False  # made through dashboard.destinations (validation, a secret shown once)


@admin.action(description="Re-send (back to pending, another day of retries)", permissions=["change"])
def resend(modeladmin, request, queryset):
    resent, skipped = alert_deliveries_resend(ids=list(queryset.values_list("pk", flat=True)), now=timezone.now())
    modeladmin.message_user(request, f"{resent} re-sent" + (
        f"; {skipped} skipped: their destination is disabled (enable it first)" if skipped else "") + ".")


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "alert", "destination", "kind", "state", "attempts", "next_attempt_at", "last_status",
                    "last_error", "delivered_at"]
    list_filter = ["state", "kind", "destination__kind"]
    list_select_related = ["alert", "destination"]
    search_fields = ["alert__external_id", "destination__name"]
    actions = [resend]
    readonly_fields = [f.name for f in AlertDelivery._meta.fields]  # state changes only through the action

    def has_add_permission(self, request) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).order_by(
            # Dead letters first: they are what a person has to look at.
            models.Case(models.When(state=OutboxState.DEAD, then=0), default=1), "-next_attempt_at")
