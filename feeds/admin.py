"""Admin for instruments, provider accounts (secrets write-only) and stored market data."""

from __future__ import annotations

import hashlib

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path

from .catalogue import COLUMNS, MAX_BYTES, instrument_catalogue_import
from .models import (
    SECRET_FIELDS,
    Alert,
    Bar,
    FeedStatus,
    Instrument,
    NewsItem,
    ProviderAccount,
    Quote,
    RetentionRun,
    SentimentSample,
    WebhookDelivery,
)
from .retention import retention_policy
from .retention_policy import PolicyError

CATALOGUE_SESSION_KEY = "feeds_catalogue_preview"


class CatalogueUploadForm(forms.Form):
    file = forms.FileField(help_text=f"CSV, UTF-8, at most {MAX_BYTES // (1024 * 1024)} MiB. Header: {','.join(COLUMNS)}")


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "exchange", "insightsentry_code", "knowsis_channel", "stocktwits_symbol", "stocknews_ticker"]
    search_fields = ["symbol", "name"]
    change_list_template = "admin/feeds/instrument/change_list.html"

    def changelist_view(self, request, extra_context=None):
        can_import = self.has_add_permission(request) and self.has_change_permission(request)
        return super().changelist_view(request, extra_context={"can_import": can_import, **(extra_context or {})})

    def get_urls(self):
        return [path("import/", self.admin_site.admin_view(self.import_view), name="feeds_instrument_import"),
                *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload, preview (a dry run: what would be created, updated, or every bad line), then apply.

        The previewed file waits in the session (stored sessions are shared by every server) under
        its digest, so "Apply" imports exactly the file that was previewed, without a second upload;
        the import checks it whole again, as anything may have changed in between."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Import instruments",
                   "columns": COLUMNS}
        form = CatalogueUploadForm()
        if request.method == "POST" and "apply" in request.POST:
            pending = request.session.pop(CATALOGUE_SESSION_KEY, None) or {}
            if not pending or pending.get("digest") != request.POST.get("digest"):
                messages.error(request, "That preview is no longer waiting (applied, or replaced by another): upload the file again.")
            else:
                result = instrument_catalogue_import(data=pending["text"].encode())
                level = messages.ERROR if result.errors else messages.SUCCESS
                messages.add_message(request, level, f"Import of {pending['name']}: {result.summary()}")
                for error in result.errors[:50]:
                    messages.error(request, str(error))
                return redirect("admin:feeds_instrument_changelist")
        elif request.method == "POST":
            form = CatalogueUploadForm(request.POST, request.FILES)
            if form.is_valid():
                upload = form.cleaned_data["file"]
                data = upload.read(MAX_BYTES + 1)
                preview = instrument_catalogue_import(data=data, dry_run=True)
                context.update(preview=preview, file_name=upload.name)
                if preview.created or preview.updated:  # something to apply (and so no errors)
                    digest = hashlib.sha256(data).hexdigest()
                    request.session[CATALOGUE_SESSION_KEY] = {"digest": digest, "name": upload.name,
                                                              "text": data.decode("utf-8-sig")}
                    context["digest"] = digest
        context["form"] = form
        return TemplateResponse(request, "admin/feeds/instrument/import.html", context)


class ProviderAccountForm(forms.ModelForm):
    """Secrets are write-only: the input starts empty, shows whether a value is stored, and
    a blank submission keeps the stored value. A value is never sent back to the browser."""

    clear_secrets = forms.MultipleChoiceField(
        choices=[(f, f) for f in SECRET_FIELDS], required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Tick to erase a stored secret.",
    )

    class Meta:
        model = ProviderAccount
        fields = ["provider", "endpoint", "enabled", "username", *SECRET_FIELDS, "options"]
        widgets = {f: forms.PasswordInput(render_value=False) for f in SECRET_FIELDS}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in SECRET_FIELDS:
            self.fields[field].required = False
            self.fields[field].help_text = f"Currently: {self.instance.masked(field)}. Leave blank to keep."
            self.initial[field] = ""

    def clean(self):
        cleaned = super().clean()
        for field in SECRET_FIELDS:
            if field in cleaned.get("clear_secrets", []):
                cleaned[field] = ""
            elif not cleaned.get(field):
                cleaned[field] = getattr(self.instance, field) if self.instance.pk else ""
        return cleaned


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    form = ProviderAccountForm
    list_display = ["provider", "endpoint", "enabled", "token_state", "api_key_state"]

    @admin.display(description="token")
    def token_state(self, obj: ProviderAccount) -> str:
        return obj.masked("token")

    @admin.display(description="API key")
    def api_key_state(self, obj: ProviderAccount) -> str:
        return obj.masked("api_key")


@admin.register(FeedStatus)
class FeedStatusAdmin(admin.ModelAdmin):
    list_display = ["account", "state", "last_message_at", "messages", "parse_errors", "reconnects", "last_error"]
    readonly_fields = [f.name for f in FeedStatus._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(NewsItem)
class NewsItemAdmin(admin.ModelAdmin):
    list_display = ["published_at", "instrument", "provider", "headline", "sentiment", "confidence"]
    list_filter = ["provider", "category"]
    search_fields = ["headline", "instrument__symbol"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["triggered_at", "instrument", "provider", "level", "headline", "revoked_at"]
    list_filter = ["provider", "level"]


admin.site.register(Quote, list_display=["instrument", "provider", "price", "change_percent", "ts"])
admin.site.register(Bar, list_display=["instrument", "provider", "interval", "start", "close"])
admin.site.register(SentimentSample, list_display=["instrument", "provider", "ts", "score", "volume"])


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Read-only: what providers delivered (secrets already removed) and how processing went."""

    list_display = ["received_at", "provider", "event_id", "state", "error"]
    list_filter = ["provider", "state"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RetentionRun)
class RetentionRunAdmin(admin.ModelAdmin):
    """Read-only, for every staff member: the retention policy in force (from the settings) above
    what the latest runs did. The policy is changed in the environment, not here: it is the same
    for every process, and a timer and the workers must agree on it."""

    list_display = ["started_at", "origin", "scope", "ok", "outcome"]
    list_filter = ["origin", "ok"]
    readonly_fields = [f.name for f in RetentionRun._meta.fields]
    change_list_template = "admin/feeds/retentionrun/change_list.html"

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="rows of")
    def scope(self, run: RetentionRun) -> str:
        return run.provider or "every provider"

    @admin.display(description="outcome")
    def outcome(self, run: RetentionRun) -> str:
        steps = run.summary.get("steps", [])
        deleted, created = sum(s.get("deleted", 0) for s in steps), sum(s.get("created", 0) for s in steps)
        errors = [f"{s['kind']}: {s['error']}" for s in steps if s.get("error")]
        return "; ".join([f"deleted {deleted:,}, wrote {created:,}", *errors])

    def changelist_view(self, request, extra_context=None):
        try:
            policy, problem = retention_policy(), ""
        except PolicyError as exc:  # settings.py refuses to start with one; shown rather than a 500
            policy, problem = None, str(exc)
        context = {"retention_policy": policy.describe() if policy else [], "retention_problem": problem,
                   "retention_batch_rows": policy.batch_rows if policy else None,
                   "retention_worker_interval": policy.worker_interval if policy else None}
        return super().changelist_view(request, extra_context={**context, **(extra_context or {})})
