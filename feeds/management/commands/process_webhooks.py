"""`manage.py process_webhooks`: process stored webhook deliveries again (those that failed, or
were stored but never processed because the process stopped in between)."""

from django.core.management.base import BaseCommand

from feeds.models import DeliveryState, WebhookDelivery
from feeds.services import webhook_delivery_process


class Command(BaseCommand):
    help = "Retry stored webhook deliveries in state 'failed' or 'stored'."

    def handle(self, *args, **options) -> None:
        pending = WebhookDelivery.objects.filter(state__in=[DeliveryState.FAILED, DeliveryState.STORED]).order_by("id")
        for delivery in pending:
            webhook_delivery_process(delivery=delivery)
            self.stdout.write(f"{delivery.provider} event {delivery.event_id}: {delivery.state}")
