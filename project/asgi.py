"""ASGI entry point: HTTP goes to Django, WebSockets through origin and session checks."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from feeds import metrics  # noqa: E402
from feeds.logging import redact_daphne_access_log, set_process_role  # noqa: E402
from feeds.sinks import DaphneTransportScope  # noqa: E402
from project.gctune import tune_gc  # noqa: E402

set_process_role("server")
redact_daphne_access_log()  # its access lines carry webhook path tokens
if settings.METRICS_PORT is not None:
    # Its own port, on loopback by default: never the public Daphne port, never seen by users.
    # Once per process, at import (a taken port fails the start: give each server its own).
    metrics.serve(settings.METRICS_PORT, bind=settings.METRICS_BIND)

application = DaphneTransportScope(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
))
tune_gc()  # last: everything imported at start-up is frozen out of the collector's way
