"""Encrypt provider credentials and the webhook path token at rest (feeds/crypto.py).

Three steps, in this order: widen the webhook columns to `text` (a Fernet token outgrows
varchar(64), and a randomised ciphertext cannot stay unique); rewrite every stored value as a
token under the first FIELD_ENCRYPTION_KEYS key; then declare the fields encrypted, which changes
no column. The schema changes come before any row is written, so PostgreSQL never alters a table
with updates pending in the same transaction.

Reversible: going back decrypts every value to plaintext (with the same keys configured).
Processes of the previous release read the ciphertext as the credential: restart the web and feed
units right after `migrate` (a webhook delivery refused meanwhile is retried by TrendSpottr).
"""

from django.db import migrations, models

import feeds.crypto

SECRETS = {"ProviderAccount": ("token", "api_key", "password", "secret"), "WebhookConfig": ("path_token", "public_url")}


def _rewrite(apps, transform) -> None:
    for model_name, fields in SECRETS.items():
        model = apps.get_model("feeds", model_name)
        for pk, *values in model.objects.values_list("pk", *fields):
            model.objects.filter(pk=pk).update(**{field: transform(value) for field, value in zip(fields, values)})


def encrypt_stored(apps, schema_editor) -> None:
    _rewrite(apps, feeds.crypto.encrypt)


def decrypt_stored(apps, schema_editor) -> None:
    _rewrite(apps, feeds.crypto.decrypt)


class Migration(migrations.Migration):

    dependencies = [
        ("feeds", "0005_feed_heartbeat_and_degraded"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhookconfig",
            name="path_token",
            field=models.TextField(),
        ),
        migrations.AlterField(
            model_name="webhookconfig",
            name="public_url",
            field=models.TextField(help_text="Our webhook URL as the provider must call it (holds the path token)."),
        ),
        migrations.RunPython(encrypt_stored, decrypt_stored, elidable=False),
        migrations.AlterField(
            model_name="provideraccount",
            name="api_key",
            field=feeds.crypto.EncryptedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="provideraccount",
            name="password",
            field=feeds.crypto.EncryptedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="provideraccount",
            name="secret",
            field=feeds.crypto.EncryptedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="provideraccount",
            name="token",
            field=feeds.crypto.EncryptedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="webhookconfig",
            name="path_token",
            field=feeds.crypto.EncryptedTextField(),
        ),
        migrations.AlterField(
            model_name="webhookconfig",
            name="public_url",
            field=feeds.crypto.EncryptedTextField(
                help_text="Our webhook URL as the provider must call it (holds the path token)."
            ),
        ),
    ]
