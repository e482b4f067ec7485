"""Thin signal receivers: who-may-see-what changed, so the user's open sockets re-check (issue 10.1).

Why signals rather than admin hooks calling the services: a membership or user row changes through
more doors than `ModelAdmin.save_model` - the Team page's member inline, the bulk delete action,
cascades (deleting a team or a user), `set_password` + `save()` in a view, the admin's password form
or the shell. A door we forgot would be a silent leak, so the rows themselves say when they change.
Each receiver only notices the change and calls a service (dashboard/services.py), which publishes
after commit. Not seen: `QuerySet.update()`, `bulk_create` and raw SQL (they send no signals); the
services never use them for these rows, and the sockets' ping re-check catches them within 25 s.
Connected in DashboardConfig.ready().
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from .models import Membership
from .services import membership_change_publish, user_access_revoke

# A user's fields that change what their sockets may do: a new password ends their other sessions,
# an inactive account ends all of them, a staff flag gates the feed health group.
USER_ACCESS_FIELDS = ("password", "is_active", "is_staff")


@receiver(pre_save, sender=Membership, dispatch_uid="dashboard.membership_role_before")
def _membership_role_before(sender, instance: Membership, raw: bool = False, **kwargs) -> None:
    if instance.pk and not raw:
        instance._role_before = Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first()


@receiver(post_save, sender=Membership, dispatch_uid="dashboard.membership_saved")
def _membership_saved(sender, instance: Membership, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    if created:
        membership_change_publish(membership=instance, change="added")
    elif getattr(instance, "_role_before", instance.role) != instance.role:
        membership_change_publish(membership=instance, change="role")


@receiver(post_delete, sender=Membership, dispatch_uid="dashboard.membership_deleted")
def _membership_deleted(sender, instance: Membership, **kwargs) -> None:
    membership_change_publish(membership=instance, change="removed")


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="dashboard.user_access_before")
def _user_access_before(sender, instance, raw: bool = False, update_fields=None, **kwargs) -> None:
    # Each login saves `last_login` alone: no read, no revoke for that.
    if not instance.pk or raw or (update_fields is not None and not set(update_fields) & set(USER_ACCESS_FIELDS)):
        return
    instance._access_before = get_user_model()._default_manager.filter(pk=instance.pk).values_list(
        *USER_ACCESS_FIELDS).first()


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="dashboard.user_access_saved")
def _user_access_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    before = getattr(instance, "_access_before", None)
    instance._access_before = None
    if created or raw or before is None:
        return
    if before != tuple(getattr(instance, name) for name in USER_ACCESS_FIELDS):
        user_access_revoke(user_id=instance.pk, reason="Your access changed: your account was updated.")


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="dashboard.user_deleted")
def _user_deleted(sender, instance, **kwargs) -> None:
    user_access_revoke(user_id=instance.pk, reason="Your access changed: your account was removed.")


@receiver(user_logged_out, dispatch_uid="dashboard.user_logged_out")
def _user_logged_out(sender, request, user, **kwargs) -> None:
    # Only this session's sockets close (they say "Signed out"); the user's other browsers keep their
    # own sessions and sockets, so no reason for them to show.
    if user is not None and user.pk is not None:
        user_access_revoke(user_id=user.pk, ended_session_key=getattr(request.session, "session_key", None) or "")
