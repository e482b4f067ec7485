"""The team lead's TrendSpottr tool in the admin: alert definitions, previews, recent alerts,
analytics charts and our webhook. Every provider call goes through dashboard.trendspottr; a
provider error is shown with its code and message and leaves the local record as it was."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from feeds.groups import team_audience
from feeds.models import Alert, WebhookConfig
from feeds.providers.trendspottr.client import TrendSpottrAPIError, TrendSpottrError

from . import trendspottr as services
from .models import LevelFilter, TrendAlertDefinition, TrendAlertState


def describe(exc: Exception) -> str:
    """Words for the admin: the provider's code and message, or why it could not be reached."""
    if isinstance(exc, TrendSpottrError):
        return f"TrendSpottr answered {exc.error_code}: {exc.error_msg}"
    if isinstance(exc, TrendSpottrAPIError):
        return f"TrendSpottr could not be reached or answered badly: {exc}"
    return str(exc)


PROVIDER_ERRORS = (TrendSpottrAPIError, services.WebhookNotConfigured, ValueError)


class TrendAlertForm(forms.ModelForm):
    class Meta:
        model = TrendAlertDefinition
        fields = ["team", "query_string", "level_filter"]

    def clean(self):
        cleaned = super().clean()
        if self.errors or self.instance.pk:
            return cleaned
        try:  # the provider first: the local record exists only if TrendSpottr said OK
            self.created = services.trend_alert_create(
                team=cleaned["team"], query_string=cleaned["query_string"], level_filter=cleaned["level_filter"])
        except PROVIDER_ERRORS as exc:
            raise ValidationError(describe(exc)) from exc
        return cleaned


def _bulk(label: str, call: Callable[[TrendAlertDefinition], None]):
    def action(modeladmin, request, queryset) -> None:
        for alert in queryset:
            try:
                call(alert)
            except PROVIDER_ERRORS as exc:
                modeladmin.message_user(request, f"{alert}: {describe(exc)}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"{alert}: {label}.", messages.SUCCESS)
    action.short_description = label[0].upper() + label[1:]
    action.__name__ = "action_" + "".join(c if c.isalnum() else "_" for c in label)
    return action


@admin.register(TrendAlertDefinition)
class TrendAlertAdmin(admin.ModelAdmin):
    form = TrendAlertForm
    list_display = ["query_string", "team", "level_filter", "state", "last_sent_time", "remote_alert_id", "links"]
    list_filter = ["team", "state", "level_filter"]
    change_list_template = "admin/trendspottr/change_list.html"
    actions = [
        _bulk("paused", lambda a: services.trend_alert_set_state(alert=a, state=TrendAlertState.PAUSED)),
        _bulk("activated", lambda a: services.trend_alert_set_state(alert=a, state=TrendAlertState.ACTIVE)),
        *[_bulk(f"level set to {level.label}", lambda a, lv=level.value: services.trend_alert_set_level(
            alert=a, level_filter=lv)) for level in LevelFilter],
        _bulk("synced from TrendSpottr", lambda a: services.trend_alert_sync(alert=a)),
        _bulk("deleted at TrendSpottr and here", lambda a: services.trend_alert_delete(alert=a)),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Changes go through the actions, which ask TrendSpottr first.
        return [f.name for f in TrendAlertDefinition._meta.fields] if obj else ["remote_alert_id"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a local-only delete would orphan the remote alert: use the action

    def get_actions(self, request):
        return {name: action for name, action in super().get_actions(request).items() if name != "delete_selected"}

    def save_model(self, request, obj, form, change) -> None:
        if not change:  # trend_alert_create stored it already, after TrendSpottr said OK
            obj.pk, obj.remote_alert_id = form.created.pk, form.created.remote_alert_id

    @admin.display(description="")
    def links(self, obj: TrendAlertDefinition) -> str:
        return format_html('<a href="{}">recent alerts</a>', reverse("admin:trendspottr-recent", args=[obj.pk]))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("preview/", view(self.preview_view), name="trendspottr-preview"),
            path("<int:pk>/recent/", view(self.recent_view), name="trendspottr-recent"),
            path("analytics/<str:notification_id>/", view(self.analytics_view), name="trendspottr-analytics"),
            path("webhook/", view(require_http_methods(["GET", "POST"])(self.webhook_view)), name="trendspottr-webhook"),
            *super().get_urls(),
        ]

    def _page(self, request: HttpRequest, template: str, **context) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, **context}
        return TemplateResponse(request, f"admin/trendspottr/{template}", context)

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        query, alerts, error = request.GET.get("q", "").strip(), None, ""
        if query:
            try:
                alerts = services.trend_alert_preview(query_string=query)
            except PROVIDER_ERRORS as exc:
                error = describe(exc)
        return self._page(request, "preview.html", title="Preview a TrendSpottr query", query=query,
                          alerts=alerts, error=error)

    def recent_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = TrendAlertDefinition.objects.select_related("team").get(pk=pk)
        alerts, error = None, ""
        try:
            alerts = services.trend_alert_recent(alert=alert)
        except PROVIDER_ERRORS as exc:
            error = describe(exc)
        delivered = _delivered_for(alert)
        return self._page(request, "recent.html", title=f"Recent alerts: {alert}", alert=alert, alerts=alerts,
                          error=error, delivered=delivered)

    def analytics_view(self, request: HttpRequest, notification_id: str) -> HttpResponse:
        data, error = None, ""
        try:
            data = services.trend_alert_analytics(notification_id=notification_id)
        except PROVIDER_ERRORS as exc:
            error = describe(exc)
        return self._page(request, "analytics.html", title=f"Alert {notification_id}: tweet count",
                          data=data, error=error, chart=tweet_chart(data["volume"]) if data else None)

    def webhook_view(self, request: HttpRequest) -> HttpResponse:
        config, remote = WebhookConfig.objects.filter(provider="trendspottr").first(), None
        if request.method == "POST":
            op = request.POST.get("op")
            try:
                if op == "register":
                    services.webhook_register(public_base_url=request.POST.get("base_url") or request.build_absolute_uri("/"))
                    self.message_user(request, "Webhook registered with TrendSpottr (secret rotated).", messages.SUCCESS)
                elif op == "delete":
                    services.webhook_unregister()
                    self.message_user(request, "Webhook deleted at TrendSpottr and here.", messages.SUCCESS)
            except PROVIDER_ERRORS as exc:
                self.message_user(request, describe(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:trendspottr-webhook"))
        if request.GET.get("check"):
            try:
                remote = services.webhook_remote()
            except PROVIDER_ERRORS as exc:
                self.message_user(request, describe(exc), messages.ERROR)
        return self._page(request, "webhook.html", title="TrendSpottr webhook", config=config, remote=remote,
                          base_url=request.build_absolute_uri("/"))


def _delivered_for(alert: TrendAlertDefinition):
    """The TrendSpottr alerts delivered to this alert's team (each links to its analytics)."""
    return Alert.objects.filter(provider="trendspottr", audience=team_audience(alert.team_id)).order_by("-triggered_at")[:20]


def tweet_chart(volume: list[dict], *, width: int = 640, height: int = 220) -> dict:
    """An SVG polyline of the cumulative tweet count (no JavaScript, no chart library needed)."""
    points = [(int(p["timestamp"]), int(p["count"])) for p in volume if "timestamp" in p and "count" in p]
    if not points:
        return {"width": width, "height": height, "points": "", "max": 0}
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1)
    top = max(c for _, c in points) or 1
    coords = " ".join(f"{(t - t0) / (t1 - t0) * (width - 20) + 10:.1f},{height - 10 - c / top * (height - 20):.1f}"
                      for t, c in points)
    return {"width": width, "height": height, "points": coords, "max": top, "count": len(points)}
