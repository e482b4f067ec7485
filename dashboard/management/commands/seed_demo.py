"""`manage.py seed_demo`: the demo teams, users and watchlists (idempotent)."""

from django.core.management.base import BaseCommand

from dashboard.services import DEMO_PASSWORD, demo_seed


class Command(BaseCommand):
    help = "Create or refresh the demo data: two teams, their users and watchlists."

    def handle(self, *args, **options) -> None:
        for username, team, role in demo_seed():
            self.stdout.write(f"  {username:<6} / {DEMO_PASSWORD}   {team} ({role})")
