"""The `gridveil` command. Every subcommand has --help; errors are one clear
line on stderr and a non-zero exit code, never a traceback.

Subcommands live with their party: holder_cli (key holders and the
dealer), gateway_cli, meter_cli, mdms_cli, customer_cli. Each runs as one
party, in that party's own home (--home); the demo and the benchmark are
here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common import LOG_FORMAT
from common.files import ConfigError

from . import customer_cli, fleet, gateway_cli, holder_cli, mdms_cli, meter_cli
from .cli_common import DEFAULT_HOME, sub


def cmd_demo(args):
    from . import demo

    return 0 if demo.run(Path(args.dir), bits=args.bits, heap=args.heap, serve=args.serve,
                         web_port=args.web_port) else 1


def cmd_bench(args):
    out = Path(args.out) if args.out else None
    if args.scale:
        from . import benchscale

        sizes = tuple(int(x) for x in (args.sizes or "10000").split(","))
        benchscale.main(sizes=sizes, days=args.days, out=out)
        return
    if args.scaling:
        from . import scalebench

        sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else scalebench.SIZES
        scalebench.main(bits=args.bits, sizes=sizes, out=out)
        return
    from . import bench

    bench.main(readings=args.readings, bits=args.bits, out=out)


def cmd_pageweight(args):
    from . import pageweight

    return pageweight.run(Path(args.out) if args.out else None, bits=args.bits)


def cmd_flood(args):
    from . import flood
    from .demo import SAMPLE_DIR

    res = flood.run(Path(args.dir), sorted(SAMPLE_DIR.glob("household*.csv")),
                    seconds=args.seconds, rate=args.rate, after=args.after)
    if args.out:
        flood.write(Path(args.out), res)
        print(f"written to {args.out}")
    return 0 if res["alive"] and not res["failed"] else 1


def cmd_soak(args):
    from . import soak
    from .demo import SAMPLE_DIR

    files = sorted(SAMPLE_DIR.glob("household*.csv"))[:args.meters]
    res = soak.run(Path(args.dir), files, seconds=args.seconds, seed=args.seed, bits=args.bits)
    print(res.summary())
    print(res.cross_check)
    for p in res.problems:
        print("PROBLEM: " + p)
    print("SOAK OK" if res.ok else "SOAK FAILED")
    return 0 if res.ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridveil", description=(
        "GridVeil: privacy-preserving smart metering. Meters send OSCORE-protected readings; the"
        " gateway aggregates them under Paillier encryption; a key authority releases only what"
        " the privacy policy allows."))
    p.add_argument("--home", default=str(DEFAULT_HOME),
                   help="the home directory of the party this command runs as: a key holder,"
                        " a gateway or the MDMS (default: $GRIDVEIL_HOME or ./var/gridveil)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    s = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    holder_cli.register(s)
    gateway_cli.register(s)
    meter_cli.register(s)
    mdms_cli.register(s)
    customer_cli.register(s)

    x = sub(s, "demo", "end-to-end run on the sample data, with a cross-check")
    x.add_argument("--dir", default="var/demo",
                   help="scratch directory for every party's home, wiped at the start"
                        " (default var/demo)")
    x.add_argument("--bits", type=int, default=2048, help="Paillier key size (default 2048)")
    x.add_argument("--heap", default=fleet.HEAP, help="MicroPython heap per meter")
    x.add_argument("--serve", action="store_true",
                   help="keep serving the dashboard and portal afterwards (Ctrl-C to stop)")
    x.add_argument("--web-port", type=int, default=8080)
    x.set_defaults(func=cmd_demo)

    x = sub(s, "bench", "ingest throughput against a naive baseline")
    x.add_argument("--readings", type=int, default=400)
    x.add_argument("--bits", type=int, default=2048)
    x.add_argument("--out", help="also write the results as markdown to this file")
    x.add_argument("--scaling", action="store_true",
                   help="instead, the scaling table: 10, 100 and 1,000 meters, one day and"
                        " seven, database size, sealing, release, memory (about 15 minutes)")
    x.add_argument("--scale", action="store_true",
                   help="instead, the MDMS and both holders at a fleet's scale on a 3-node Citus"
                        " cluster, synthetic signed records, day after day (needs Citus)")
    x.add_argument("--days", type=int, default=2, help="with --scale: days of history (default 2)")
    x.add_argument("--sizes", help="with --scaling: fleet sizes, comma-separated"
                                   " (default 10,100,1000); with --scale: meters (default 10000)")
    x.set_defaults(func=cmd_bench)

    x = sub(s, "pageweight", "bytes the analyst page and the portal take on first and repeat"
                             " load, in headless Chromium")
    x.add_argument("--bits", type=int, default=2048, help="Paillier key size of the demo")
    x.add_argument("--out", help="write the results into this markdown file (between markers)")
    x.set_defaults(func=cmd_pageweight)

    x = sub(s, "flood", "the gateway's memory under a flood of invalid datagrams")
    x.add_argument("--dir", default="var/flood", help="scratch directory, wiped at the start")
    x.add_argument("--seconds", type=float, default=300, help="how long to flood (default 300)")
    x.add_argument("--rate", type=int, default=1000, help="datagrams a second (default 1000)")
    x.add_argument("--after", type=float, default=60,
                   help="seconds to watch after the flood (default 60)")
    x.add_argument("--out", help="write the results into this markdown file (between markers)")
    x.set_defaults(func=cmd_flood)

    x = sub(s, "soak", "meters and gateway killed at random; then everything checked to the Wh")
    x.add_argument("--dir", default="var/soak", help="scratch directory, wiped at the start")
    x.add_argument("--seconds", type=float, default=180, help="how long (default 180)")
    x.add_argument("--meters", type=int, default=10, help="emulated meters, 5..10 (default 10)")
    x.add_argument("--seed", type=int, help="random seed, to repeat a run")
    x.add_argument("--bits", type=int, default=1024,
                   help="Paillier key size (default 1024: the soak tests crashes, not keys)")
    x.set_defaults(func=cmd_soak)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=LOG_FORMAT)
    if not args.verbose:
        logging.getLogger("coap-server").setLevel(logging.WARNING)
        logging.getLogger("coap").setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one clear line, never a traceback
        from common.errors import Refusal
        from gateway.store import StoreError
        from host_tools.build import BuildError
        from host_tools.deploy import DeployError
        from host_tools.fleet import FleetError
        from host_tools.site import SiteError
        from mdms.db import DbError

        known = (ConfigError, StoreError, FleetError, Refusal, BuildError, DeployError, OSError,
                 ValueError, SiteError, DbError)
        if not isinstance(e, known):
            logging.getLogger("gridveil").debug("unexpected error", exc_info=True)
        print(f"gridveil: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, known) else 1


if __name__ == "__main__":
    sys.exit(main())
