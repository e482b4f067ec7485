from django.contrib import admin

from . import admin_trendspottr  # noqa: F401  (registers the TrendSpottr admin)
from .models import AlertRule, Membership, Team, Watchlist, WatchlistItem


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
