"""Plain SQL for the few reads on hot paths, written with the models' own table and column names.

Used where the ORM's cost was measured to matter (issue 11, bench/): the browser socket's reads
(dashboard/selectors.py) and the alert-rule lookup every feed worker makes per stored batch
(dashboard/alert_rules.py). `sql("SELECT {item__instrument} FROM {item} WHERE ...")` fills in quoted
names, so a renamed table or column still matches.
"""

from __future__ import annotations

import functools

__all__ = ["sql"]


@functools.cache
def _names() -> dict[str, str]:
    """{"watchlist": its quoted table, "watchlist__team": its quoted table.column, ...}, once per process."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from .models import AlertRule, Membership, Watchlist, WatchlistItem

    quote = connection.ops.quote_name
    names = {}
    for key, model in {"user": get_user_model(), "membership": Membership, "watchlist": Watchlist,
                       "item": WatchlistItem, "rule": AlertRule}.items():
        names[key] = quote(model._meta.db_table)
        names[f"{key}__pk"] = f"{names[key]}.{quote(model._meta.pk.column)}"
        for field in model._meta.concrete_fields:
            names[f"{key}__{field.name}"] = f"{names[key]}.{quote(field.column)}"
    return names


def sql(text: str, **placeholders: int) -> str:
    """`text` with {model} and {model__field} as quoted names, and {name} as `n` parameter markers
    for each `name=n` (an IN list of n ids)."""
    return text.format_map({**_names(), **{k: ", ".join(["%s"] * n) for k, n in placeholders.items()}})
