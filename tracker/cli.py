"""The `tracker` command."""
from __future__ import annotations

import argparse
import sys

from tracker import config as config_mod
from tracker import logging as tlog


def _load(args) -> config_mod.Config:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"configuration error:\n{e}", file=sys.stderr)
        raise SystemExit(2)
    tlog.configure(cfg.log.level, cfg.log.format)
    return cfg


def cmd_run(args) -> int:
    from tracker import loop
    from tracker.app import Tracker
    from tracker.run import run_until_signal

    cfg = _load(args)
    for warning in config_mod.warnings(cfg):
        tlog.get_logger("tracker").warning("configuration: " + warning)
    loop.run(run_until_signal(Tracker(cfg)))  # uvloop where installed (tracker.loop)
    return 0


def cmd_migrate(args) -> int:
    from tracker.db.migrate import migrate
    from tracker.db.oneshot import on_database

    cfg = _load(args)
    log = tlog.get_logger("tracker.migrate")

    async def go(conn) -> int:
        applied = await migrate(conn)
        log.info("migrations done", applied=[m.version for m in applied])
        return 0

    return on_database(cfg, "migrate", go)


def cmd_restored(_args) -> int:
    """The release before's step after a restore, kept for runbooks that name it: nothing to do."""
    print("tracker restored: nothing to do: every connection the tracker opens moves its ids past "
          "a restored backup's (deploy/OPERATIONS.md, \"Restoring a backup\"); this command "
          "goes in a later release")
    return 0


def cmd_check_config(args) -> int:
    return config_mod.check_config(args.config)


def cmd_sandbox(args) -> int:
    from tracker.sandbox.__main__ import main as sandbox_main

    return sandbox_main(args.extra) or 0


def cmd_demo(args) -> int:
    from tracker.demo import main as demo_main

    return demo_main(args)


def cmd_replay(args) -> int:
    from tracker.replay import main as replay_main

    return replay_main(args, _load(args))


def cmd_sinks(args) -> int:
    from tracker.sinks.cli import main as sinks_main

    return sinks_main(args, _load(args))


def cmd_consumers(args) -> int:
    from tracker.consumers import main as consumers_main

    return consumers_main(args, _load(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracker", description="SMS delivery tracker")
    parser.add_argument("--config", help="TOML configuration file (default: $TRACKER_CONFIG)")
    # `tracker check-config --config F` as well as `tracker --config F check-config`: SUPPRESS
    # keeps a subcommand without it from overwriting the one given before.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon", parents=[config]).set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="apply database migrations", parents=[config]).set_defaults(func=cmd_migrate)
    sub.add_parser("restored", help="nothing to do any more (ids move by themselves); kept for "
                   "runbooks", parents=[config]).set_defaults(func=cmd_restored)
    sub.add_parser("check-config", help="validate the configuration",
                   parents=[config]).set_defaults(func=cmd_check_config)
    sb = sub.add_parser("sandbox", help="run the fake vendors (options: tracker sandbox --help)",
                        add_help=False)
    sb.set_defaults(func=cmd_sandbox)
    demo = sub.add_parser("demo", help="tracker + sandbox vendors + sample sends, on the embedded database")
    demo.add_argument("--seconds", type=float, default=60.0, help="stop after this long (default 60)")
    demo.add_argument("--rate", type=float, default=5.0, help="sends per second (default 5)")
    demo.set_defaults(func=cmd_demo)
    rp = sub.add_parser("replay", help="re-parse stored raw postbacks and apply them again", parents=[config])
    rp.add_argument("--vendor", help="only this vendor's postbacks")
    rp.add_argument("--since", help="only postbacks received at or after this ISO time")
    rp.set_defaults(func=cmd_replay)
    sk = sub.add_parser("sinks", help="event sinks: status, redrive dead letters, enable after a 410",
                        parents=[config])
    sks = sk.add_subparsers(dest="sinks_command", required=True)
    sks.add_parser("status", help="each sink's position, lag and last error", parents=[config])
    rd = sks.add_parser("redrive", help="send a sink's dead letters again", parents=[config])
    rd.add_argument("name", help="the sink ([sinks.webhooks.NAME] or [sinks.nats.NAME], or one the "
                    "database has)")
    rd.add_argument("--since", help="only events recorded at or after this ISO time")
    sks.add_parser("enable", help="deliver again to a sink disabled by a 410 Gone or paused by its "
                   "receiver, or whose url changed: every event waiting for a retry is due now",
                   parents=[config]).add_argument(
        "name", help="the webhook sink ([sinks.webhooks.NAME], or one the database has)")
    sks.add_parser("forget", help="drop a sink no longer configured: its cursor, deliveries, dead "
                   "letters (refused while a daemon runs it)",
                   parents=[config]).add_argument("name", help="the sink's name")
    sk.set_defaults(func=cmd_sinks)
    co = sub.add_parser("consumers", help="SQL consumers of events: status, register before the first "
                        "read, forget one gone for good", parents=[config])
    cos = co.add_subparsers(dest="consumers_command", required=True)
    cos.add_parser("status", help="each consumer's position, lag and last move", parents=[config])
    cos.add_parser("register", help="make a consumer known: retention keeps its events from now on",
                   parents=[config]).add_argument("name", help="the consumer's name, as given to read_events")
    cos.add_parser("forget", help="drop a consumer's cursor: retention no longer waits for it",
                   parents=[config]).add_argument("name", help="the consumer's name")
    co.set_defaults(func=cmd_consumers)
    args, extra = parser.parse_known_args(argv)
    if args.command != "sandbox" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # the sandbox has options of its own
    try:
        code = args.func(args)
        sys.stdout.flush()  # what is buffered fails here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `tracker check-config | head -2`: its reader went away
        from tracker.db.oneshot import OUTPUT_CLOSED, output_closed

        if output_closed():
            return OUTPUT_CLOSED
        raise


if __name__ == "__main__":
    raise SystemExit(main())
