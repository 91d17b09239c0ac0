"""The chaos suite's parts (bench/chaos.py is the command): env (cluster, sandbox, daemons),
load (the sending application), consumer (an events reader), checks (judging against the ground
truth), run (one scenario's life), scenarios (the faults), fuzz (hostile input at scale)."""
