"""Configure provider accounts without the admin.

    manage.py provider set stocknews --endpoint wss://dev.stocknews.live/ws --token T --enable
    manage.py provider list
    manage.py provider rotate-keys

Secrets are never printed: `list` shows "set, ends 1234" like the admin. Prefer passing a
secret through an environment variable (`--token "$STOCKNEWS_TOKEN"`) to keep it out of
shell history.

`rotate-keys` re-encrypts every stored secret that is not yet under the first key of
FIELD_ENCRYPTION_KEYS (feeds/crypto.py), in one transaction: all or nothing. Run it after putting
a new key first; once it reports done, the keys after the first are needed only by older backups.
"""

from __future__ import annotations

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from feeds.crypto import UndecryptableSecret, encrypted_fields, uses_primary_key
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
        sub.add_parser("rotate-keys", help="re-encrypt every stored secret with the first FIELD_ENCRYPTION_KEYS key")

    def handle(self, *args, action: str, **options) -> None:
        if action == "list":
            return self._list()
        if action == "rotate-keys":
            return self._rotate_keys()
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

    def _rotate_keys(self) -> None:
        stored = rotated = 0
        try:
            with transaction.atomic():
                for model in apps.get_models():
                    fields = encrypted_fields(model)
                    if not fields:
                        continue
                    # The column as stored (a Cast is read as plain text, not decrypted) tells which
                    # key encrypted it; the instance itself holds the plaintext to write back.
                    raw = {f"_stored_{field}": Cast(field, output_field=TextField()) for field in fields}
                    for row in model.objects.select_for_update().annotate(**raw).order_by("pk"):
                        stale = [field for field in fields if not uses_primary_key(getattr(row, f"_stored_{field}"))]
                        if stale:
                            row.save(update_fields=stale)  # get_prep_value encrypts with the first key
                        rotated += len(stale)
                        stored += sum(1 for field in fields if getattr(row, field))
        except UndecryptableSecret as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        self.stdout.write(f"{rotated} of {stored} stored secrets re-encrypted; all are now under the first key of "
                          "FIELD_ENCRYPTION_KEYS (the others are needed only to restore older backups).")
