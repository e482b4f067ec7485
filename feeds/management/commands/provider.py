"""Configure provider accounts without the admin.

    manage.py provider set stocknews --endpoint wss://dev.stocknews.live/ws --token T --enable
    manage.py provider list

Secrets are never printed: `list` shows "set, ends 1234" like the admin. Prefer passing a
secret through an environment variable (`--token "$STOCKNEWS_TOKEN"`) to keep it out of
shell history.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from feeds.logging import redact
from feeds.models import SECRET_FIELDS, Provider, ProviderAccount
from feeds.services import provider_account_set


class Command(BaseCommand):
    help = "Set or list provider accounts (endpoint, credentials, enabled)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        set_ = sub.add_parser("set", help="create or update an account")
        set_.add_argument("name", choices=[p.value for p in Provider if p != Provider.RULES])
        set_.add_argument("--endpoint")
        set_.add_argument("--token")
        set_.add_argument("--api-key", dest="api_key")
        set_.add_argument("--username")
        set_.add_argument("--password")
        set_.add_argument("--secret")
        toggle = set_.add_mutually_exclusive_group()
        toggle.add_argument("--enable", dest="enabled", action="store_true", default=None)
        toggle.add_argument("--disable", dest="enabled", action="store_false")
        sub.add_parser("list", help="show accounts with secrets masked")

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            return self._list()
        if (options["username"] is None) != (options["password"] is None) and not ProviderAccount.objects.filter(
            provider=options["name"]
        ).exists():
            raise CommandError("--username and --password go together")
        try:
            account = provider_account_set(
                provider=options["name"],
                endpoint=options["endpoint"],
                enabled=options["enabled"],
                username=options["username"],
                **{field: options[field] for field in SECRET_FIELDS},
            )
        except (ValueError, ValidationError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{account.provider}: saved ({'enabled' if account.enabled else 'disabled'})")

    def _list(self) -> None:
        accounts = ProviderAccount.objects.order_by("provider")
        if not accounts:
            self.stdout.write("no provider accounts")
        for account in accounts:
            secrets = ", ".join(f"{field}: {account.masked(field)}" for field in SECRET_FIELDS)
            user = f"username: {account.username or 'not set'}"
            state = "enabled" if account.enabled else "disabled"
            self.stdout.write(f"{account.provider:<14} {state:<8} {redact(account.endpoint)}  {user}; {secrets}")
