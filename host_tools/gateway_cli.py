"""`gridveil gateway ...` and `gridveil tariff ...`."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from common.files import ConfigError

from .cli_common import home, sub


def cmd_init(args):
    from authority import setup
    from gateway.config import GatewayConfig

    from . import provision

    cfg = GatewayConfig(bind=args.bind, port=args.port, interval_s=args.interval,
                        grace_s=args.grace, clock=args.clock)
    pub = Path(args.paillier_pub) if args.paillier_pub else \
        setup.public_key_file(home(args) / "authority")
    h = provision.init_gateway(home(args) / "gateway", pub, cfg)
    print(f"gateway ready in {h.path}; listens on {cfg.bind}:{cfg.port}")


def cmd_rekey(args):
    from authority import setup

    from . import provision

    try:
        day = dt.date.fromisoformat(args.from_day)
    except ValueError:
        raise ConfigError(f"--from-day must be a date like 2026-12-01, not {args.from_day!r}") \
            from None
    pub = Path(args.paillier_pub) if args.paillier_pub else \
        setup.public_key_file(home(args) / "authority")
    kid = provision.rekey_gateway(home(args) / "gateway", pub,
                                  (day - dt.date(1970, 1, 1)).days)
    print(f"readings from {day} on are encrypted under key epoch {kid}; restart the gateway")


def cmd_run(args):
    from gateway.server import serve

    asyncio.run(serve(home(args) / "gateway", args.port))


def cmd_seal(args):
    from gateway.config import GatewayHome
    from gateway.seal import seal
    from gateway.signing import load_private
    from gateway.store import Store

    h = GatewayHome(home(args) / "gateway")
    cfg = h.load_config()
    r = seal(Store(h.db), load_private(h.signing_key), cfg.interval_s, cfg.grace_s, cfg.clock,
             seal_all=args.all, bill_grace_s=cfg.bill_grace_s)
    print(f"sealed {r.aggregates} aggregates, signed {r.bill_days} bill days")


def cmd_status(args):
    from gateway.config import GatewayHome
    from gateway.store import Store

    store = Store(GatewayHome(home(args) / "gateway").db, readonly=True)
    print(f"{'meter':<8}{'nbh':<10}{'last seq':>9}{'stored':>8}{'dups':>6}{'late':>6}"
          f"{'backlog':>8}  fw")
    for m in store.meters():
        print(f"{m['meter_id']:<8}{m['neighbourhood']:<10}{m['last_seq']:>9}{m['accepted']:>8}"
              f"{m['duplicates']:>6}{m['late']:>6}{m['backlog'] if m['backlog'] is not None else '-':>8}"
              f"  {m['fw_version'] or '-'}")
    rej = store.rejects()
    print("rejected messages: " + (", ".join(f"{m or '?'}/{r}={n}" for (m, r), n in
                                             sorted(rej.items())) or "none"))


def cmd_tariff_add(args):
    from . import provision

    tid = provision.add_tariff(home(args) / "gateway", Path(args.file))
    print(f"tariff {tid} added; assign it with `gridveil provision ... --tariff {tid}`")


def register(subparsers) -> None:
    g = sub(subparsers, "gateway", "gateway daemon: init, run, seal, status, rekey")
    s = g.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "init", "create the gateway's keys, database and settings")
    x.add_argument("--paillier-pub", help="the authority's public key file"
                                          " (default: the authority's current epoch in --home)")
    x.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    x.add_argument("--port", type=int, default=5683, help="UDP port (default 5683)")
    x.add_argument("--interval", type=int, default=900, help="reading interval in s")
    x.add_argument("--grace", type=int, default=900, help="seconds to wait before sealing")
    x.add_argument("--clock", choices=("wall", "data"), default="wall",
                   help="seal by the wall clock, or by the replayed data's own time")
    x.set_defaults(func=cmd_init)
    x = sub(s, "run", "serve meters until SIGINT or SIGTERM")
    x.add_argument("--port", type=int, help="override the configured port")
    x.set_defaults(func=cmd_run)
    x = sub(s, "seal", "seal what is due now")
    x.add_argument("--all", action="store_true", help="seal every open accumulator now")
    x.set_defaults(func=cmd_seal)
    x = sub(s, "status", "fleet health and rejected-message counters")
    x.set_defaults(func=cmd_status)
    x = sub(s, "rekey", "encrypt readings from a future day on under a new key epoch")
    x.add_argument("--from-day", required=True, help="first UTC day of the new epoch, YYYY-MM-DD")
    x.add_argument("--paillier-pub", help="the new public key (default: the authority's current)")
    x.set_defaults(func=cmd_rekey)

    t = sub(subparsers, "tariff", "time-of-use tariffs (bands by weekday and hour)")
    s = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "add", "add or replace a tariff from a JSON file (see docs/privacy.md)")
    x.add_argument("file")
    x.set_defaults(func=cmd_tariff_add)
