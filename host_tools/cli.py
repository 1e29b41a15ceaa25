"""The `gridveil` command. Every subcommand has --help; errors are one clear
line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from common.files import ConfigError

DEFAULT_HOME = Path(os.environ.get("GRIDVEIL_HOME", "var/gridveil"))


def _home(args) -> Path:
    return Path(args.home)


def cmd_authority_init(args):
    from . import provision

    kid = provision.init_authority(_home(args) / "authority", args.bits, args.k)
    print(f"key authority ready in {_home(args) / 'authority'}: {args.bits}-bit Paillier key {kid},"
          f" k = {args.k}")


def cmd_authority_trust(args):
    from . import provision

    provision.trust_gateway(_home(args) / "authority", _home(args) / "gateway")
    print("the authority now accepts records signed by this gateway")


def cmd_authority_release(args):
    from authority.service import Authority
    from gateway.config import GatewayHome
    from gateway.store import Store

    from . import report

    store = Store(GatewayHome(_home(args) / "gateway").db, readonly=True)
    auth = Authority(_home(args) / "authority")
    rel = report.release_all(store, auth, round(args.price * 1000))
    print(report.format_demand(rel.aggregates) if rel.aggregates else "no aggregates released")
    print()
    print(report.format_bills(rel.bills) if rel.bills else "no bills released")
    for r in rel.refusals:
        print(f"refused: {r}")


def cmd_authority_log(args):
    from authority.ledger import Ledger
    from authority.service import AuthorityHome

    ledger = Ledger(AuthorityHome(_home(args) / "authority").ledger)
    if not args.verify_only:
        for e in ledger.entries():
            verdict = "GRANTED" if e["granted"] else "REFUSED"
            print(f"{e['n']:>5} {verdict} {e['kind']:<9} {e['subject']:<40} {e['reason']}")
    ok, msg = ledger.verify()
    print(("audit log OK: " if ok else "audit log BROKEN: ") + msg)
    return 0 if ok else 1


def cmd_gateway_init(args):
    from gateway.config import GatewayConfig

    from . import provision

    cfg = GatewayConfig(bind=args.bind, port=args.port, interval_s=args.interval,
                        grace_s=args.grace, clock=args.clock)
    pub = Path(args.paillier_pub) if args.paillier_pub else \
        _home(args) / "authority" / "paillier.pub.json"
    h = provision.init_gateway(_home(args) / "gateway", pub, cfg)
    print(f"gateway ready in {h.path}; listens on {cfg.bind}:{cfg.port}")


def cmd_gateway_run(args):
    from gateway.server import serve

    asyncio.run(serve(_home(args) / "gateway", args.port))


def cmd_gateway_seal(args):
    from gateway.config import GatewayHome
    from gateway.seal import seal
    from gateway.signing import load_private
    from gateway.store import Store

    h = GatewayHome(_home(args) / "gateway")
    cfg = h.load_config()
    r = seal(Store(h.db), load_private(h.signing_key), cfg.interval_s, cfg.grace_s, cfg.clock,
             seal_all=args.all, bill_grace_s=cfg.bill_grace_s)
    print(f"sealed {r.aggregates} aggregates, signed {r.bill_days} bill days")


def cmd_gateway_status(args):
    from gateway.config import GatewayHome
    from gateway.store import Store

    store = Store(GatewayHome(_home(args) / "gateway").db, readonly=True)
    print(f"{'meter':<8}{'nbh':<10}{'last seq':>9}{'stored':>8}{'dups':>6}{'late':>6}"
          f"{'backlog':>8}  fw")
    for m in store.meters():
        print(f"{m['meter_id']:<8}{m['neighbourhood']:<10}{m['last_seq']:>9}{m['accepted']:>8}"
              f"{m['duplicates']:>6}{m['late']:>6}{m['backlog'] if m['backlog'] is not None else '-':>8}"
              f"  {m['fw_version'] or '-'}")
    rej = store.rejects()
    print("rejected messages: " + (", ".join(f"{m or '?'}/{r}={n}" for (m, r), n in
                                             sorted(rej.items())) or "none"))


def cmd_provision(args):
    from . import provision

    extra = {}
    if args.replay:
        if not Path(args.replay).exists():
            raise ConfigError(f"replay file not found: {args.replay}")
        extra["replay"] = {"file": str(Path(args.replay).resolve()), "speed": args.speed}
    out = Path(args.out) if args.out else _home(args) / "meters" / args.meter_id
    provision.provision_meter(_home(args) / "gateway", args.meter_id, args.neighbourhood, out,
                              customer=args.customer, host=args.gateway_host, extra=extra)
    print(f"meter {args.meter_id} registered in neighbourhood {args.neighbourhood};"
          f" device files in {out} (secrets.json is owner-only; keep it off shared disks)")


def cmd_fleet(args):
    from . import fleet

    root = Path(args.meters) if args.meters else _home(args) / "meters"
    dirs = sorted(d for d in root.iterdir() if (d / "settings.json").exists()) \
        if root.is_dir() else []
    if not dirs:
        raise ConfigError(f"no provisioned meters under {root}")
    print(f"running {len(dirs)} meters (heap {args.heap})")
    runs = fleet.run_fleet(dirs, heap=args.heap, timeout=args.timeout,
                           progress=lambda d, n: print(f"\r  finished {d}/{n}", end="", flush=True))
    print()
    bad = 0
    for r in runs:
        (r.meter_dir / "console.log").write_text(r.output)
        status = "ok" if r.returncode == 0 else f"exit {r.returncode}"
        bad += r.returncode != 0
        print(f"  {r.meter_dir.name}: {status} (console: {r.meter_dir / 'console.log'})")
    return 1 if bad else 0


def cmd_sample_data(args):
    from . import sampledata

    paths = sampledata.generate(Path(args.out), args.meters, days=args.days, seed=args.seed)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_demo(args):
    from . import demo

    ok = demo.run(Path(args.dir), bits=args.bits, heap=args.heap)
    return 0 if ok else 1


def cmd_bench(args):
    from . import bench

    bench.main(readings=args.readings, bits=args.bits, out=Path(args.out) if args.out else None)


def _sub(sub, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help opens with the same one-line summary."""
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridveil", description=(
        "GridVeil: privacy-preserving smart metering. Meters send OSCORE-protected readings; the"
        " gateway aggregates them under Paillier encryption; a key authority releases only what"
        " the privacy policy allows."))
    p.add_argument("--home", default=str(DEFAULT_HOME),
                   help="state directory holding authority/, gateway/ and meters/"
                        " (default: $GRIDVEIL_HOME or ./var/gridveil)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = _sub(sub, "authority", "key authority: keys, releases, audit log")
    asub = a.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = _sub(asub, "init", "generate the Paillier key pair and the policy")
    x.add_argument("--bits", type=int, default=2048, help="Paillier modulus size (default 2048)")
    x.add_argument("--k", type=int, default=5, help="minimum contributors per aggregate (>= 3)")
    x.set_defaults(func=cmd_authority_init)
    x = _sub(asub, "trust-gateway", "accept records signed by the gateway in --home")
    x.set_defaults(func=cmd_authority_trust)
    x = _sub(asub, "release", "release every sealed aggregate and signed bill day")
    x.add_argument("--price", type=float, default=25.0, help="flat tariff in ct/kWh (default 25)")
    x.set_defaults(func=cmd_authority_release)
    x = _sub(asub, "log", "print the audit log and verify its hash chain")
    x.add_argument("--verify-only", action="store_true", help="only verify the chain")
    x.set_defaults(func=cmd_authority_log)

    g = _sub(sub, "gateway", "gateway daemon: init, run, seal, status")
    gsub = g.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = _sub(gsub, "init", "create the gateway's keys, database and settings")
    x.add_argument("--paillier-pub", help="the authority's public key file"
                                          " (default: <home>/authority/paillier.pub.json)")
    x.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    x.add_argument("--port", type=int, default=5683, help="UDP port (default 5683)")
    x.add_argument("--interval", type=int, default=900, help="reading interval in s")
    x.add_argument("--grace", type=int, default=900, help="seconds to wait before sealing")
    x.add_argument("--clock", choices=("wall", "data"), default="wall",
                   help="seal by the wall clock, or by the replayed data's own time")
    x.set_defaults(func=cmd_gateway_init)
    x = _sub(gsub, "run", "serve meters until SIGINT or SIGTERM")
    x.add_argument("--port", type=int, help="override the configured port")
    x.set_defaults(func=cmd_gateway_run)
    x = _sub(gsub, "seal", "seal what is due now")
    x.add_argument("--all", action="store_true", help="seal every open accumulator now")
    x.set_defaults(func=cmd_gateway_seal)
    x = _sub(gsub, "status", "fleet health and rejected-message counters")
    x.set_defaults(func=cmd_gateway_status)

    x = _sub(sub, "provision", "register a meter and write its device files")
    x.add_argument("meter_id")
    x.add_argument("--neighbourhood", required=True)
    x.add_argument("--customer")
    x.add_argument("--out", help="device directory (default <home>/meters/<meter_id>)")
    x.add_argument("--gateway-host", help="address the meter sends to")
    x.add_argument("--replay", help="consumption file to replay (emulator board)")
    x.add_argument("--speed", type=int, default=0,
                   help="replay speed-up over real time; 0 = as fast as possible")
    x.set_defaults(func=cmd_provision)

    x = _sub(sub, "fleet", "run every provisioned meter on the MicroPython Unix port")
    x.add_argument("--meters", help="directory of meter directories (default <home>/meters)")
    x.add_argument("--heap", default="64K", help="MicroPython heap per meter (default 64K)")
    x.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    x.set_defaults(func=cmd_fleet)

    x = _sub(sub, "report", "as the MDMS: release and print demand and bills")
    x.add_argument("--price", type=float, default=25.0, help="flat tariff in ct/kWh")
    x.set_defaults(func=cmd_authority_release)

    x = _sub(sub, "sample-data", "generate synthetic household consumption files")
    x.add_argument("--out", default="data/sample")
    x.add_argument("--meters", type=int, default=10)
    x.add_argument("--days", type=int, default=1)
    x.add_argument("--seed", type=int, default=2026)
    x.set_defaults(func=cmd_sample_data)

    x = _sub(sub, "demo", "end-to-end run on the sample data, with a cross-check")
    x.add_argument("--dir", default="var/demo",
                   help="scratch state directory, wiped at the start (default var/demo)")
    x.add_argument("--bits", type=int, default=2048, help="Paillier key size (default 2048)")
    x.add_argument("--heap", default="64K", help="MicroPython heap per meter")
    x.set_defaults(func=cmd_demo)

    x = _sub(sub, "bench", "ingest throughput against a naive baseline")
    x.add_argument("--readings", type=int, default=400)
    x.add_argument("--bits", type=int, default=2048)
    x.add_argument("--out", help="also write the results as markdown to this file")
    x.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("coap-server").setLevel(logging.WARNING)
        logging.getLogger("coap").setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one clear line, never a traceback
        from authority.policy import Refusal
        from gateway.store import StoreError
        from host_tools.fleet import FleetError

        known = (ConfigError, StoreError, FleetError, Refusal, OSError, ValueError)
        if not isinstance(e, known):
            logging.getLogger("gridveil").debug("unexpected error", exc_info=True)
        print(f"gridveil: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, known) else 1


if __name__ == "__main__":
    sys.exit(main())
