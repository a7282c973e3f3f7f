"""Format the invoice of a scored order with ``humanize`` and "mail" it."""

import datetime as dt

import humanize

from fxray import context

order = context.params
amount = float(order["amount"])
currency = order.get("currency", "CHF")
vat = round(amount * float(context.config.get("vat_rate", 0.081)), 2)
total = round(amount + vat, 2)
number = f"INV-{order['order_id']}"
review = float(order["score"]) > float(context.config.get("review_above_score", 0.8))
due = dt.date.today() + dt.timedelta(days=30)

context.log.info("formatting with humanize %s", humanize.__version__)
print(f"{number}, issued {humanize.naturalday(dt.date.today())}, due {humanize.naturaldate(due)}")
print(f"  net    {currency} {humanize.intcomma(amount, 2)}")
print(f"  VAT    {currency} {humanize.intcomma(vat, 2)}")
print(f"  total  {currency} {humanize.intcomma(total, 2)}")
print(f"  risk   {float(order['score']):.3f} (model {order['model']})")
if review:
    context.log.warning("%s goes to manual review (score %s)", number, order["score"])

token = context.secrets["mail_api_token"]
print(f"sending {number} via the mail API with token {token}")  # the platform redacts this

context.events.send(
    "shop.invoice.ready",
    {"order_id": order["order_id"], "invoice": number, "total": total, "review": review},
)
