"""The built-in pricing rule written in Python: a crm:rules@0.1.0 pricing-plugin built with
componentize-py. It gives the same answers as the Rust rule (crm_domain::order::quote), which
the tests check, and shows that the interface does not depend on the language a rule is
written in.

Build:  componentize-py -d ../../wit/crm-rules/0.1.0 -w pricing-plugin componentize app -o python_pricing.wasm
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import pricing
from wit_world.imports import types


def _percent(amount: int, rate: int) -> int:
    """amount × rate / 10000, rounded half away from zero."""
    product = amount * rate
    if product >= 0:
        return (product + 5_000) // 10_000
    return -((-product + 5_000) // 10_000)


def _money(text_amount: int) -> str:
    sign = "-" if text_amount < 0 else ""
    whole, cents = divmod(abs(text_amount), 100)
    return f"{sign}{whole}.{cents:02d}"


def _rate(rate: int) -> str:
    whole, frac = divmod(rate, 100)
    if frac == 0:
        return str(whole)
    if frac % 10 == 0:
        return f"{whole}.{frac // 10}"
    return f"{whole}.{frac:02d}"


def _describe(discount) -> str:
    if isinstance(discount, pricing.Discount_Percentage):
        return f"{_rate(discount.value)} %"
    return _money(discount.value)


def _take(discount, base: int):
    """What a discount takes off base, or None when it is out of range."""
    if isinstance(discount, pricing.Discount_Percentage):
        return _percent(base, discount.value) if 0 <= discount.value <= 10_000 else None
    return discount.value if 0 <= discount.value <= base else None


def _invalid(pointer: str, detail: str):
    return Err(types.RuleError_InvalidInput([types.FieldProblem(pointer, detail)]))


I64 = 2**63


def _check(value: int) -> int:
    if not -I64 <= value < I64:
        raise Err(types.RuleError_Overflow())
    return value


def _share(amount: int, nets: list) -> list:
    """Splits amount over the lines in proportion to their net amounts, exactly."""
    total = sum(nets)
    if total == 0 or amount == 0:
        return [0] * len(nets)
    parts = [(amount * n // total, amount * n % total) for n in nets]
    left = amount - sum(q for q, _ in parts)
    order = sorted(range(len(parts)), key=lambda i: (-parts[i][1], i))
    shares = [q for q, _ in parts]
    for i in order[:left]:
        shares[i] += 1
    return shares


class Pricing(exports.Pricing):
    def price(self, order: pricing.Order) -> pricing.Quote:
        if order.tax_rate is not None and not 0 <= order.tax_rate <= 10_000:
            raise _invalid("/tax-rate", "a tax rate must be between 0 and 100 percent")
        explanation = []
        lines = []
        subtotal = 0
        for i, line in enumerate(order.lines):
            if line.quantity < 1 or line.unit_price < 0:
                raise _invalid(f"/lines/{i}", f"line {i} needs a positive quantity and a non-negative unit price")
            if line.tax_rate is not None and not 0 <= line.tax_rate <= 10_000:
                raise _invalid(f"/lines/{i}/tax-rate", "a tax rate must be between 0 and 100 percent")
            gross = _check(line.quantity * line.unit_price)
            discount = 0
            if line.discount is not None:
                discount = _take(line.discount, gross)
                if discount is None:
                    raise _invalid(f"/lines/{i}/discount", "the line's discount is out of range")
                explanation.append(f"line {i + 1}: discount {_describe(line.discount)} = -{_money(discount)}")
            net = gross - discount
            subtotal = _check(subtotal + net)
            lines.append(pricing.PricedLine(gross=gross, discount=discount, net=net, tax=0))
        order_discount = 0
        if order.discount is not None:
            order_discount = _take(order.discount, subtotal)
            if order_discount is None:
                raise _invalid("/discount", "the discount is out of range or larger than the subtotal")
            explanation.append(f"order discount {_describe(order.discount)} = -{_money(order_discount)}")
        shares = _share(order_discount, [l.net for l in lines])
        tax = 0
        for i, (priced, line) in enumerate(zip(lines, order.lines)):
            rate = line.tax_rate if line.tax_rate is not None else order.tax_rate
            if rate is None:
                continue
            base = priced.net - shares[i]
            priced.tax = _percent(base, rate)
            if rate != 0:
                explanation.append(f"line {i + 1}: tax {_rate(rate)} % on {_money(base)} = {_money(priced.tax)}")
            tax = _check(tax + priced.tax)
        total = _check(subtotal - order_discount + tax)
        return pricing.Quote(
            lines=lines, subtotal=subtotal, discount=order_discount, tax=tax, total=total, explanation=explanation
        )
