"""Model v2: a logistic curve over the amount, plus a penalty for express delivery."""

import math

from fxray import context

order = context.params
amount = float(order["amount"])
midpoint = float(context.config.get("midpoint", 400))
spread = float(context.config.get("spread", 150))

score = 1.0 / (1.0 + math.exp(-(amount - midpoint) / spread))
if order.get("express"):
    score = min(1.0, score + float(context.config.get("express_penalty", 0.1)))
score = round(score, 3)

context.log.info("order %s: amount %.2f -> score %.3f (v2)", order["order_id"], amount, score)
context.events.send(
    "shop.order.scored",
    {
        "order_id": order["order_id"],
        "amount": amount,
        "currency": order.get("currency", "CHF"),
        "score": score,
        "model": "v2",
    },
)
