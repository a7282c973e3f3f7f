"""Step 2: count the order in the service's state and announce it."""

from fxray import context

order = context.scratch["order"]
total = context.state.update("orders", lambda n: (n or 0) + 1)
context.log.info(
    "accepted order %s (%.2f %s); %d orders so far",
    order["order_id"],
    order["amount"],
    order["currency"],
    total,
)
context.events.send(
    "shop.order.accepted",
    {
        "order_id": order["order_id"],
        "amount": order["amount"],
        "currency": order["currency"],
        "express": order["express"],
    },
)
context.result = {"order_id": order["order_id"], "orders_so_far": total}
