"""Bad input, generated: thousands of requests to the JSON API and argument
lists for `runjob`, none of which may reach a 5xx or a traceback.

Every request is built from parts that are each right, or wrong in a known
way; a wrong part is tagged with the problem it carries. So the test knows
what to expect of each request: with no problem, a 2xx and one run enqueued;
with problems, a 4xx whose JSON error names one of them, and no JobRun row
and no broker task. `runjob` likewise: a run, or a CommandError with a
readable message and no run.

Header values are what a WSGI server hands Django: latin-1 text without CR
or LF (UTF-8 bytes arrive as latin-1 mojibake). Plain pytest-django
fixtures only, so it runs on SQLite too:
`.venv/bin/python -m pytest --noconftest reliability/test_bad_input.py`.
"""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_q.brokers import get_broker
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs import registry
from jobs.api import BODY_FIELDS, MAX_BODY_BYTES
from jobs.models import JobRun
from jobs.params import Range
from subscriptions.models import Organization
from tests import fixtures_sns

TOKEN = "bad-input-token"
TENANT = "acme"
PROBE = "badinput.probe"
REQUIRED = "badinput.required"
OUR_JOBS = (PROBE, REQUIRED)

API_POST_EXAMPLES = 1800
API_OTHER_EXAMPLES = 500
RUNJOB_EXAMPLES = 500
SETTINGS = {
    "deadline": None,
    "database": None,  # no .hypothesis/ directory in the checkout
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
}

SENT: Counter[str] = Counter()  # requests sent, by method, for the report line
STATUSES: Counter[int] = Counter()  # answers, by status code
RUNJOB: Counter[str] = Counter()  # argument lists, valid or refused
ADMIN_STATUSES: Counter[int] = Counter()

pytestmark = pytest.mark.usefixtures("probe_jobs")


# --- the jobs the requests aim at ----------------------------------------------


def probe(
    ctx: Any,
    *,
    count: Annotated[int, Range(ge=1, le=1000)] = 10,
    ratio: float | None = None,
    label: str = "",
    force: bool = False,
    amount: Decimal = Decimal("0"),
    day: date | None = None,
    at: datetime | None = None,
) -> dict:
    """One parameter of every type the platform takes."""
    ctx.count(processed=1, succeeded=1)
    return {"count": count}


def required(ctx: Any, *, limit: Annotated[int, Range(ge=0, le=10)]) -> dict:
    """A required, bounded parameter."""
    return {"limit": limit}


PARAMS = {PROBE: ("count", "ratio", "label", "force", "amount", "day", "at"), REQUIRED: ("limit",)}


@pytest.fixture(scope="module")
def probe_jobs():
    registry.job(PROBE)(probe)
    registry.job(REQUIRED)(required)
    yield
    for name in OUR_JOBS:
        registry.unregister(name)


@pytest.fixture
def api(transactional_db, settings):
    """A tenant, the token, an empty broker. Transactional, so an accepted
    request really enqueues (on commit), as in production."""
    settings.JOBS_API_TOKEN = TOKEN
    Organization.objects.create(key=TENANT, name="Acme", billing_email="billing@acme.example")
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}", flush=True)


# --- strategies: parts, each right or wrong in a tagged way ----------------------

Defect = tuple[str, str]

utf8_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
# A header value as a WSGI server delivers it: latin-1, no CR/LF/NUL.
latin1_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)
mojibake = utf8_text.map(lambda s: s.encode("utf-8").decode("latin-1"))
header_value = st.one_of(latin1_text, mojibake)
junk_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | utf8_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(utf8_text, inner, max_size=4),
    max_leaves=10,
)
not_an_object = junk_json.filter(lambda v: not isinstance(v, dict))
aware_or_naive = st.one_of(
    st.none(),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
datetimes = st.builds(
    lambda d, tz: d.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    aware_or_naive,
)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 1, 1))

VALID_VALUES = {
    "count": st.one_of(
        st.integers(1, 1000), st.integers(1, 1000).map(str), st.integers(1, 1000).map(float)
    ),
    "ratio": st.one_of(
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    ),
    "label": utf8_text,
    "force": st.one_of(
        st.booleans(), st.sampled_from([0, 1, "yes", "no", "TRUE", " off ", "t", "N"])
    ),
    "amount": st.one_of(
        st.integers(-(10**12), 10**12),
        st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    ),
    "day": st.one_of(st.none(), dates.map(date.isoformat)),
    "at": st.one_of(st.none(), datetimes.map(datetime.isoformat)),
    "limit": st.one_of(st.integers(0, 10), st.integers(0, 10).map(str)),
}
WRONG_TYPES = st.sampled_from([[], {}, [1], {"a": 1}])
INVALID_VALUES = {
    "count": st.one_of(
        WRONG_TYPES,
        st.sampled_from([0, 1001, -5, 10**30, "abc", "", 1.5, True, False, None, "1e3", "٣"]),
        st.integers(max_value=0),
        st.integers(min_value=1001),
    ),
    "ratio": st.one_of(
        WRONG_TYPES, st.sampled_from(["abc", True, "nan", "inf", "-Infinity", "1e999", 10**400])
    ),
    "label": st.one_of(WRONG_TYPES, st.sampled_from([5, 1.5, True, None])),
    "force": st.one_of(WRONG_TYPES, st.sampled_from(["maybe", 2, -1, 1.0, None, ""])),
    "amount": st.one_of(
        WRONG_TYPES, st.sampled_from([1.5, "abc", "NaN", "Infinity", "sNaN", True, None, "1.2.3"])
    ),
    "day": st.one_of(
        WRONG_TYPES, st.sampled_from(["2024-02-30", "yesterday", 20240101, True, "", "2024-1"])
    ),
    "at": st.one_of(
        WRONG_TYPES,
        st.sampled_from(
            ["2024-13-01T00:00", "0001-01-01T00:00:00+01:00", 12345, "now", "", "T12:00"]
        ),
    ),
    "limit": st.one_of(WRONG_TYPES, st.sampled_from([11, -1, "x", None, 2.5, "10.0"])),
}
unknown_names = utf8_text.filter(lambda s: s.strip() not in PARAMS[PROBE] + PARAMS[REQUIRED])


ABSENT = object()

# The parts of a POST that may be wrong; each request draws which ones are.
POST_PARTS = (
    "method",
    "path",
    "token",
    "body",
    "length",
    "tenant",
    "params",
    "dry_run",
    "idempotency_key",
    "field",
    "strings",
)


def wrong_parts(parts: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    """About a third all right, a third with one wrong part, a third with several."""
    return st.one_of(
        st.just(frozenset()),
        st.sampled_from(parts).map(lambda p: frozenset([p])),
        st.sets(st.sampled_from(parts), min_size=2, max_size=4).map(frozenset),
    )


@st.composite
def params_part(draw: st.DrawFn, job: str, wrong: bool) -> tuple[Any, set[Defect]]:
    """The `params` value for `job` (ABSENT: no such key), with its problems."""
    values: dict[str, Any] = {}
    names = draw(st.sets(st.sampled_from(PARAMS[job])))
    if job == REQUIRED and not wrong:
        names.add("limit")
    if not wrong:
        kind = draw(st.sampled_from(["values", "values", "values", "absent", "null"]))
        if kind != "values" and job == PROBE:
            return (ABSENT if kind == "absent" else None), set()
        return {name: draw(VALID_VALUES[name]) for name in names}, set()
    kind = draw(st.sampled_from(["not-object", "value", "value", "unknown", "missing"]))
    if kind == "not-object":
        return draw(not_an_object.filter(lambda v: v is not None)), {("params", "")}
    if kind == "missing":
        return {}, {("param", "limit")} if job == REQUIRED else set()
    defects: set[Defect] = set()
    values = {name: draw(VALID_VALUES[name]) for name in names}
    if job == REQUIRED and "limit" not in values:
        defects.add(("param", "limit"))
    if kind == "value":
        for name in draw(st.sets(st.sampled_from(PARAMS[job]), min_size=1)):
            values[name] = draw(INVALID_VALUES[name])
            defects.add(("param", name))
    else:
        for name in draw(st.lists(unknown_names, min_size=1, max_size=2)):
            values[name] = draw(junk_json)
            defects.add(("param", name))
    return values, defects


@st.composite
def envelope(
    draw: st.DrawFn, job: str, wrong: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], set[Defect]]:
    """A request body as a Python object, with its problems."""
    body: dict[str, Any] = {}
    defects: set[Defect] = set()
    if "tenant" in wrong:
        kind = draw(st.sampled_from(["unknown", "long", "type"]))
        if kind == "unknown":
            body["tenant"] = "zz-" + draw(utf8_text)
        elif kind == "long":
            body["tenant"] = TENANT * 30
        else:
            body["tenant"] = draw(st.one_of(st.integers(), st.booleans(), WRONG_TYPES))
        defects.add(("tenant", ""))
    else:
        tenant = draw(st.sampled_from([ABSENT, ABSENT, None, "", TENANT]))
        if tenant is not ABSENT:
            body["tenant"] = tenant

    params, param_defects = draw(params_part(job, "params" in wrong))
    if params is not ABSENT:
        body["params"] = params
    defects |= param_defects

    if "dry_run" in wrong:
        body["dry_run"] = draw(st.sampled_from(["true", 1, 0, None, [], "false", {}]))
        defects.add(("dry_run", ""))
    else:
        dry_run = draw(st.sampled_from([ABSENT, ABSENT, True, False]))
        if dry_run is not ABSENT:
            body["dry_run"] = dry_run

    if "idempotency_key" in wrong:
        body["idempotency_key"] = draw(
            st.one_of(st.integers(), st.booleans(), WRONG_TYPES, st.just("k" * 201))
        )
        defects.add(("idempotency_key", ""))
    else:
        key = draw(st.sampled_from([ABSENT, None, "", "__fresh__", "__fresh__"]))
        if key is not ABSENT:
            body["idempotency_key"] = key  # __fresh__: a new uuid when sent

    if "field" in wrong:
        unknown = utf8_text.filter(lambda s: s not in BODY_FIELDS)
        for name in draw(st.lists(unknown, min_size=1, max_size=2)):
            body[name] = draw(junk_json)
            defects.add(("field", name))

    if "strings" in wrong:  # a string no database stores
        bad = draw(st.sampled_from(["a\x00b", "\ud800", "x\udfff"]))
        where = draw(
            st.sampled_from(["label", "tenant", "key"] if job == PROBE else ["tenant", "key"])
        )
        if where == "label":
            params = body.get("params")
            body["params"] = {**(params if isinstance(params, dict) else {}), "label": bad}
            defects.discard(("params", ""))
        elif where == "tenant":
            body["tenant"] = bad
            defects.discard(("tenant", ""))
        else:
            body["idempotency_key"] = bad
            defects.discard(("idempotency_key", ""))
        defects.add(("strings", ""))
    return body, defects


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    content_type: str
    environ: dict[str, str]
    defects: set[Defect] = field(default_factory=set)
    replay: bool = False
    envelope: dict[str, Any] | None = None

    def describe(self) -> str:
        return (
            f"{self.method} {self.path} {self.content_type!r} {self.environ!r} "
            f"body[{len(self.body)}]={self.body[:300]!r} defects={sorted(self.defects)}"
        )


@st.composite
def auth_part(draw: st.DrawFn, wrong: bool) -> tuple[dict[str, str], set[Defect]]:
    if not wrong:
        scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER"]))
        return {"HTTP_AUTHORIZATION": f"{scheme} {TOKEN}"}, set()
    value = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                [
                    "",
                    "Bearer",
                    "Bearer ",
                    "Basic YWRtaW46YWRtaW4=",
                    f"Token {TOKEN}",
                    TOKEN,
                    f"Bearer {TOKEN}x",
                    f"Bearer {TOKEN[:-1]}",
                    f"Bearer {TOKEN.upper()}",
                    f"Bearer {TOKEN},{TOKEN}",
                ]
            ),
            header_value.map(lambda v: f"Bearer {v}"),
            header_value,
        ).filter(lambda v: v is None or v.partition(" ")[2].strip() != TOKEN)
    )
    return ({} if value is None else {"HTTP_AUTHORIZATION": value}), {("token", "")}


@st.composite
def job_path(draw: st.DrawFn, wrong: bool) -> tuple[str, str | None, set[Defect]]:
    """(path, job or None, problems) for POST .../<name>/runs."""
    slash = draw(st.sampled_from(["", "/"]))
    if not wrong:
        job = draw(st.sampled_from(OUR_JOBS))
        return f"/api/jobs/{job}/runs{slash}", job, set()
    kind = draw(st.sampled_from(["unknown", "unknown", "bytes", "endpoint"]))
    if kind == "unknown":
        name = draw(
            st.one_of(
                utf8_text,
                st.sampled_from(["subscriptions", "subscriptions.expire.x", "..", ".", "runs"]),
                st.sampled_from(OUR_JOBS).map(str.upper),
            ).filter(lambda n: n not in {spec.name for spec in registry.all_jobs()})
        )
        return f"/api/jobs/{quote(name, safe='')}/runs{slash}", None, {("job", "")}
    if kind == "bytes":
        raw = draw(st.binary(min_size=1, max_size=20))
        return f"/api/jobs/{quote(raw, safe='')}/runs", None, {("job", "")}
    tail = draw(st.sampled_from(["/run", "/runs/x", "/runs/1", "", "/RUNS"]))
    job = draw(st.sampled_from(OUR_JOBS))
    return f"/api/jobs/{job}{tail}", None, {("job", "")}


def encode(value: Any, *, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: send them escaped, as JSON allows
        return json.dumps(value, ensure_ascii=True).encode("utf-8")


@st.composite
def post_requests(draw: st.DrawFn) -> Request:
    """A POST to start a run: method, path, token, headers and body, each maybe wrong."""
    wrong = draw(wrong_parts(POST_PARTS))
    defects: set[Defect] = set()
    method = "POST"
    if "method" in wrong:
        method = draw(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS"]))
        defects.add(("method", ""))
    path, job, path_defects = draw(job_path("path" in wrong))
    defects |= path_defects
    environ, auth_defects = draw(auth_part("token" in wrong))
    defects |= auth_defects
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=xyz",
                "application/xml",
                "",
            ]
        )
        | header_value
    )
    if draw(st.booleans()):
        environ["HTTP_X_REQUEST_ID"] = draw(header_value)

    body_obj: dict[str, Any] | None = None
    if "body" not in wrong:
        if draw(st.integers(0, 9)) == 0:  # no body: the defaults
            body_obj = {}
            body = draw(st.sampled_from([b"", b"  ", b"\n", b"\t \r\n"]))
            if job == REQUIRED:
                defects.add(("param", "limit"))
        else:
            body_obj, body_defects = draw(envelope(job or PROBE, wrong))
            defects |= body_defects
            body = encode(body_obj, ascii_only=draw(st.booleans()))
    else:
        kind = draw(st.sampled_from(["not-object", "broken", "broken", "binary", "big"]))
        if kind == "not-object":
            body = encode(draw(not_an_object), ascii_only=True)
            defects.add(("body", ""))
        elif kind == "broken":
            body = draw(broken_json()).encode("utf-8")
            defects.add(("body", ""))
        elif kind == "binary":
            body = draw(st.binary(min_size=1, max_size=200).filter(not_json_bytes))
            defects.add(("body", ""))
        else:  # a well-formed envelope, padded past the limit
            inner, _ = draw(envelope(job or PROBE))
            size = draw(st.sampled_from([MAX_BODY_BYTES + 1, 100_000, 3_000_000]))
            text = encode(inner, ascii_only=True)
            body = text + b" " * max(0, size - len(text))
            defects.add(("size", ""))

    if "length" in wrong:
        kind = draw(st.sampled_from(["malformed", "huge", "chunked"]))
        if kind == "malformed":
            environ["CONTENT_LENGTH"] = draw(
                st.sampled_from(["abc", "-1", "1.5", " 12", "٣", "1e3", "0x10"])
            )
            defects.add(("length", ""))
        elif kind == "huge":
            environ["CONTENT_LENGTH"] = draw(
                st.sampled_from(["99999999999", str(MAX_BODY_BYTES + 1)])
            )
            defects.add(("size", ""))
        else:
            environ["CONTENT_LENGTH"] = ""
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"
            defects.add(("length", ""))
    replay = not defects and draw(st.booleans())
    return Request(method, path, body, content_type, environ, defects, replay, body_obj)


@st.composite
def broken_json(draw: st.DrawFn) -> str:
    """Text that is not JSON: cut envelopes, NaN, deep nesting, random text."""
    kind = draw(st.sampled_from(["cut", "constant", "deep", "deep-object", "text"]))
    if kind == "cut":
        text = json.dumps({"params": {"count": 5}, "tenant": TENANT, "dry_run": True})
        return text[: draw(st.integers(1, len(text) - 1))]
    if kind == "constant":
        constant = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return draw(
            st.sampled_from(
                [f'{{"params": {{"ratio": {constant}}}}}', f'{{"dry_run": {constant}}}', constant]
            )
        )
    if kind == "deep":
        depth = draw(st.integers(2_000, 20_000))
        return "[" * depth + "]" * depth
    if kind == "deep-object":
        depth = draw(st.integers(52, 400))
        return '{"params": {"label": ' + '{"a": ' * depth + "1" + "}" * depth + "}}"
    return draw(st.text(min_size=1).filter(not_json_text))


def not_json_text(text: str) -> bool:
    if not text.strip():
        return False
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def not_json_bytes(raw: bytes) -> bool:
    try:
        return not_json_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return True


# --- what a response must be ------------------------------------------------------


def names_a_defect(defect: Defect, status: int, answer: dict[str, Any]) -> bool:
    kind, detail = defect
    message = answer["error"]
    if kind == "method":
        return status == 405 and "method" in message
    if kind == "token":
        return status == 401 and "token" in message
    if kind == "job":
        return status == 404 and any(
            w in message for w in ("unknown job", "no such endpoint", "no run with id")
        )
    if kind == "length":
        return status in (400, 411) and "Content-Length" in message
    if kind == "size":
        return status == 413 and "larger than" in message
    if kind == "body":
        return status == 400 and any(w in message for w in ("JSON", "UTF-8", "nested"))
    if kind == "strings":
        return status == 400 and ("NUL" in message or "surrogate" in message)
    if kind == "field":
        return status == 400 and answer.get("field") == detail[:100]
    if kind == "param":
        return status == 400 and answer.get("param") == detail
    return status == 400 and answer.get("field") == kind  # tenant, params, dry_run, key


def send(client: Client, request: Request, body: bytes) -> Any:
    SENT[request.method] += 1
    response = client.generic(
        request.method, request.path, body, content_type=request.content_type, **request.environ
    )
    STATUSES[response.status_code] += 1
    return response


def json_answer(response: Any, request: Request) -> dict[str, Any]:
    assert response.status_code < 500, request.describe()
    assert response["Content-Type"] == "application/json", request.describe()
    answer = json.loads(response.content)
    assert isinstance(answer, dict), request.describe()
    return answer


def counts(broker: Any) -> tuple[int, int]:
    return JobRun.objects.count(), broker.queue_size()


@hsettings(max_examples=API_POST_EXAMPLES, **SETTINGS)
@given(request=post_requests())
def test_starting_a_run_refuses_bad_input_with_a_json_4xx_and_enqueues_nothing(
    request: Request, api: Any, capsys: Any
) -> None:
    broker = api
    body = request.body
    if b"__fresh__" in body:
        body = body.replace(b"__fresh__", uuid.uuid4().hex.encode())
    before = counts(broker)
    response = send(Client(), request, body)
    answer = json_answer(response, request)

    if request.defects:
        assert 400 <= response.status_code < 500, (response.status_code, request.describe())
        assert isinstance(answer.get("error"), str) and answer["error"], request.describe()
        assert any(names_a_defect(d, response.status_code, answer) for d in request.defects), (
            response.status_code,
            answer,
            request.describe(),
        )
        assert counts(broker) == before, f"a refused request left a run: {request.describe()}"
    else:
        assert response.status_code == 202, (response.status_code, answer, request.describe())
        run = JobRun.objects.get(pk=answer["run_id"])
        assert (answer["status"], answer["created"]) == ("queued", True)
        assert response["Location"] == answer["status_url"]
        assert run.trigger == "api" and run.job in OUR_JOBS
        assert counts(broker) == (before[0] + 1, before[1] + 1), request.describe()
        if request.replay and (request.envelope or {}).get("idempotency_key") == "__fresh__":
            again = send(Client(), request, body)
            assert again.status_code == 200, request.describe()
            assert json_answer(again, request)["run_id"] == run.pk
            assert counts(broker) == (before[0] + 1, before[1] + 1)


# --- the other endpoints ------------------------------------------------------------


@st.composite
def other_requests(draw: st.DrawFn) -> tuple[Request, str]:
    """Reads: the catalogue, a run's state, and paths that are no endpoint."""
    defects: set[Defect] = set()
    method = draw(st.sampled_from(["GET"] * 6 + ["POST", "PUT", "DELETE", "OPTIONS"]))
    kind = draw(st.sampled_from(["catalogue", "run", "run", "nowhere"]))
    if kind == "catalogue":
        path = draw(st.sampled_from(["/api/jobs", "/api/jobs/"]))
    elif kind == "run":
        run_id = draw(
            st.one_of(
                st.sampled_from(["0", "1", "2", "3", "0001", "9223372036854775807"]),
                st.integers(0, 10**40).map(str),
                st.text(alphabet="0123456789", min_size=1, max_size=60),
            )
        )
        path = f"/api/jobs/runs/{run_id}" + draw(st.sampled_from(["", "/"]))
    else:
        tail = draw(
            st.one_of(utf8_text, st.binary(max_size=20)).filter(
                lambda t: ("runs" if isinstance(t, str) else b"runs") not in t
            )
        )
        path = "/api/jobs/" + quote(tail, safe="/")
        if path.rstrip("/") == "/api/jobs" or path.endswith("/runs") or path.endswith("/runs/"):
            path += "x"
        defects.add(("job", ""))
    if method != "GET" and not (kind == "nowhere" and method in ("POST", "PUT", "DELETE")):
        defects.add(("method", ""))
    environ, auth_defects = draw(auth_part(draw(st.integers(0, 3)) == 0))
    defects |= auth_defects
    return Request(method, path, b"", "application/json", environ, defects), kind


@pytest.fixture
def some_runs(api: Any) -> set[int]:
    return {JobRun.objects.create(job=PROBE, status="succeeded").pk for _ in range(3)}


@hsettings(max_examples=API_OTHER_EXAMPLES, **SETTINGS)
@given(generated=other_requests())
def test_reading_runs_and_the_catalogue_refuses_bad_input_with_a_json_4xx(
    generated: tuple[Request, str], api: Any, some_runs: set[int], capsys: Any
) -> None:
    request, kind = generated
    defects = set(request.defects)
    if kind == "run":
        run_id = request.path.removeprefix("/api/jobs/runs/").rstrip("/")
        if int(run_id) not in some_runs or len(run_id) > 19:  # longer: no BIGINT id
            defects.add(("job", ""))
    before = counts(api)
    response = send(Client(), request, b"")
    answer = json_answer(response, request)
    assert counts(api) == before
    if defects:
        assert 400 <= response.status_code < 500, (response.status_code, request.describe())
        assert isinstance(answer.get("error"), str) and answer["error"]
        assert any(names_a_defect(d, response.status_code, answer) for d in defects), (
            response.status_code,
            answer,
            request.describe(),
        )
    else:
        assert response.status_code == 200, (response.status_code, answer, request.describe())
        assert ("jobs" in answer) if kind == "catalogue" else (answer["id"] in some_runs)


# --- runjob -------------------------------------------------------------------------

CLI_VALID = {
    "count": st.integers(1, 1000).map(str),
    "ratio": st.floats(allow_nan=False, allow_infinity=False).map(repr),
    "label": utf8_text,
    "force": st.sampled_from(["yes", "no", "true", "false", "1", "0", "ON", "off", " y ", "F"]),
    "amount": st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    "day": dates.map(date.isoformat),
    "at": datetimes.map(datetime.isoformat),
    "limit": st.integers(0, 10).map(str),
}
CLI_INVALID = {
    "count": st.sampled_from(["0", "1001", "abc", "", "1.5", "-3", "1e3", "99999999999999999999"]),
    "ratio": st.sampled_from(["abc", "", "nan", "inf", "1e999", "1,5"]),
    "force": st.sampled_from(["maybe", "2", "", "-1", "yess"]),
    "amount": st.sampled_from(["abc", "NaN", "Infinity", "sNaN", "1.2.3", ""]),
    "day": st.sampled_from(["2024-02-30", "x", "", "2024/01/01"]),
    "at": st.sampled_from(["2024-13-01T00:00", "0001-01-01T00:00:00+01:00", "", "noon"]),
    "limit": st.sampled_from(["11", "-1", "x", "", "2.5"]),
}


@dataclass
class Argv:
    args: list[str]
    defects: set[Defect]
    as_json: bool


RUNJOB_PARTS = ("job", "tenant", "param", "pair", "slot", "option", "strings")


@st.composite
def runjob_argv(draw: st.DrawFn) -> Argv:
    wrong = draw(wrong_parts(RUNJOB_PARTS))
    defects: set[Defect] = set()
    if "job" in wrong:
        name = draw(
            st.one_of(utf8_text, st.sampled_from(["subscriptions", "x.y", PROBE.upper()]))
            .filter(lambda n: not n.startswith("-"))
            .filter(lambda n: n not in {spec.name for spec in registry.all_jobs()})
        )
        defects.add(("job", ""))
    else:
        name = draw(st.sampled_from(OUR_JOBS))
    options: list[str] = []
    if "tenant" in wrong:
        options.append(f"--tenant=zz-{draw(utf8_text)}")
        defects.add(("tenant", ""))
    else:
        tenant = draw(st.sampled_from([None, None, "", TENANT]))
        if tenant is not None:
            options.append(f"--tenant={tenant}")
    declared = PARAMS.get(name, PARAMS[PROBE])
    names = draw(st.sets(st.sampled_from(declared)))
    if name == REQUIRED and "param" not in wrong:
        names.add("limit")
    for pname in sorted(names):
        options.append(f"--param={pname}={draw(CLI_VALID[pname])}")
    if name == REQUIRED and "limit" not in names:
        defects.add(("param", "limit"))
    if "param" in wrong:
        if draw(st.booleans()):
            pname = draw(st.sampled_from([n for n in declared if n in CLI_INVALID]))
            options = [o for o in options if not o.startswith(f"--param={pname}=")]
            options.append(f"--param={pname}={draw(CLI_INVALID[pname])}")
            defects.add(("param", pname))
        else:
            unknown = draw(unknown_names.filter(lambda n: "=" not in n and n.strip()))
            options.append(f"--param={unknown}=1")
            defects.add(("param", unknown.strip()))
    if "pair" in wrong:
        options.append(f"--param={draw(st.sampled_from(['novalue', '', '=5', ' =5']))}")
        if names:
            options.append(f"--param={sorted(names)[0]}=1")  # given twice
        defects.add(("pair", ""))
    if "slot" in wrong:
        value = draw(st.sampled_from(["x", "2024-13-01T00:00", "0001-01-01T00:00:00+01:00", "1"]))
        options.append(f"--slot={value}")
        defects.add(("slot", ""))
    else:
        slot = draw(st.sampled_from(["absent", "absent", "offset", "zulu"]))
        if slot == "offset":
            options.append(f"--slot={draw(datetimes).isoformat()}")
        elif slot == "zulu":
            options.append(f"--slot={draw(st.datetimes()).isoformat()}Z")
    as_json = draw(st.booleans())
    if as_json:
        options.append("--json")
    if draw(st.booleans()):
        options.append("--dry-run")
    if "option" in wrong:
        options.append(
            draw(st.sampled_from(["--bogus", "-x", "--dry-run=yes", "--tenant", "--param"]))
        )
        defects.add(("option", ""))
    if "strings" in wrong:  # argv bytes that are not UTF-8, as Python hands them over
        options.append(draw(st.sampled_from(["--param=x\udcff=1", "--param=label\udcfe\udc80=1"])))
        defects.add(("strings", ""))
    return Argv([name, *draw(st.permutations(options))], defects, as_json)


def command_names_a_defect(defect: Defect, message: str) -> bool:
    kind, detail = defect
    return {
        "job": lambda: "unknown job" in message,
        "tenant": lambda: "tenant" in message,
        "param": lambda: repr(detail) in message,
        "pair": lambda: "--param" in message,
        "slot": lambda: "--slot" in message,
        "option": lambda: message.startswith("Error:"),
        "strings": lambda: "UTF-8" in message or "NUL" in message,
    }[kind]()


@hsettings(max_examples=RUNJOB_EXAMPLES, **SETTINGS)
@given(argv=runjob_argv())
def test_runjob_refuses_bad_arguments_with_a_command_error_and_runs_nothing(
    argv: Argv, api: Any, capsys: Any
) -> None:
    SENT["runjob"] += 1
    RUNJOB["refused" if argv.defects else "valid"] += 1
    before = JobRun.objects.count()
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("runjob", *argv.args, stdout=out, stderr=err)
    except SystemExit as exc:  # exit 3: that slot already ran, nothing run
        assert exc.code == 3 and not argv.defects, (exc.code, argv)
        assert "not run: slot already has run #" in out.getvalue(), out.getvalue()
        assert JobRun.objects.count() == before
    except CommandError as exc:
        message = str(exc)
        assert message and "Traceback" not in message, argv
        assert argv.defects, f"valid arguments refused: {argv.args!r}: {message}"
        assert any(command_names_a_defect(d, message) for d in argv.defects), (message, argv)
        assert JobRun.objects.count() == before, f"refused, but a run was recorded: {argv}"
    else:
        assert not argv.defects, f"bad arguments accepted: {argv}"
        assert JobRun.objects.count() - before == 1
        output = out.getvalue()
        if argv.as_json:
            assert json.loads(output)["status"] == "succeeded"
        else:
            assert ": succeeded" in output


# --- the admin's action URLs --------------------------------------------------------

ADMIN_EXAMPLES = 300
REDIRECT_TARGETS = [
    "",
    "/admin/",
    "/admin/jobs/overview/?x=1",
    "http://evil.example/",
    "https://evil.example/",
    "//evil.example/x",
    "/\\evil.example",
    "javascript:alert(1)",
    "http://testserver.evil.example/",
]


@st.composite
def admin_actions(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bool]:
    """(method, path, form, names a real target) for the per-job and per-run actions."""
    action = draw(st.sampled_from(["run", "dry-run", "pause", "resume", "rerun", "rerun-failed"]))
    if action in ("rerun", "rerun-failed"):
        pk = draw(
            st.one_of(
                st.just("__run__"), st.integers(0, 10**30).map(str), st.sampled_from(["0", "-1"])
            )
        )
        path, real = f"/admin/jobs/run/{pk}/{action}/", pk == "__run__"
    else:
        name = draw(
            st.one_of(
                st.sampled_from([PROBE, SCHEDULED]),
                utf8_text.filter(lambda n: n not in {s.name for s in registry.all_jobs()}),
            )
        )
        path = f"/admin/jobs/job/{quote(name, safe='')}/{action}/"
        real = name in (PROBE, SCHEDULED)
    form = {
        "reason": draw(st.one_of(utf8_text, st.sampled_from(["", "   ", "r" * 100_000]))),
        "next": draw(st.one_of(st.sampled_from(REDIRECT_TARGETS), latin1_text)),
    }
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET"]))
    return method, path, form, real


SCHEDULED = "badinput.scheduled"


@pytest.fixture
def operator_client(api: Any) -> Client:
    from django.contrib.auth.models import Permission, User

    from jobs.schedules import sync_schedules

    registry.job(SCHEDULED, schedule="0 3 * * *")(required)
    sync_schedules()
    user = User.objects.create_user("operator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="jobs"))
    client = Client()
    client.force_login(user)
    yield client
    registry.unregister(SCHEDULED)


@hsettings(max_examples=ADMIN_EXAMPLES, **SETTINGS)
@given(generated=admin_actions())
def test_admin_actions_answer_bad_input_without_a_5xx_or_an_open_redirect(
    generated: tuple[str, str, dict[str, str], bool], operator_client: Client, api: Any
) -> None:
    from django.utils.http import url_has_allowed_host_and_scheme

    method, path, form, real = generated
    if "__run__" in path:
        run = JobRun.objects.create(job=PROBE, status="succeeded")
        path = path.replace("__run__", str(run.pk))
    elif path.startswith("/admin/jobs/run/"):  # a generated id may be a run's after all
        pk = int(path.split("/")[4])
        real = pk < 2**63 and JobRun.objects.filter(pk=pk).exists()
    before = counts(api)
    SENT[f"admin {method}"] += 1
    if method == "POST":
        response = operator_client.post(path, form)
    else:
        response = operator_client.get(path, form)
    ADMIN_STATUSES[response.status_code] += 1

    assert response.status_code < 500, (method, path, form)
    if response.status_code in (301, 302):
        location = response["Location"]
        assert url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"}), location
    if not real:
        assert counts(api) == before, (method, path)
    else:
        assert counts(api)[0] - before[0] in (0, 1)


def test_at_least_two_thousand_api_requests_were_generated(capsys: Any) -> None:
    """Runs after the generators above (pytest keeps file order)."""
    methods = {key: n for key, n in SENT.items() if key.isupper()}
    api_requests = sum(methods.values())
    admin = {key: n for key, n in SENT.items() if key.startswith("admin")}
    report(
        capsys,
        f"bad input: {api_requests} generated API requests (by method {methods}, "
        f"by status {dict(sorted(STATUSES.items()))}); "
        f"{SENT['runjob']} runjob argument lists {dict(RUNJOB)}; "
        f"{sum(admin.values())} admin action requests (by status "
        f"{dict(sorted(ADMIN_STATUSES.items()))}); no 5xx, no traceback",
    )
    if api_requests:  # 0 when only this test was selected
        assert api_requests >= 2000


# --- security surfaces: API keys, forged SES events, under-privileged staff -------

# The SNS signer and its certificate server (tests/fixtures_sns.py), as fixtures here.
sns = fixtures_sns.sns
sns_cert_server = fixtures_sns.sns_cert_server

KEY_EXAMPLES = 400
SES_EXAMPLES = 150
STAFF_EXAMPLES = 200
SECURITY: Counter[str] = Counter()  # refusals by kind, for the report line

KEY_KINDS = (
    "valid",
    "missing",
    "malformed",
    "wrong_prefix",
    "unknown",
    "wrong_secret",
    "revoked",
    "expired",
    "out_of_scope",
    "rate_limited",
)
# What a refusal of each kind says (status, words the JSON error contains).
KEY_REFUSALS = {
    "missing": (401, "missing bearer token"),
    "malformed": (401, "malformed API key"),
    "wrong_prefix": (401, "wrong key prefix"),
    "unknown": (401, "invalid API key"),
    "wrong_secret": (401, "invalid API key"),
    "revoked": (401, "revoked"),
    "expired": (401, "expired"),
    "out_of_scope": (403, "lacks the scope"),
    "rate_limited": (429, "rate limit"),
}


@pytest.fixture
def keys(api: Any) -> dict[str, str]:
    """One key of every kind, as the header value a client would send."""
    from django.utils import timezone as dj_timezone

    from jobs.api_keys import create_api_key, revoke_api_key

    def make(name: str, scopes: list[str], **extra: Any) -> Any:
        return create_api_key(name=name, owner="drill", scopes=scopes, actor="drill", **extra)

    valid = make("valid", [f"jobs:run:{PROBE}"])
    revoked = make("revoked", ["*"])
    revoke_api_key(api_key=revoked.api_key, actor="drill")
    expired = make("expired", ["*"], expires_at=dj_timezone.now() - timedelta(seconds=1))
    reader = make("reader", ["jobs:read:nothing.*"])
    limited = make("limited", ["*"], rate_limit_per_minute=1)
    secret = valid.secret
    return {
        "valid": secret,
        "malformed": secret[:-3],
        "wrong_prefix": "bo_test_" + secret[len("bo_live_") :],
        "unknown": "bo_live_" + "Z" * 12 + secret[len("bo_live_") + 12 :],
        "wrong_secret": secret[:-1] + ("A" if secret[-1] != "A" else "B"),
        "revoked": revoked.secret,
        "expired": expired.secret,
        "out_of_scope": reader.secret,
        "rate_limited": limited.secret,
    }


@st.composite
def key_requests(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    kind = draw(st.sampled_from(KEY_KINDS))
    method, path, body = draw(
        st.sampled_from(
            [
                ("POST", f"/api/jobs/{PROBE}/runs", b"{}"),
                ("POST", f"/api/jobs/{REQUIRED}/runs", b'{"params": {"limit": 1}}'),
                ("GET", "/api/jobs", b""),
                ("GET", "/api/jobs/runs/__run__", b""),
            ]
        )
    )
    return kind, method, path, body


@hsettings(max_examples=KEY_EXAMPLES, **SETTINGS)
@given(generated=key_requests())
def test_api_keys_of_every_kind_are_refused_with_a_4xx_naming_the_problem(
    generated: tuple[str, str, str, bytes], api: Any, keys: dict[str, str]
) -> None:
    from django.core.cache import cache

    kind, method, path, body = generated
    if "__run__" in path:
        path = path.replace("__run__", str(JobRun.objects.create(job=PROBE).pk))
    environ = {} if kind == "missing" else {"HTTP_AUTHORIZATION": f"Bearer {keys[kind]}"}
    if kind == "rate_limited":  # its one request of the minute is spent first
        cache.clear()
        Client().generic("GET", "/api/jobs", b"", **environ)
    before = counts(api)
    api_runs = JobRun.objects.filter(trigger="api").count()
    SENT[f"key {method}"] += 1
    response = Client().generic(method, path, body, content_type="application/json", **environ)
    answer = json.loads(response.content)
    STATUSES[response.status_code] += 1

    assert response.status_code < 500, (kind, method, path)
    if kind == "valid":  # jobs:run:<PROBE>: runs and reads PROBE, nothing else
        if path.endswith(f"{REQUIRED}/runs"):
            assert response.status_code == 403, answer
            assert answer["missing_scope"] == f"jobs:run:{REQUIRED}", answer
        elif method == "POST":
            assert response.status_code == 202, answer
            return
        else:
            assert response.status_code == 200, answer
            if "jobs" in answer:
                assert [job["name"] for job in answer["jobs"]] == [PROBE]
            return
    elif kind == "out_of_scope" and path == "/api/jobs":  # jobs:read:nothing.*
        assert response.status_code == 200 and answer["jobs"] == [], answer  # reveals none
    else:
        status, words = KEY_REFUSALS[kind]
        assert response.status_code == status, (kind, path, answer)
        assert words in answer["error"], (kind, answer)
        if status == 429:
            assert 1 <= int(response["Retry-After"]) <= 60
        if status == 403:
            assert answer["missing_scope"], answer
    assert counts(api)[1] == before[1], (kind, path)  # nothing enqueued
    assert JobRun.objects.filter(trigger="api").count() == api_runs
    SECURITY[f"key:{kind}"] += 1


@st.composite
def forged_ses_events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An SNS message that must change nothing, and what is wrong with it."""
    from tests.fixtures_sns import bounce_event, complaint_event

    flaw = draw(
        st.sampled_from(
            ["unsigned", "tampered", "other_topic", "unknown_message", "stranger", "junk_message"]
        )
    )
    make = draw(st.sampled_from([bounce_event, complaint_event]))
    stranger = draw(st.emails()).lower()
    message_id = "drill-sent-message" if flaw != "unknown_message" else draw(utf8_text) or "x"
    recipients = ["customer@acme.example"] + ([stranger] if flaw == "stranger" else [])
    return flaw, {"event": make(message_id, *recipients), "junk": draw(junk_json)}


@pytest.fixture
def sent_email(api: Any) -> Any:
    from notifications.models import OutboundEmail

    return OutboundEmail.objects.create(
        to="customer@acme.example",
        subject="s",
        body_text="b",
        kind="drill",
        dedupe_key="drill-1",
        status="sent",
        sent_at=datetime.now(UTC),
        provider_message_id="drill-sent-message",
    )


@hsettings(max_examples=SES_EXAMPLES, **SETTINGS)
@given(generated=forged_ses_events())
def test_forged_ses_events_change_nothing_and_are_refused_with_a_4xx(
    generated: tuple[str, dict[str, Any]], sns: Any, sent_email: Any
) -> None:
    from notifications.models import SuppressedAddress
    from tests.fixtures_sns import TOPIC

    flaw, parts = generated
    topic = "arn:aws:sns:us-east-1:999999999999:attacker" if flaw == "other_topic" else TOPIC
    message = sns.notification(parts["event"], topic=topic)
    if flaw == "unsigned":
        message.pop("Signature")
    elif flaw == "tampered":
        message["Message"] = json.dumps({**parts["event"], "mail": {"messageId": "other"}})
    elif flaw == "junk_message":
        message = sns.notification({"notificationType": "Bounce", "junk": parts["junk"]})
    SENT["ses POST"] += 1
    response = Client().post("/ses/events/", json.dumps(message), content_type="text/plain")
    STATUSES[response.status_code] += 1

    assert 400 <= response.status_code < 500, (flaw, response.content)
    assert json.loads(response.content)["error"], flaw
    assert not SuppressedAddress.objects.exists(), flaw
    SECURITY[f"ses:{flaw}"] += 1


@pytest.fixture
def underprivileged(api: Any) -> tuple[Client, str]:
    """Staff holding every django_q permission and only view permissions of jobs,
    with CSRF checks on and a token read from a form."""
    import re

    from django.contrib.auth.models import Permission, User

    from jobs.schedules import sync_schedules

    registry.job(SCHEDULED, schedule="0 3 * * *")(required)
    sync_schedules()
    user = User.objects.create_user("qstaff", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_q")
        | Permission.objects.filter(content_type__app_label="jobs", codename__startswith="view_")
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get("/admin/django_q/schedule/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    yield client, token
    registry.unregister(SCHEDULED)


def _staff_targets() -> list[str]:
    return [
        "/admin/django_q/schedule/add/",
        "/admin/django_q/schedule/__schedule__/change/",
        "/admin/django_q/schedule/__schedule__/delete/",
        "/admin/django_q/schedule/",
        "/admin/django_q/failure/",
        "/admin/django_q/success/",
        "/admin/jobs/schedulestate/__state__/change/",
        "/admin/jobs/schedulestate/",
        "/admin/jobs/apikey/add/",
        f"/admin/jobs/job/{SCHEDULED}/run/",
        f"/admin/jobs/job/{SCHEDULED}/pause/",
        f"/admin/jobs/job/{SCHEDULED}/resume/",
    ]


@st.composite
def staff_posts(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    path = draw(st.sampled_from(_staff_targets()))
    fields = {
        "func": draw(st.sampled_from(["os.system", "builtins.exec", "jobs.fanout.run_chunks"])),
        "args": draw(st.sampled_from(["'id'", "('rm -rf /',)", draw(utf8_text)])),
        "hook": draw(st.sampled_from(["", "os.system"])),
        "name": draw(utf8_text) or "x",
        "schedule_type": "I",
        "minutes": "1",
        "repeats": "-1",
        "cron": draw(st.sampled_from(["* * * * *", "*/1 * * * * *", draw(utf8_text)])),
        "scopes_text": "*",
        "owner": "me",
        "reason": "drill",
        "post": "yes",
        "action": draw(
            st.sampled_from(
                [
                    "_superuser_resubmit",
                    "resubmit_task",
                    "delete_selected",
                    "run_now",
                    "pause_schedules",
                ]
            )
        ),
        "_selected_action": ["__any__"],
    }
    return path, fields


@hsettings(max_examples=STAFF_EXAMPLES, **SETTINGS)
@given(generated=staff_posts())
def test_admin_posts_from_under_privileged_staff_change_and_run_nothing(
    generated: tuple[str, dict[str, Any]], underprivileged: tuple[Client, str], api: Any
) -> None:
    from django_q.models import Schedule

    from jobs.models import ApiKey, ScheduleState

    client, token = underprivileged
    path, fields = generated
    state = ScheduleState.objects.select_related("schedule").get(job=SCHEDULED)
    path = path.replace("__schedule__", str(state.schedule_id)).replace("__state__", str(state.pk))
    fields = {
        **fields,
        "csrfmiddlewaretoken": token,
        "_selected_action": [state.pk, state.schedule_id],
    }
    before = (
        list(Schedule.objects.order_by("pk").values_list("pk", "func", "cron", "repeats", "hook")),
        ApiKey.objects.count(),
        state.paused,
        counts(api),
    )
    SENT["staff POST"] += 1
    response = client.post(path, fields)
    ADMIN_STATUSES[response.status_code] += 1

    assert response.status_code < 500, (path, fields)
    assert response.status_code in (200, 302, 403), (path, response.status_code)
    state.refresh_from_db()
    after = (
        list(Schedule.objects.order_by("pk").values_list("pk", "func", "cron", "repeats", "hook")),
        ApiKey.objects.count(),
        state.paused,
        counts(api),
    )
    assert after == before, (path, fields["action"])
    SECURITY[f"staff:{response.status_code}"] += 1


def test_the_security_surfaces_were_attacked(capsys: Any) -> None:
    """Runs after the three generators above."""
    report(
        capsys,
        f"bad input (security): {sum(SECURITY.values())} refused attacks "
        f"{dict(sorted(SECURITY.items()))}; nothing changed, no 5xx",
    )
