"""Money as text: positional notation everywhere the proxy prints a cost."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from proxy.formats import decimal_json, decimal_text, write_usage

# (value, text): quantized costs as the cost engine makes them (10 places) and other Decimals
CASES = [
    (Decimal("3.000E-7"), "0.0000003000"),
    (Decimal("0.0000809500"), "0.0000809500"),
    (Decimal("0E-10"), "0.0000000000"),
    (Decimal("1E+3"), "1000"),
    (Decimal("-2.5E-8"), "-0.000000025"),
    (Decimal("12.3400000000"), "12.3400000000"),
]


@pytest.mark.parametrize(("value", "text"), CASES)
def test_decimal_text(value: Decimal, text: str) -> None:
    assert decimal_text(value) == text
    assert Decimal(text) == value


@pytest.mark.parametrize(("value", "text"), CASES)
def test_decimal_json_is_a_positional_number(value: Decimal, text: str) -> None:
    body = orjson.dumps({"cost": decimal_json(value)})
    assert body == b'{"cost":' + text.encode() + b"}"
    assert orjson.loads(body)["cost"] == float(value)


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_usage_reports_print_positional_costs(fmt: str) -> None:
    import io

    out = io.StringIO()
    write_usage(out, [{"tenant": "t", "requests": 1, "cost_usd": Decimal("3.000E-7")}], fmt)
    assert "0.0000003000" in out.getvalue() and "E-7" not in out.getvalue()
