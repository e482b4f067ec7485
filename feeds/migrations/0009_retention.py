"""Retention (feeds/retention.py): the record of its runs, and the indexes its deletes need.

Alerts (many have no instrument) and webhook deliveries are deleted by (provider, time); the other
kinds are found through indexes that already exist (feeds/retention.py says which). On PostgreSQL
the indexes are built CONCURRENTLY, as in 0007: a plain CREATE INDEX would hold off the writers of
these tables for as long as the build takes. SQLite builds them in place.
"""

from django.db import migrations, models

from feeds.migrations._operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("feeds", "0008_feed_lease"),
    ]

    operations = [
        migrations.CreateModel(
            name="RetentionRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("started_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField()),
                ("origin", models.CharField(help_text="command, or worker:<provider>.", max_length=64)),
                ("provider", models.CharField(blank=True, help_text="Whose rows; blank: everyone's.", max_length=32)),
                ("ok", models.BooleanField(default=True)),
                ("summary", models.JSONField(default=dict,
                                             help_text="Per step: cutoff, rows deleted and written, batches.")),
            ],
            options={"ordering": ["-started_at"], "verbose_name_plural": "retention: policy and runs"},
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="alert",
            index=models.Index(fields=["provider", "triggered_at"], name="alert_provider_triggered"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="webhookdelivery",
            index=models.Index(fields=["provider", "received_at"], name="webhook_delivery_received"),
        ),
    ]
