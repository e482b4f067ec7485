"""ASGI entry point: HTTP goes to Django, WebSockets through the origin check to their consumer.

The one WebSocket consumer (dashboard.consumers.StreamConsumer) authenticates each socket itself,
from the session cookie, in one database trip (the session and the user). channels'
AuthMiddlewareStack is not used: it cost a trip of its own per socket before the consumer's, and kept a session object, a user instance and three copies of
the scope alive for every open socket (issue 11; measured with bench/fanout.py).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.urls.resolvers import RoutePattern  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from feeds import metrics  # noqa: E402
from feeds.logging import redact_daphne_access_log, set_process_role  # noqa: E402
from project.gctune import tune_gc  # noqa: E402



class ExactPathRouter:
    """channels' URLRouter for plain path() routes (no parameters), matched exactly, without what
    URLRouter keeps for as long as each socket is open: a copy of the scope with `path_remaining`
    and `url_route`, and its own suspended coroutine (0.7 KiB of the 30 an idle socket may cost,
    issue 11, measured with bench/fanout.py). It returns the route's coroutine rather than awaiting it, so it
    adds no frame. An unknown path raises ValueError, as URLRouter does (Daphne then closes)."""

    def __init__(self, patterns) -> None:
        self.routes = {}
        for pattern in patterns:
            if not isinstance(pattern.pattern, RoutePattern) or pattern.pattern.converters:
                raise ImproperlyConfigured(f"{pattern.pattern}: only parameterless path() routes; "
                                           "routes with parameters need channels' URLRouter")
            self.routes["/" + str(pattern.pattern)] = pattern.callback

    def __call__(self, scope, receive, send):
        path, root_path = scope["path"], scope.get("root_path", "")
        if root_path:
            if not path.startswith(root_path):
                raise ValueError(f"No route found for path {path!r}.")
            path = path[len(root_path):]
        application = self.routes.get(path)
        if application is None:
            raise ValueError(f"No route found for path {path!r}.")
        return application(scope, receive, send)


set_process_role("server")
redact_daphne_access_log()  # its access lines carry webhook path tokens
if settings.METRICS_PORT is not None:
    # Its own port, on loopback by default: never the public Daphne port, never seen by users.
    # Once per process, at import (a taken port fails the start: give each server its own).
    metrics.serve(settings.METRICS_PORT, bind=settings.METRICS_BIND)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(ExactPathRouter(websocket_urlpatterns)),
    }
)
tune_gc()  # last: everything imported at start-up is frozen out of the collector's way
