from django.urls import path

from . import views

urlpatterns = [
    path("hooks/trendspottr/<str:token>/", views.trendspottr_webhook, name="trendspottr-webhook"),
]
