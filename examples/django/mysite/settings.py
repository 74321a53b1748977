"""Settings of the example project: the database comes from DATABASE_URL."""

import importlib.util
import os

from psycopg.conninfo import conninfo_to_dict

db = conninfo_to_dict(os.environ["DATABASE_URL"])  # e.g. postgresql://postgres@localhost/shop

SECRET_KEY = "example-only"
DEBUG = True
USE_TZ = True
TIME_ZONE = "UTC"  # Django sets the process time zone: the default would date logs in Chicago
ROOT_URLCONF = "mysite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgqueue.contrib.django",  # migrations, manage.py pgqueue, the jobs admin
    "shop",
]
if importlib.util.find_spec("django.tasks") is None:  # Django 5.2: the django-tasks backport
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
        "ENGINE": "django.db.backends.postgresql",  # with psycopg 3 installed
        "NAME": db.get("dbname", ""),
        "USER": db.get("user", ""),
        "PASSWORD": db.get("password", ""),
        "HOST": db.get("host", ""),
        "PORT": db.get("port", ""),
    }
}

PGQUEUE = {
    "DATABASE": "default",  # where pgqueue's schema lives (and jobs are enqueued)
    "QUEUE": "default",  # default queue of @app.task tasks
}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.PgQueueBackend",
        "QUEUES": ["default", "emails"],
    }
}
