"""Model v1: orders above a fixed amount threshold are risky, the rest scale linearly."""

from fxray import context

order = context.params
amount = float(order["amount"])
threshold = float(context.config.get("threshold", 500))

score = 0.9 if amount > threshold else round(0.5 * amount / threshold, 3)
context.log.info("order %s: amount %.2f -> score %.3f (v1)", order["order_id"], amount, score)
context.events.send(
    "shop.order.scored",
    {
        "order_id": order["order_id"],
        "amount": amount,
        "currency": order.get("currency", "CHF"),
        "score": score,
        "model": "v1",
    },
)
