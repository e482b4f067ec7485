"""An index for "an instrument's newest bars, whatever the provider or interval" (the board's
sparkline and the instrument page's chart read them; feeds/selectors.py).

On PostgreSQL it is built CONCURRENTLY: the bar table is the largest one, and a plain CREATE INDEX
would hold off the feed workers' writes for as long as the build takes. SQLite (the embedded demo)
has no such option and needs none: it builds it in place.
"""

from django.db import migrations, models

from feeds.migrations._operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("feeds", "0006_encrypt_provider_secrets"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="bar",
            index=models.Index(fields=["instrument", "-start"], name="bar_instrument_newest"),
        ),
    ]
