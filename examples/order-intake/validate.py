"""Step 1: check the order in the event and keep a cleaned copy for the next step."""

from fxray import context

params = context.params
problems = []

order_id = str(params.get("order_id") or "").strip()
if not order_id:
    problems.append("order_id is missing")

try:
    amount = round(float(params.get("amount")), 2)
except (TypeError, ValueError):
    amount = None
    problems.append(f"amount must be a number, got {params.get('amount')!r}")
limit = context.config.get("max_amount", 10_000)
if amount is not None and amount <= 0:
    problems.append(f"amount must be greater than 0, got {amount}")
elif amount is not None and amount > limit:
    problems.append(f"amount {amount} is over the limit of {limit}")

items = params.get("items") or []  # manual runs have no item list
if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("sku") for i in items):
    problems.append("items must be a list of objects with a 'sku'")
    items = []

if problems:
    raise ValueError(f"order {order_id or '?'} rejected: " + "; ".join(problems))

context.scratch["order"] = {
    "order_id": order_id,
    "amount": amount,
    "currency": context.config.get("currency", "CHF"),
    "items": sum(int(i.get("qty", 1)) for i in items),
    "express": bool(params.get("express", False)),
}
context.log.info("order %s is valid: %.2f, %d item(s)", order_id, amount, len(items))
