import pytest

from jobs.models import RunStatus
from jobs.runner import run_job

pytestmark = pytest.mark.django_db


def test_run_job_records_a_succeeded_run(register_job):
    @register_job("tests.hello")
    def hello(ctx, *, n: int = 2):
        ctx.count(processed=n, succeeded=n)
        return {"said": "hello"}

    run = run_job("tests.hello", params={"n": "3"})
    assert run.status == RunStatus.SUCCEEDED
    assert run.processed == 3
    assert run.summary == {"said": "hello"}
    assert run.params == {"n": 3}
