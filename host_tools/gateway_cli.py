"""`gridveil gateway ...` and `gridveil tariff ...`: one gateway, in its own home."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

from common.files import ConfigError

from .cli_common import backup_commands, home, read_secret_file, sub


def _passphrase(args) -> str | None:
    from common.signing import PASSPHRASE_ENV

    return read_secret_file(getattr(args, "passphrase_file", None), PASSPHRASE_ENV,
                            "passphrase")


def gateway_passphrase_args(p) -> None:
    p.add_argument("--passphrase-file", help="file holding the gateway's passphrase (default:"
                                             " the GRIDVEIL_GATEWAY_PASSPHRASE variable)")


def cmd_init(args):
    from gateway.config import GatewayConfig

    from . import provision

    cfg = GatewayConfig(gateway_id=args.id, bind=args.bind, port=args.port,
                        interval_s=args.interval, grace_s=args.grace,
                        bill_grace_s=args.bill_grace, clock=args.clock,
                        seal_every_s=args.seal_every, push_every_s=args.push_every,
                        mdms_url=args.mdms_url or "", metrics_port=args.metrics_port)
    cfg.validate()
    h = provision.init_gateway(home(args), Path(args.paillier_pub), cfg,
                               Path(args.epoch_signature), Path(args.guardian_key),
                               _passphrase(args), Path(args.mdms_ca) if args.mdms_ca else None)
    if args.export_key:
        shutil.copyfile(h.signing_pub, args.export_key)
    print(f"gateway {args.id} ready in {h.path}; listens on {cfg.bind}:{cfg.port}; give"
          f" {args.export_key or h.signing_pub} to the key holders and the MDMS")


def cmd_rekey(args):
    from . import provision

    try:
        day = dt.date.fromisoformat(args.from_day)
    except ValueError:
        raise ConfigError(f"--from-day must be a date like 2026-12-01, not {args.from_day!r}") \
            from None
    kid = provision.rekey_gateway(home(args), Path(args.paillier_pub),
                                  (day - dt.date(1970, 1, 1)).days, Path(args.epoch_signature))
    print(f"readings from {day} on are encrypted under key epoch {kid}; restart the gateway")


def cmd_run(args):
    from gateway.server import serve

    asyncio.run(serve(home(args), args.port, _passphrase(args)))


def cmd_seal(args):
    from common import signing
    from gateway.config import GatewayHome
    from gateway.seal import seal
    from gateway.store import Store

    h = GatewayHome(home(args))
    cfg = h.load_config()
    store = Store(h.db)
    try:
        r = seal(store, signing.load_private(h.signing_key, _passphrase(args)), cfg.gateway_id,
                 cfg.interval_s,
                 cfg.grace_s, cfg.clock, seal_all=args.all, bill_grace_s=cfg.bill_grace_s)
    finally:
        store.close()
    print(f"sealed {r.aggregates} aggregates, signed {r.bill_days} bill days")


def cmd_push(args):
    from common import signing
    from gateway.config import GatewayHome
    from gateway.push import Pusher, PushError
    from gateway.store import Store

    h = GatewayHome(home(args))
    cfg = h.load_config()
    store = Store(h.db)
    try:
        pusher = Pusher(store, signing.load_private(h.signing_key, _passphrase(args)),
                        cfg.gateway_id,
                        cfg.mdms_url, cfg.mdms_ca, batch=cfg.push_batch)
        n = pusher.drain()
    except PushError as e:
        raise ConfigError(f"push failed, nothing lost (the outbox keeps it): {e}") from None
    finally:
        store.close()
    print(f"pushed {n} items to {cfg.mdms_url}")


def cmd_status(args):
    from gateway.config import GatewayHome
    from gateway.store import Store

    store = Store(GatewayHome(home(args)).db, readonly=True)
    print(f"{'meter':<8}{'nbh':<10}{'last seq':>9}{'stored':>8}{'dups':>6}{'late':>6}"
          f"{'backlog':>8}  fw")
    for m in store.meters():
        backlog = m["backlog"] if m["backlog"] is not None else "-"
        print(f"{m['meter_id']:<8}{m['neighbourhood']:<10}{m['last_seq']:>9}{m['accepted']:>8}"
              f"{m['duplicates']:>6}{m['late']:>6}{backlog:>8}  {m['fw_version'] or '-'}")
    rej = store.rejects()
    print("rejected messages: " + (", ".join(f"{m or '?'}/{r}={n}" for (m, r), n in
                                             sorted(rej.items())) or "none"))
    epochs = store.key_epochs()
    clip = epochs[-1][3] if epochs else 0
    print(f"readings clipped to the guardian's bound ({clip or 'none'} Wh) in aggregates:"
          f" {store.counters().get('clipped', 0)} (bills count them whole)")
    print(f"waiting to be pushed to the MDMS: {store.outbox_count()} items")


def cmd_backup(args):
    from gateway.backup import backup

    m = backup(home(args), Path(args.out))
    print(f"{args.out}: gateway {m['gateway_id']}, {m['meters']} meters, made while it ran; keep"
          " it as you keep the gateway's disk (its keys are in it, under the passphrase). Meters"
          " now forget the readings it holds")


def cmd_restore(args):
    from gateway.backup import restore
    from gateway.keystore import RESTORE_WAIT_S

    print(f"restoring {args.archive} into {home(args)}; then waiting {RESTORE_WAIT_S:.0f} s so"
          " that no sequence number of the old gateway can come back", flush=True)
    m = restore(Path(args.archive), home(args), replace=args.replace)
    made = dt.datetime.fromtimestamp(m["made_at"], dt.timezone.utc)
    print(f"gateway {m['gateway_id']} restored as of {made:%Y-%m-%d %H:%M:%S} UTC; start it with"
          " `gridveil gateway run`: each meter sends again what it sent since")


def cmd_signing_key(args):
    from common import signing
    from gateway.config import GatewayHome

    h = GatewayHome(home(args))
    nxt, nxt_pub = h.path / "signing.next.key", h.path / "signing.next.pub"
    if args.step == "new":
        signing.generate(nxt, nxt_pub, _passphrase(args))
        if args.export_key:
            shutil.copyfile(nxt_pub, args.export_key)
        print(f"a new signing key ({signing.fingerprint(signing.load_public(nxt_pub))}) waits in"
              f" {nxt.name}: trust {args.export_key or nxt_pub} at both holders and the MDMS"
              " with `trust-gateway --add`, then `gridveil gateway signing-key switch`")
        return
    if not nxt.exists():
        raise ConfigError("no new signing key: `gridveil gateway signing-key new` first")
    signing.load_private(nxt, _passphrase(args))  # the passphrase opens it: no surprise at start
    for cur, old in ((h.signing_key, "signing.old.key"), (h.signing_pub, "signing.old.pub")):
        cur.replace(h.path / old)
    nxt.replace(h.signing_key)
    nxt_pub.replace(h.signing_pub)
    print("the gateway signs with the new key from its next start (restart it); keep the old"
          " key trusted at the holders and the MDMS until its records are released")


def cmd_customer_add(args):
    from . import provision

    for f in args.files:
        cid, meters = provision.add_customer(home(args), Path(f))
        print(f"household {cid}: readings of {', '.join(meters) or 'no meter yet'} are sealed to"
              " the key it made itself (the guardian's binding checked)")


def cmd_tariff_add(args):
    from . import provision

    tid = provision.add_tariff(home(args), Path(args.file))
    print(f"tariff {tid} added; assign it with `gridveil provision ... --tariff {tid}`")


def register(subparsers) -> None:
    g = sub(subparsers, "gateway", "one gateway: init, run, seal, push, status, rekey,"
                                   " customer-add, signing-key, backup, restore")
    s = g.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "init", "create the gateway's keys, database and settings")
    x.add_argument("--id", default="gw1", help="this gateway's name in records (default gw1)")
    x.add_argument("--paillier-pub", required=True,
                   help="the Paillier public key file from `gridveil keygen`")
    x.add_argument("--epoch-signature", required=True,
                   help="the guardian's signature on that key (`gridveil holder sign-epoch`)")
    x.add_argument("--guardian-key", required=True,
                   help="the guardian holder's signing.pub: it must sign every key epoch")
    gateway_passphrase_args(x)
    x.add_argument("--mdms-url", help="the MDMS to push to, e.g. https://mdms.example:8443")
    x.add_argument("--mdms-ca", help="the MDMS's certificate (pinned) or its CA, for https")
    x.add_argument("--export-key", help="also copy the gateway's public signing key here")
    x.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    x.add_argument("--port", type=int, default=5683, help="UDP port (default 5683)")
    x.add_argument("--interval", type=int, default=900, help="reading interval in s")
    x.add_argument("--grace", type=int, default=900, help="seconds to wait before sealing")
    x.add_argument("--bill-grace", type=int, default=3600,
                   help="seconds after a day ends before its bills are signed")
    x.add_argument("--clock", choices=("wall", "data"), default="wall",
                   help="seal by the wall clock, or by the replayed data's own time")
    x.add_argument("--seal-every", type=float, default=10.0, help="seconds between seal runs")
    x.add_argument("--push-every", type=float, default=5.0, help="seconds between pushes")
    x.add_argument("--metrics-port", type=int, default=9683,
                   help="local HTTP port for /metrics and /healthz (default 9683; 0: off)")
    x.set_defaults(func=cmd_init)
    x = sub(s, "run", "serve meters and push to the MDMS until SIGINT or SIGTERM")
    x.add_argument("--port", type=int, help="override the configured port")
    gateway_passphrase_args(x)
    x.set_defaults(func=cmd_run)
    x = sub(s, "seal", "seal what is due now")
    x.add_argument("--all", action="store_true", help="seal every open accumulator now")
    gateway_passphrase_args(x)
    x.set_defaults(func=cmd_seal)
    x = sub(s, "push", "push everything waiting in the outbox to the MDMS now")
    gateway_passphrase_args(x)
    x.set_defaults(func=cmd_push)
    x = sub(s, "status", "fleet health, rejected-message counters, outbox")
    x.set_defaults(func=cmd_status)
    x = sub(s, "rekey", "encrypt readings from a future day on under a new key epoch")
    x.add_argument("--from-day", required=True, help="first UTC day of the new epoch, YYYY-MM-DD")
    x.add_argument("--paillier-pub", required=True, help="the new public key file")
    x.add_argument("--epoch-signature", required=True,
                   help="the guardian's signature on it (`gridveil holder sign-epoch`)")
    x.set_defaults(func=cmd_rekey)
    x = sub(s, "customer-add", "take households' sealing keys from the guardian's signed"
                               " bindings (`gridveil mdms bindings`)")
    x.add_argument("files", nargs="+")
    x.set_defaults(func=cmd_customer_add)
    x = sub(s, "signing-key", "rotate the gateway's signing key: `new` makes one to trust"
                              " beside the old, `switch` signs with it")
    x.add_argument("step", choices=("new", "switch"))
    x.add_argument("--export-key", help="with new: also copy its public key here")
    gateway_passphrase_args(x)
    x.set_defaults(func=cmd_signing_key)
    backup_commands(s, "gateway", "runs", "meters send again what it lacks", cmd_backup,
                    cmd_restore)

    t = sub(subparsers, "tariff", "time-of-use tariffs (bands by weekday and hour)")
    s = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "add", "add or replace a tariff from a JSON file (see docs/privacy.md)")
    x.add_argument("file")
    x.set_defaults(func=cmd_tariff_add)
