"""AuditTrail moves here from `maintenance`, table and rows untouched.

Only Django's state changes (maintenance 0004 drops the model from its
state after this adds it here). The content type is renamed rather than
recreated, so the permissions staff hold on the trail (view_audittrail ...)
and admin log entries about it follow the model to its new app.
"""

import django.utils.timezone
from django.db import migrations, models

import core.indexes


def move_content_type(apps, schema_editor, *, src="maintenance", dst="audit"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    if not types.filter(app_label=dst, model="audittrail").exists():
        types.filter(app_label=src, model="audittrail").update(app_label=dst)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, src="audit", dst="maintenance")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("maintenance", "0003_audit_at_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditTrail",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("actor", models.CharField(max_length=150)),
                        ("tenant", models.CharField(blank=True, default="", max_length=100)),
                        ("action", models.CharField(max_length=100)),
                        ("object_type", models.CharField(max_length=100)),
                        ("object_id", models.CharField(blank=True, default="", max_length=64)),
                        ("object_ids", models.JSONField(blank=True, default=list)),
                        ("changes", models.JSONField(blank=True, default=dict)),
                        ("job_run_id", models.BigIntegerField(blank=True, null=True)),
                        ("request_id", models.CharField(blank=True, default="", max_length=64)),
                    ],
                    options={
                        "db_table": "maintenance_audittrail",
                        "ordering": ["-at", "-id"],
                        "indexes": [
                            models.Index(condition=models.Q(("object_id", ""), _negated=True), fields=["object_id", "at"], name="audit_object_idx"),
                            models.Index(fields=["tenant", "object_type", "at"], name="audit_tenant_idx"),
                            models.Index(fields=["actor", "at"], name="audit_actor_idx"),
                            core.indexes.BrinOnPostgresIndex(fields=["at"], name="audit_at_idx"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
