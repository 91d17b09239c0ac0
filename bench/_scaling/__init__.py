"""The scaling bench's parts (bench/scaling.py is the command): common (cluster, meter, waits),
life (writes per message), replicas (1 -> 2 -> 3 daemons), consumers (NATS vs SQL readers),
standby (views on a streaming standby)."""
