from django.urls import path

from . import views

urlpatterns = [
    path("", views.board, name="board"),
    path("api/board/", views.board_snapshot, name="board-snapshot"),
    path("healthz", views.healthz, name="healthz"),
    path("instrument/<int:instrument_id>/", views.instrument_page, name="instrument"),
    path("api/instrument/<int:instrument_id>/", views.instrument_data, name="instrument-detail"),
    path("health/", views.health_page, name="health"),
    path("api/health/", views.health_data, name="health-data"),
]
