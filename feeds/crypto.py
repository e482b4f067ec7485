"""Credentials encrypted at rest: Fernet tokens (AES-128-CBC with HMAC-SHA256, `cryptography`).

The keys are `settings.FIELD_ENCRYPTION_KEYS` (environment `FIELD_ENCRYPTION_KEYS`, comma-separated):
the first encrypts, every one decrypts (`MultiFernet`). Rotation: put a new key first, restart,
run `manage.py provider rotate-keys` (everything is re-encrypted with the new key), then drop the
old key from the list once no backup you may restore still needs it.

Why these choices:
- A key of its own, not derived from SECRET_KEY: SECRET_KEY travels further (every web process,
  session signing, often a CI variable) and its leak must not also open a database dump; the two
  rotate on different schedules (rotating SECRET_KEY logs everyone out, this one does not).
- Fernet is randomised and authenticated: equal secrets never give equal ciphertexts and a value
  edited in the database fails to decrypt instead of reaching a provider. The price: an encrypted
  column cannot be searched or made unique (`filter(token=...)` never matches), and nothing needs it.
- An empty value stays empty: "not set" is no secret (`provider list` shows it anyway) and keeps
  blank fields blank.
- A value that decrypts with no key is an error, never an empty credential: a worker must not
  connect with a blank token because a key went missing.
- Every value that passes through the cipher in a process is also masked in that process's logs
  (feeds.logging.register_secret): the web process learns the secrets the admin saves or reads,
  a worker those of its account, without anyone remembering to register them.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from .logging import register_secret


class UndecryptableSecret(Exception):
    """A stored value decrypts with none of FIELD_ENCRYPTION_KEYS (the message never holds it)."""


@lru_cache(maxsize=4)
def _ciphers(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    # Cached per key list, so a changed setting (tests, override_settings) takes effect at once.
    fernets = [Fernet(key) for key in keys]
    return MultiFernet(fernets), fernets[0]


def _keys() -> tuple[str, ...]:
    keys = tuple(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:  # project/settings.py refuses to start without one; a settings override could still empty it
        raise UndecryptableSecret("FIELD_ENCRYPTION_KEYS is empty")
    return keys


def encrypt(plaintext: str) -> str:
    """A Fernet token (ASCII) for `plaintext`, under the first key; "" stays ""."""
    if not plaintext:
        return plaintext
    register_secret(plaintext)
    return _ciphers(_keys())[0].encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str, *, what: str = "a stored secret") -> str:
    """The plaintext of a token made by `encrypt` under any configured key; "" stays ""."""
    if not token:
        return token
    try:
        plaintext = _ciphers(_keys())[0].decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise UndecryptableSecret(
            f"{what} does not decrypt with any key in FIELD_ENCRYPTION_KEYS: was the key that encrypted it "
            "removed before `manage.py provider rotate-keys` ran, or is this database from another deployment?"
        ) from exc
    register_secret(plaintext)
    return plaintext


def uses_primary_key(token: str) -> bool:
    """Whether a stored token already decrypts with the first key alone (empty: nothing to rotate)."""
    if not token:
        return True
    try:
        _ciphers(_keys())[1].decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


class EncryptedTextField(models.TextField):
    """Text held as plaintext in Python and as a Fernet token in the database column.

    Not searchable (a lookup value is encrypted afresh, so it never equals the stored token) and
    never unique. Declared like a TextField; the column is `text` on every backend.
    """

    description = "Text encrypted at rest (Fernet, FIELD_ENCRYPTION_KEYS)"

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return decrypt(value, what=f"{self.model._meta.label}.{self.name}")

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None:
            return value
        return encrypt(value)


def encrypted_fields(model: type[models.Model]) -> list[str]:
    return [field.name for field in model._meta.concrete_fields if isinstance(field, EncryptedTextField)]
