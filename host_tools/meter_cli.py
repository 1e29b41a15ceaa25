"""`gridveil provision`, `fleet` and `sample-data`: the meters."""

from __future__ import annotations

from pathlib import Path

from common.files import ConfigError

from .cli_common import home, sub


def cmd_provision(args):
    from . import provision

    extra = {}
    if args.replay:
        if not Path(args.replay).exists():
            raise ConfigError(f"replay file not found: {args.replay}")
        extra["replay"] = {"file": str(Path(args.replay).resolve()), "speed": args.speed}
    out = Path(args.out) if args.out else home(args) / "meters" / args.meter_id
    provision.provision_meter(home(args) / "gateway", args.meter_id, args.neighbourhood, out,
                              customer_id=args.customer, tariff_id=args.tariff,
                              host=args.gateway_host, extra=extra)
    print(f"meter {args.meter_id} registered in neighbourhood {args.neighbourhood};"
          f" device files in {out} (secrets.json is owner-only; keep it off shared disks)")


def cmd_fleet(args):
    from . import fleet

    root = Path(args.meters) if args.meters else home(args) / "meters"
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


def register(subparsers) -> None:
    x = sub(subparsers, "provision", "register a meter and write its device files")
    x.add_argument("meter_id")
    x.add_argument("--neighbourhood", required=True)
    x.add_argument("--customer", help="customer id (create it first with `gridveil customer"
                                      " create`); the gateway seals readings for them")
    x.add_argument("--tariff", default="flat", help="tariff id (default: flat)")
    x.add_argument("--out", help="device directory (default <home>/meters/<meter_id>)")
    x.add_argument("--gateway-host", help="address the meter sends to")
    x.add_argument("--replay", help="consumption file to replay (emulator board)")
    x.add_argument("--speed", type=int, default=0,
                   help="replay speed-up over real time; 0 = as fast as possible")
    x.set_defaults(func=cmd_provision)

    x = sub(subparsers, "fleet", "run every provisioned meter on the MicroPython Unix port")
    x.add_argument("--meters", help="directory of meter directories (default <home>/meters)")
    x.add_argument("--heap", default="64K", help="MicroPython heap per meter (default 64K)")
    x.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    x.set_defaults(func=cmd_fleet)

    x = sub(subparsers, "sample-data", "generate synthetic household consumption files")
    x.add_argument("--out", default="data/sample")
    x.add_argument("--meters", type=int, default=10)
    x.add_argument("--days", type=int, default=1)
    x.add_argument("--seed", type=int, default=2026)
    x.set_defaults(func=cmd_sample_data)
