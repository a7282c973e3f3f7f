from fxray import context

name = context.params.get("name", "world")
count = context.state.update("greetings", lambda n: (n or 0) + 1)
print(f"Hello, {name}! (greeting number {count})")
context.log.info("greeted %s", name)
context.events.send("demo.greeted", {"name": name, "count": count})
