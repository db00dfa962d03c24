"""Test settings: SQLite by default; DATABASE_URL=postgres://... for PostgreSQL.

The worker tests (tests/test_worker_processes.py) run `manage.py durable_worker` in
subprocesses pointed at the test database, so on SQLite the test database is a file
(an in-memory one is invisible to other processes), and a few DURABLE options can be
set through the environment to start workers with short leases and heartbeats.
"""

import os
import tempfile

import environ

env = environ.Env()

SECRET_KEY = "tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_durable",
    "example_project.shop",
    "tests.workflows_app",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
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
# A file, never ":memory:": the live server's threads and worker subprocesses must each
# open their own connection (a shared in-memory SQLite connection is not thread-safe).
_SQLITE_FILE = os.path.join(tempfile.gettempdir(), "django_durable_tests.sqlite3")
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{_SQLITE_FILE}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
    # One file per test session (pid), so concurrent test runs do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"django_durable_tests_{os.getpid()}.sqlite3")
    }
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DURABLE = {
    "QUEUES": {
        "default": {
            "concurrency": env.int("DURABLE_CONCURRENCY", default=4),
            "poll_interval": env.float("DURABLE_POLL_INTERVAL", default=0.2),
        }
    }
}
for _option, _cast in (
    ("LEASE_SECONDS", env.float),
    ("HEARTBEAT_SECONDS", env.float),
    ("SHUTDOWN_GRACE_SECONDS", env.float),
):
    if f"DURABLE_{_option}" in os.environ:
        DURABLE[_option] = _cast(f"DURABLE_{_option}")
