"""`gridveil provision`, `fleet` and `sample-data`: the meters."""

from __future__ import annotations

from pathlib import Path

from common.files import ConfigError, read_json

from . import fleet
from .cli_common import home, read_secret_file, sub


def _provision_one(p, spec: dict) -> None:
    p.meter(spec["meter_id"], spec["neighbourhood"], Path(spec["out"]),
            customer_id=spec.get("customer"), tariff_id=spec.get("tariff", "flat"),
            host=spec.get("gateway_host"), extra=spec.get("settings"),
            extra_secrets=spec.get("secrets"), ratchet=spec.get("ratchet", True))
    print(f"meter {spec['meter_id']} registered in neighbourhood {spec['neighbourhood']};"
          f" device files in {spec['out']} (secrets.json is owner-only; keep it off shared disks)")


def cmd_provision(args):
    from .gateway_cli import _passphrase
    from .provision import Provisioner

    if args.batch:
        specs = read_json(Path(args.batch), "meter batch")
        if not isinstance(specs, list) or not all(isinstance(x, dict) for x in specs):
            raise ConfigError(f"{args.batch}: a JSON list of meters"
                              " ({meter_id, neighbourhood, out, ...})")
        with Provisioner(home(args), _passphrase(args)) as p:
            for spec in specs:
                try:
                    _provision_one(p, spec)
                except KeyError as e:
                    raise ConfigError(f"{args.batch}: a meter lacks {e}") from None
        return
    if not args.meter_id or not args.neighbourhood:
        raise ConfigError("give a meter id and --neighbourhood (or --batch FILE)")
    extra = {}
    if args.replay:
        if not Path(args.replay).exists():
            raise ConfigError(f"replay file not found: {args.replay}")
        extra["replay"] = {"file": str(Path(args.replay).resolve()), "speed": args.speed}
    if args.board_settings:
        board = read_json(Path(args.board_settings), "board settings")
        if not isinstance(board, dict) or set(board) - {"board", "sensor"}:
            raise ConfigError("board settings must be a JSON object with \"board\" and"
                              " \"sensor\" (see docs/hardware.md)")
        extra.update(board)
    secrets = {}
    if args.wifi_ssid:
        pw = read_secret_file(args.wifi_password_file, "GRIDVEIL_WIFI_PASSWORD", "Wi-Fi password")
        if pw is None:
            raise ConfigError("give the Wi-Fi password with --wifi-password-file or"
                              " $GRIDVEIL_WIFI_PASSWORD")
        secrets = {"wifi_ssid": args.wifi_ssid, "wifi_password": pw}
    with Provisioner(home(args), _passphrase(args)) as p:
        _provision_one(p, {"meter_id": args.meter_id, "neighbourhood": args.neighbourhood,
                           "customer": args.customer, "tariff": args.tariff,
                           "gateway_host": args.gateway_host, "settings": extra,
                           "secrets": secrets,
                           "out": args.out or str(home(args) / "provisioned" / args.meter_id)})


def cmd_fleet(args):
    from . import fleet

    if args.fleet_action == "update":
        return cmd_fleet_update(args)
    root = Path(args.meters) if args.meters else home(args) / "provisioned"
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


def cmd_fleet_update(args):
    """Stage a firmware image in the gateway's home for a fraction of its
    meters, or report how far a rollout has come."""
    from gateway import updates
    from gateway.config import GatewayHome
    from gateway.store import Store

    h = GatewayHome(home(args))
    if not h.db.exists():
        raise ConfigError(f"no gateway in {h.path}; give its home with --home")
    if not args.status:
        if not args.image or not args.version:
            raise ConfigError("give --image and --version (or --status)")
        try:
            image = Path(args.image).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {args.image}: {e.strerror}") from None
        updates.stage(h.firmware, image, args.version, args.fraction)
    if not (h.firmware / updates.ROLLOUT).exists():
        print("no firmware staged")
        return 0
    rollout = updates.load(h.firmware)  # a damaged image is an error, said as such
    store = Store(h.db, readonly=True)
    try:
        meters = store.meters()
    finally:
        store.close()
    chosen = [m for m in meters if rollout.includes(m["meter_id"])]
    done = [m for m in chosen if m["fw_version"] == rollout.version]
    print(f"firmware {rollout.version} ({len(rollout.image)} bytes, SHA-256"
          f" {rollout.digest.hex()[:16]}...) offered to {rollout.fraction:.0%} of meters:"
          f" {len(chosen)} of {len(meters)}; {len(done)} of them run it")
    for m in chosen:
        print(f"  {m['meter_id']}: {m['fw_version'] or 'not heard from'}")
    if not args.status and rollout.fraction < 1:
        print("the gateway offers it from its next check (a few seconds); when these meters"
              " report the new version, widen with a larger --fraction")
    return 0


def cmd_sample_data(args):
    from . import sampledata

    paths = sampledata.generate(Path(args.out), args.meters, days=args.days, seed=args.seed)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_build(args):
    from . import build

    out = Path(args.out or f"build/{args.target}" + ("-production" if args.production else ""))
    files = build.build(args.target, out, production=args.production, version=args.version)
    size = sum((out / f).stat().st_size for f in files)
    print(f"built {len(files)} files ({size} bytes) for {args.target} in {out}")
    if args.image:
        if args.target != "unix":
            raise ConfigError("--image makes emulator images; an ESP32 image is MicroPython's"
                              " .bin with the build frozen in (docs/hardware.md)")
        blob = build.image(out, Path(args.image))
        print(f"image for `gridveil fleet update`: {args.image} ({len(blob)} bytes)")
    if args.production:
        print("production build: once deployed, the board's REPL is closed; the next deploy"
              " needs `esptool erase_flash` and MicroPython flashed again (docs/hardware.md)")


def cmd_deploy(args):
    from . import deploy

    if not (args.meter_dir or args.meter):
        raise ConfigError("give --meter (provisioned by this gateway) or --meter-dir")
    meter_dir = Path(args.meter_dir) if args.meter_dir else \
        home(args) / "provisioned" / args.meter
    deploy.deploy(args.port, Path(args.build), meter_dir, reset=not args.no_reset)


def cmd_monitor(args):
    from . import monitor

    monitor.monitor(args.port, args.baud, args.duration)


def cmd_board_emulator(args):
    import time

    from .boardsim import BoardEmulator

    emu = BoardEmulator(Path(args.fs), args.heap, Path(args.link) if args.link else None).start()
    print(f"emulated board on {emu.port}" + (f" (also {args.link})" if args.link else "")
          + f", flash in {args.fs}; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        emu.close()


def register(subparsers) -> None:
    x = sub(subparsers, "provision", "register a meter with the gateway in --home and write its"
                                     " device files")
    x.add_argument("meter_id", nargs="?")
    x.add_argument("--neighbourhood")
    x.add_argument("--batch", help="instead, a JSON list of meters: {meter_id, neighbourhood,"
                                   " out, customer, tariff, settings}")
    x.add_argument("--customer", help="customer id (create it first with `gridveil customer"
                                      " create`); the gateway seals readings for them")
    x.add_argument("--tariff", default="flat", help="tariff id (default: flat)")
    x.add_argument("--out", help="device directory (default <home>/provisioned/<meter_id>)")
    x.add_argument("--gateway-host", help="address the meter sends to")
    x.add_argument("--replay", help="consumption file to replay (emulator board)")
    x.add_argument("--board-settings", help="JSON file with the board's \"board\" and"
                                            " \"sensor\" settings (ESP32; see docs/hardware.md)")
    x.add_argument("--wifi-ssid", help="Wi-Fi network for an ESP32 (goes to secrets.json)")
    x.add_argument("--wifi-password-file", help="file with the Wi-Fi password"
                                                " (or $GRIDVEIL_WIFI_PASSWORD)")
    x.add_argument("--speed", type=int, default=0,
                   help="replay speed-up over real time; 0 = as fast as possible")
    x.add_argument("--passphrase-file", help="file holding the gateway's passphrase (default:"
                                             " $GRIDVEIL_GATEWAY_PASSPHRASE): the meter's key is"
                                             " sealed under it")
    x.set_defaults(func=cmd_provision)

    x = sub(subparsers, "fleet", "run every provisioned meter on the MicroPython Unix port")
    x.add_argument("--meters", help="directory of meter directories"
                                    " (default <home>/provisioned)")
    x.add_argument("--heap", default=fleet.HEAP, help=f"MicroPython heap per meter (default {fleet.HEAP})")
    x.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    x.set_defaults(func=cmd_fleet, fleet_action=None)
    u = x.add_subparsers(dest="fleet_action", metavar="update")
    u = sub(u, "update", "offer a firmware image over the air to a fraction of the gateway's"
                         " meters in --home (docs/deploy.md)")
    u.add_argument("--image", help="the image: MicroPython's .bin with the firmware frozen in"
                                   " for an ESP32; `gridveil build --image` for the emulator")
    u.add_argument("--version", help="the version the new firmware reports (its FW_VERSION)")
    u.add_argument("--fraction", type=float, default=0.1,
                   help="share of meters offered it, 0 to 1 (default 0.1); the same meters"
                        " stay chosen when it grows")
    u.add_argument("--status", action="store_true", help="only show how far the rollout is")

    x = sub(subparsers, "build", "compile the firmware and a board layer to .mpy with mpy-cross")
    x.add_argument("--target", default="esp32", choices=("esp32", "esp32c3", "esp32s3", "unix"))
    x.add_argument("--out", help="output folder (default build/<target>[-production])")
    x.add_argument("--version", help="stamp this firmware version (default: the sources')")
    x.add_argument("--image", help="also write an emulator image (--target unix) to this file,"
                                   " for `gridveil fleet update`")
    x.add_argument("--production", action="store_true",
                   help="close the REPL: Ctrl-C cannot interrupt the firmware, and any failure"
                        " resets the board instead of stopping at a prompt")
    x.set_defaults(func=cmd_build)

    x = sub(subparsers, "deploy", "copy a build and a meter's files to a board with mpremote,"
                                  " verify them and reset the board")
    x.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    x.add_argument("--meter", help="meter id (device files in <home>/provisioned/<id>)")
    x.add_argument("--meter-dir", help="or the folder with its settings.json and secrets.json")
    x.add_argument("--build", default="build/esp32", help="build folder (default build/esp32)")
    x.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    x.set_defaults(func=cmd_deploy)

    x = sub(subparsers, "monitor", "serial console that reconnects when the board resets")
    x.add_argument("--port", required=True)
    x.add_argument("--baud", type=int, default=115200)
    x.add_argument("--duration", type=float, help="stop after this many seconds")
    x.set_defaults(func=cmd_monitor)

    x = sub(subparsers, "board-emulator", "an emulated board on a pseudo-terminal (raw REPL,"
                                          " mpremote-compatible) running the Unix port")
    x.add_argument("--fs", required=True, help="folder that is the board's flash")
    x.add_argument("--link", help="also make this path a symlink to the pty")
    x.add_argument("--heap", default=fleet.HEAP)
    x.set_defaults(func=cmd_board_emulator)

    x = sub(subparsers, "sample-data", "generate synthetic household consumption files")
    x.add_argument("--out", default="data/sample")
    x.add_argument("--meters", type=int, default=10)
    x.add_argument("--days", type=int, default=1)
    x.add_argument("--seed", type=int, default=2026)
    x.set_defaults(func=cmd_sample_data)
