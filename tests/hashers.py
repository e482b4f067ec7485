"""A password hasher for the test process only: Django's PBKDF2 with 1,000 iterations, not 1,000,000.

Hashing a password costs about 0.4 s of CPU at Django's default, and the suite creates users and
logs in thousands of times. The algorithm name stays `pbkdf2_sha256`, so the production settings
the e2e subprocesses (Daphne, workers) run verify these hashes like any other (the iteration count is
stored in the hash) and nothing about login behaves differently."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000
