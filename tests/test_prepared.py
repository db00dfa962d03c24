"""The statements a step runs are prepared on PostgreSQL (parsed and planned once per
connection), the project's own queries are not, and the setting turns it off."""

import pytest
from django.db import connection
from django.test import override_settings

from django_durable import workflow
from django_durable.models import WorkflowExecution
from django_durable.testing import run_until_idle
from tests.worker_support import IS_POSTGRES

pytestmark = pytest.mark.skipif(not IS_POSTGRES, reason="prepared statements are PostgreSQL's")


def first(ctx):
    return {**ctx, "first": True}


def second(ctx):
    WorkflowExecution.objects.filter(workflow_name="nobody").count()  # the project's own
    return {**ctx, "second": True}


chain = workflow("prepared.chain", [first, second])


def prepared() -> dict[str, int]:
    """The engine's prepared statements on this connection, by their first words, with
    how many times each ran on a generic plan (never planned again)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans FROM pg_prepared_statements")
        return {" ".join(text.split()[:3]): generic for text, generic in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_the_claim_the_hand_over_and_the_ending_are_prepared_once_per_connection():
    connection.close()
    for _ in range(8):
        chain.start({})
    run_until_idle()
    assert WorkflowExecution.objects.filter(status="completed").count() == 8
    statements = prepared()
    assert set(statements) == {
        "WITH picked AS",  # the claim, with its first attempt
        "WITH advanced AS",  # the hand-over from `first` to `second`
        "WITH ended AS",  # the ending
    }
    assert statements["WITH advanced AS"] >= 3  # later runs skip planning altogether
    assert connection.connection.prepare_threshold is None  # Django's default, kept


@pytest.mark.django_db(transaction=True)
def test_prepared_statements_can_be_turned_off_for_a_pooler():
    connection.close()  # a connection of its own: none prepared yet
    with override_settings(DURABLE={"PREPARED_STATEMENTS": False}):
        chain.start({})
        run_until_idle()
    assert WorkflowExecution.objects.get().status == "completed"
    assert prepared() == {}


@pytest.mark.django_db(transaction=True)
def test_statements_the_server_lost_are_prepared_again():
    """A pooler may hand the connection to another backend, which never saw them; the
    next step must not fail for that (nor any after it)."""
    connection.close()
    chain.start({})
    run_until_idle()
    assert set(prepared()) == {"WITH picked AS", "WITH advanced AS", "WITH ended AS"}
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")  # behind psycopg's back
    assert prepared() == {}
    for _ in range(2):
        chain.start({})
    run_until_idle()
    assert WorkflowExecution.objects.filter(status="completed").count() == 3
    assert "WITH advanced AS" in prepared()


@pytest.mark.django_db(transaction=True)
def test_a_lost_statement_inside_a_transaction_is_the_connections_trouble():
    """Inside a transaction the statement cannot run again: the error must be one the
    worker treats as the database's (it releases the execution and reconnects), not a
    step's outcome that cannot be stored (which would fail the step for good)."""
    from django.db import OperationalError, transaction

    from django_durable import claims

    connection.close()

    def select_one():
        with claims._hot_cursor() as cursor:
            cursor.execute("SELECT %s::int", [1])
            return cursor.fetchone()[0]

    assert select_one() == 1
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")
    with pytest.raises(OperationalError, match="prepared statement"):
        with transaction.atomic():
            select_one()
    assert select_one() == 1  # the rollback made psycopg forget it: prepared afresh


@pytest.mark.django_db(transaction=True)
def test_a_database_set_up_for_a_transaction_pooler_is_not_prepared_for(monkeypatch):
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    chain.start({})
    run_until_idle()
    assert prepared() == {}
    with override_settings(DURABLE={"PREPARED_STATEMENTS": True}):  # asked for anyway
        chain.start({})
        run_until_idle()
    assert "WITH advanced AS" in prepared()
