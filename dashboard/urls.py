from django.urls import path, re_path

from . import views

urlpatterns = [
    path("", views.board, name="board"),
    path("api/board/", views.board_snapshot, name="board-snapshot"),
    path("instrument/<int:instrument_id>/", views.instrument_page, name="instrument"),
    path("api/instrument/<int:instrument_id>/", views.instrument_data, name="instrument-detail"),
    path("api/instrument/<int:instrument_id>/history/", views.instrument_history, name="instrument-history"),
    path("health/", views.health_page, name="health"),
    path("alerts/", views.inbox_page, name="inbox"),
    path("settings/", views.settings_page, name="settings"),
    path("rules/", views.rules_page, name="rules"),
    path("api/alerts/", views.inbox_data, name="inbox-data"),
    path("api/alerts/ack/", views.alert_ack, name="alert-ack"),
    path("api/instruments/", views.instruments_search, name="instrument-search"),
    path("api/watchlists/<int:watchlist_id>/items/", views.watchlist_items, name="watchlist-items"),
    path("api/watchlists/<int:watchlist_id>/items/<int:instrument_id>/", views.watchlist_items, name="watchlist-item"),
    path("api/health/", views.health_data, name="health-data"),
    path("api/destinations/", views.destinations_api, name="destinations"),
    re_path(r"^api/destinations/(?P<destination_id>[0-9]+)/(?P<action>delete|test|rotate)/$", views.destination_action, name="destination-action"),
]
