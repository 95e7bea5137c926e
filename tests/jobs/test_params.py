from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from jobs.params import ParamError, coerce_params, params_from_signature


def sample(
    ctx,
    *,
    count: int,
    ratio: float = 0.5,
    force: bool = False,
    day: date | None = None,
    at: datetime | None = None,
    amount: Decimal = Decimal("0"),
    label: str = "x",
):
    pass


PARAMS = params_from_signature(sample)


def test_signature_gives_names_types_and_defaults():
    described = {p.name: p.describe() for p in PARAMS}
    assert described["count"] == {"name": "count", "type": "int", "required": True, "default": None}
    assert described["force"]["default"] is False
    assert described["day"]["type"] == "date"


def test_strings_from_the_cli_are_coerced_to_declared_types():
    values = coerce_params(
        PARAMS,
        {
            "count": "3",
            "ratio": "0.25",
            "force": "true",
            "day": "2026-01-31",
            "at": "2026-11-01T10:00Z",
            "amount": "12.50",
        },
    )
    assert values == {
        "count": 3,
        "ratio": 0.25,
        "force": True,
        "day": date(2026, 1, 31),
        "at": datetime(2026, 11, 1, 10, tzinfo=UTC),
        "amount": Decimal("12.50"),
    }


def test_unknown_parameter_is_refused_naming_it():
    with pytest.raises(ParamError, match="unknown parameter 'colour'") as exc:
        coerce_params(PARAMS, {"count": 1, "colour": "red"})
    assert exc.value.param == "colour"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("count", "three"),
        ("count", True),
        ("count", 1.5),
        ("force", "maybe"),
        ("ratio", "nan"),
        ("day", "31/01/2026"),
        ("label", 5),
        ("amount", "1e999999x"),
    ],
)
def test_ill_typed_parameter_is_refused_naming_it(name, value):
    with pytest.raises(ParamError, match=f"parameter '{name}' must be"):
        coerce_params(PARAMS, {"count": 1, name: value})


def test_missing_required_parameter_is_refused():
    with pytest.raises(ParamError, match="missing required parameter 'count'"):
        coerce_params(PARAMS, {})


def test_null_is_accepted_only_for_optional_parameters():
    assert coerce_params(PARAMS, {"count": 1, "day": None}) == {"count": 1, "day": None}
    with pytest.raises(ParamError, match="may not be null"):
        coerce_params(PARAMS, {"count": None})


def test_params_must_be_an_object():
    with pytest.raises(ParamError, match="must be an object"):
        coerce_params(PARAMS, ["count", 1])


def test_positional_job_parameters_are_rejected_at_declaration():
    def bad(ctx, count: int):
        pass

    with pytest.raises(TypeError, match="keyword-only"):
        params_from_signature(bad)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, "9" * 30, 1e30])
def test_integers_beyond_64_bits_are_refused(value):
    with pytest.raises(ParamError, match="'count' must be an integer"):
        coerce_params(PARAMS, {"count": value})


def test_64_bit_bounds_are_accepted():
    assert coerce_params(PARAMS, {"count": 2**63 - 1}) == {"count": 2**63 - 1}
    assert coerce_params(PARAMS, {"count": str(-(2**63))}) == {"count": -(2**63)}


def test_bounded_parameters_are_refused_out_of_range_and_described():
    from typing import Annotated

    from jobs.params import Range

    def bounded(ctx, *, days: Annotated[int, Range(ge=0, le=30)] | None = None):
        pass

    params = params_from_signature(bounded)
    assert coerce_params(params, {"days": "30"}) == {"days": 30}
    assert coerce_params(params, {"days": None}) == {"days": None}
    with pytest.raises(ParamError, match="'days' must be at least 0, got -1"):
        coerce_params(params, {"days": -1})
    with pytest.raises(ParamError, match="'days' must be at most 30, got 31"):
        coerce_params(params, {"days": 31})
    assert params[0].describe()["min"] == 0 and params[0].describe()["max"] == 30
