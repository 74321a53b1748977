"""The Django app: add ``"pgqueue.contrib.django"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

import importlib

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from pgqueue.contrib.django import _conf


class PgQueueConfig(AppConfig):  # type: ignore[misc]
    """Registers the tasks of installed apps, the admin for jobs and the migrations."""

    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Import every installed app's ``tasks`` module, so their tasks are registered; close
        lost connections around requests (see _conf.close_lost_connections)."""
        from django.core.signals import request_finished, request_started

        request_started.connect(_conf.close_lost_connections)
        request_finished.connect(_conf.close_lost_connections)
        config = _conf.settings()
        if config["AUTODISCOVER"]:
            autodiscover_modules(config["AUTODISCOVER"])
        for module in config["TASK_MODULES"]:
            importlib.import_module(module)
