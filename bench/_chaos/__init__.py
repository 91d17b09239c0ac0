"""The chaos suite's parts (bench/chaos.py is the command): env (cluster, sandbox, daemons),
spec (sizes, shared settings, results), load (the sending application), consumer (an events
reader), checks (judging against the ground truth), run (one scenario's life), scenarios (the
faults), fuzz, fuzz_gen and fuzz_rows (hostile input at scale)."""
