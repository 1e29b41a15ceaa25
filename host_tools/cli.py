"""The `gridveil` command. Every subcommand has --help; errors are one clear
line on stderr and a non-zero exit code, never a traceback.

Subcommands live with their party: authority_cli, gateway_cli, meter_cli,
customer_cli; the MDMS report, the demo and the benchmark are here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.files import ConfigError

from . import authority_cli, customer_cli, gateway_cli, meter_cli, web_cli
from .cli_common import DEFAULT_HOME, home, sub


def cmd_report(args):
    from authority.client import Authority
    from gateway.config import GatewayHome
    from gateway.store import Store

    from . import report

    store = Store(GatewayHome(home(args) / "gateway").db, readonly=True)
    auth = Authority.local(home(args) / "authority", authority_cli._passphrases(args))
    try:
        rel = report.release_all(store, auth, args.period_days, args.dp)
    finally:
        auth.close()
        store.close()
    print(report.format_demand(rel.aggregates) if rel.aggregates else "no aggregates released")
    print()
    print(report.format_bills(rel.bills, args.period_days) if rel.bills else "no bills released")
    for r in rel.refusals:
        print(f"refused: {r}")


def cmd_demo(args):
    from . import demo

    return 0 if demo.run(Path(args.dir), bits=args.bits, heap=args.heap, serve=args.serve,
                         web_port=args.web_port) else 1


def cmd_bench(args):
    from . import bench

    bench.main(readings=args.readings, bits=args.bits, out=Path(args.out) if args.out else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridveil", description=(
        "GridVeil: privacy-preserving smart metering. Meters send OSCORE-protected readings; the"
        " gateway aggregates them under Paillier encryption; a key authority releases only what"
        " the privacy policy allows."))
    p.add_argument("--home", default=str(DEFAULT_HOME),
                   help="state directory holding authority/, gateway/, meters/ and customers/"
                        " (default: $GRIDVEIL_HOME or ./var/gridveil)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    s = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    authority_cli.register(s)
    gateway_cli.register(s)
    meter_cli.register(s)
    customer_cli.register(s)
    web_cli.register(s)

    x = sub(s, "report", "as the MDMS: release demand and bills through the key authority")
    x.add_argument("--period-days", type=int, default=1, help="billing period in days (default 1)")
    x.add_argument("--dp", action="store_true", help="ask for differentially private aggregates")
    x.add_argument("--passphrase-file", help="passphrase of the key (single-holder mode)")
    x.set_defaults(func=cmd_report)

    x = sub(s, "demo", "end-to-end run on the sample data, with a cross-check")
    x.add_argument("--dir", default="var/demo",
                   help="scratch state directory, wiped at the start (default var/demo)")
    x.add_argument("--bits", type=int, default=2048, help="Paillier key size (default 2048)")
    x.add_argument("--heap", default="64K", help="MicroPython heap per meter")
    x.add_argument("--serve", action="store_true",
                   help="keep serving the dashboard and portal afterwards (Ctrl-C to stop)")
    x.add_argument("--web-port", type=int, default=8080)
    x.set_defaults(func=cmd_demo)

    x = sub(s, "bench", "ingest throughput against a naive baseline")
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
        from host_tools.build import BuildError
        from host_tools.deploy import DeployError
        from host_tools.fleet import FleetError

        known = (ConfigError, StoreError, FleetError, Refusal, BuildError, DeployError, OSError,
                 ValueError)
        if not isinstance(e, known):
            logging.getLogger("gridveil").debug("unexpected error", exc_info=True)
        print(f"gridveil: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, known) else 1


if __name__ == "__main__":
    sys.exit(main())
