"""Migrations carry rows written by an earlier version forward."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from django_durable.events import wait_key

BEFORE_TREES = [("django_durable", "0001_initial")]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.mark.django_db(transaction=True)
def test_rows_of_the_first_version_become_roots_and_keep_their_waits():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("django_durable")
    old = migrate(BEFORE_TREES)
    try:
        execution = old.get_model("django_durable", "WorkflowExecution").objects.create(
            workflow_name="old", created_at=NOW, status="waiting", step_seq=1
        )
        Wait = old.get_model("django_durable", "Wait")
        Wait.objects.create(
            execution=execution,
            step_seq=1,
            step_name="s",
            key="any:a,b",
            kind="any",
            event_names=["a", "b"],
            created_at=NOW,
        )
        Wait.objects.create(
            execution=execution,
            step_seq=1,
            step_name="s",
            key="event:a",
            kind="event",
            event_names=["a"],
            created_at=NOW,
        )
    finally:
        new = migrate(latest)
    migrated = new.get_model("django_durable", "WorkflowExecution").objects.get(id=execution.id)
    assert (migrated.root_id, migrated.kind) == (execution.id, "workflow")
    waits = new.get_model("django_durable", "Wait").objects.order_by("kind")
    assert [(wait.key, wait.root_id) for wait in waits] == [
        (wait_key("any", ["a", "b"]), execution.id),
        ("event:a", execution.id),
    ]
