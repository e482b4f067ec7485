"""System checks for what the pages need at run time.

The instrument page loads lightweight-charts from our own static files, which `npm ci` puts in
node_modules (package.json, package-lock.json). Without it Django only warns (staticfiles.W004),
`collectstatic` goes on, and with hashed static files the page then answers 500 ("Missing staticfiles
manifest entry"). An error here stops `collectstatic` and `check --deploy` with the fix instead.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.staticfiles)
def static_sources_present(app_configs=None, **kwargs) -> list[Error]:
    errors = []
    for entry in settings.STATICFILES_DIRS:
        prefix, folder = entry if isinstance(entry, tuple) else ("", entry)
        if not Path(folder).is_dir():
            errors.append(Error(
                f"The static folder {folder} is missing{f' (served as {prefix}/)' if prefix else ''}.",
                hint="Run `npm ci --omit=dev` in the project folder (README → Production), then collectstatic.",
                id="dashboard.E001",
            ))
    return errors
