"""AuditTrail now belongs to the `audit` app (audit 0001): drop it from this
app's state only; its table stays, with every row."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("maintenance", "0003_audit_at_index"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditTrail")],
            database_operations=[],
        ),
    ]
