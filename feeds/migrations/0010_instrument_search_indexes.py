"""Indexes for the board's add box (dashboard.selectors.instrument_search), PostgreSQL only.

A prefix match in any case on the symbol and on the name (`UPPER(x) LIKE 'AP%'` needs
text_pattern_ops whatever the database's collation), and a word-prefix match on the name through a
`simple` full-text vector ("chase" finds JPMorgan Chase & Co.). Built CONCURRENTLY, as in 0007, so
a catalogue of any size is indexed without holding off writers. SQLite (the embedded demo) gets
none of them: it cannot use an index for `UPPER(x) LIKE …` or a word match, and scans its table
(bench/search.py measures both).
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import migrations, models

from feeds.migrations._operations import AddIndexConcurrentlyOnPostgresOnly
from django.db.models.functions import Collate, Upper


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("feeds", "0009_retention"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgresOnly(
            model_name="instrument",
            index=models.Index(Collate(Upper("symbol"), "C"), name="instrument_symbol_prefix"),
        ),
        AddIndexConcurrentlyOnPostgresOnly(
            model_name="instrument",
            index=models.Index(Collate(Upper("name"), "C"), name="instrument_name_prefix"),
        ),
        AddIndexConcurrentlyOnPostgresOnly(
            model_name="instrument",
            index=GinIndex(SearchVector("name", config="simple"), name="instrument_name_words"),
        ),
    ]
