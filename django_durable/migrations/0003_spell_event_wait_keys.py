"""Waits for any/all of several events were keyed `any:a,b`, a key that `["a,b"]` and
`["a", "b"]` shared; they are keyed by the JSON list now (a digest when too long), as
django_durable.events.wait_key spells it, so steps parked before the upgrade find their
waits again. A migration of its own: PostgreSQL refuses to alter a table in the
transaction that updated its rows."""

import hashlib
import json

from django.db import migrations

KEY_LENGTH = 500


def spell_event_wait_keys(apps, schema_editor):
    Wait = apps.get_model("django_durable", "Wait")
    for wait in Wait.objects.filter(kind__in=["any", "all"]).iterator():
        names = json.dumps(wait.event_names, ensure_ascii=False, separators=(",", ":"))
        key = f"{wait.kind}:{names}"
        if len(key) > KEY_LENGTH:
            key = f"{wait.kind}:#{hashlib.sha256(key.encode()).hexdigest()}"
        Wait.objects.filter(pk=wait.pk).update(key=key)


class Migration(migrations.Migration):
    dependencies = [("django_durable", "0002_tree_rows_and_status_machine")]

    operations = [migrations.RunPython(spell_event_wait_keys, migrations.RunPython.noop)]
