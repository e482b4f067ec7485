"""`manage.py process_webhooks`: process every stored webhook delivery still pending, once: those
that failed, and those stored but never processed because their process stopped in between.

The Daphne process that received a delivery processes it after the response and retries its
failures for a day (feeds/webhook_processor.py); this command is the safety net around that, to
run from a timer (e.g. every 5 minutes) and by hand after a fix. It is safe to run beside the
servers: each delivery is claimed, so none is processed twice.
"""

from django.core.management.base import BaseCommand

from feeds.models import WebhookDelivery
from feeds.services import PENDING_DELIVERY_STATES, webhook_delivery_process


class Command(BaseCommand):
    help = "Process stored webhook deliveries in state 'stored' or 'failed' (once each)."

    def handle(self, *args, **options) -> None:
        pending = WebhookDelivery.objects.filter(state__in=PENDING_DELIVERY_STATES).order_by("id")
        for delivery_id, provider, event_id in pending.values_list("id", "provider", "event_id"):
            state = webhook_delivery_process(delivery_id=delivery_id)
            self.stdout.write(f"{provider} event {event_id}: {state or 'skipped (done or being processed elsewhere)'}")
