"""Thin views: authenticate, call a selector, render."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .selectors import board_snapshot_for_user


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
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")
