"""Settings for bench/bench_steps.py: the example project plus the bench's workflows.

DATABASE_URL selects the database (bench_steps.py points it at a fresh SQLite file or
a `durable_bench` PostgreSQL database); DEBUG is off so Django does not keep a log of
every query.
"""

import os

from example_project.settings import *  # noqa: F403
from example_project.settings import INSTALLED_APPS, env

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "bench.apps.BenchConfig"]

DATABASES = {"default": env.db("DATABASE_URL", default="sqlite:////tmp/durable_bench.sqlite3")}
if "DURABLE_BENCH_CONN_MAX_AGE" in os.environ:  # bench_steps.py --conn-max-age
    age = os.environ["DURABLE_BENCH_CONN_MAX_AGE"]
    DATABASES["default"]["CONN_MAX_AGE"] = None if age == "none" else int(age)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["timeout"] = 20  # as example_project: wait for the single writer's lock
    if os.environ.get("DURABLE_BENCH_SQLITE_WAL") == "1":
        options["init_command"] = "PRAGMA journal_mode=WAL"
