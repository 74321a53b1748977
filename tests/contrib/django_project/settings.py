"""A small Django project for pgqueue's integration tests. The database comes from
PGQUEUE_DJANGO_DSN (a libpq DSN); tests point it at their own database."""

import importlib.util
import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("PGQUEUE_DJANGO_DSN", "dbname=pgqueue_django_unset"))

SECRET_KEY = "tests-only"
USE_TZ = True
DEBUG = False
ROOT_URLCONF = "tests.contrib.django_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgqueue.contrib.django",
    "tests.contrib.django_project.shop",
]
# Django 5.2 runs django.tasks through the django-tasks backport; Django 6 has it built in.
if importlib.util.find_spec("django.tasks") is None and importlib.util.find_spec("django_tasks"):
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}

PGQUEUE = {"DATABASE": "default", "QUEUE": "default"}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.PgQueueBackend",
        "QUEUES": ["default", "emails"],
    }
}
