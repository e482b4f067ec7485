"""Channels group names. Every group name in Tickerwire is built here.

Names use instrument ids (not symbols) so they always fit Channels' charset
(ASCII letters, digits, `-_.`) and length limit, whatever a ticker looks like.
"""

from __future__ import annotations


def instrument_group(instrument_id: int) -> str:
    return f"instrument.{int(instrument_id)}"


def user_group(user_id: int) -> str:
    return f"user.{int(user_id)}"
