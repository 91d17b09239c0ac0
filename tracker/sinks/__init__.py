"""Events out (DESIGN §8, docs/events.md): every transition pushed to downstream systems by
named sinks, each a durable consumer of the outbox.

- event.py    the one event body (pure)
- signing.py  Standard Webhooks secrets and signatures (pure)
- policy.py   outcomes, retry schedule, dead letters, slowing down, filters (pure)
- settings.py the [sinks...] configuration: parsing and checks
- store.py    the database side: registration, filling, claiming, recording, status
- webhook.py  a webhook sink's loop          - jetstream.py a NATS JetStream sink's loop
- natslink.py a NATS sink's connection: a bounded first connect, quiet callbacks
- component.py the daemon component that runs them under the supervisor
- cli.py      `tracker sinks status | redrive | enable`

Kept free of imports here: tracker.config_types imports policy.
"""
