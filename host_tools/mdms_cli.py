"""`gridveil mdms ...`: the utility's meter data management: intake from the
gateways, releases through the key holders, the dashboard and the portal."""

from __future__ import annotations

import json
from pathlib import Path

from common.files import ConfigError

from .cli_common import home, read_secret_file, sub, tls_args, tls_files


def _store(args):
    from mdms.config import MdmsHome
    from mdms.store import MdmsStore

    return MdmsStore(MdmsHome(home(args)).db_url())


def cmd_init(args):
    from mdms import config

    h = config.init(home(args), args.db)
    tls_files(args, h.path, "mdms")
    store = _store(args)  # creates the schema now: a bad URL fails here, not later
    store.close()
    kind = "PostgreSQL" if args.db and args.db.startswith("postgres") else "SQLite"
    print(f"MDMS ready in {h.path} (database: {kind})")


def cmd_holder_add(args):
    from mdms import config

    digest = config.add_holder(home(args), args.role, args.url, args.ca)
    if args.token_hash_out:
        Path(args.token_hash_out).write_text(digest + "\n")
    print(f"{args.role} key holder at {args.url}; run there:"
          f" gridveil holder allow mdms --token-hash {digest}")


def cmd_trust(args):
    from common import signing
    from common.files import check_name

    check_name(args.gateway_id, "gateway id")
    pem = Path(args.public_key).read_bytes() if Path(args.public_key).exists() else None
    if pem is None:
        raise ConfigError(f"gateway public key not found: {args.public_key}")
    signing.parse_public(pem, args.public_key)
    store = _store(args)
    try:
        store.trust_gateway(args.gateway_id, pem.decode(), add=args.add)
    finally:
        store.close()
    print(f"gateway {args.gateway_id} may push to this MDMS with this key"
          + (" (beside its other keys)" if args.add else ""))


def cmd_retire(args):
    store = _store(args)
    try:
        n = store.retire_gateway(args.gateway_id)
    finally:
        store.close()
    print(f"gateway {args.gateway_id} retired: its pushes are refused, no neighbourhood waits"
          f" for it, and its {n} meter(s) may be registered through another gateway. Remove it"
          " from the key holders (`gateways/<id>.pub`) once its last parts are released")


def cmd_bindings(args):
    """The guardian's signed bindings (household, consented meters, sealing
    key), from its holder, as files for the gateways' `customer-add`."""
    from common.files import write_json
    from mdms import config

    out = Path(args.out)
    bindings = config.authority(home(args)).guardian.bindings()
    for b in bindings:
        write_json(out / f"{b['household']}.binding.json", b)
    print(f"{len(bindings)} household binding(s) in {out}; hand them to the gateways:"
          " `gridveil gateway customer-add FILE...` (each checks the guardian's signature)")


def cmd_serve(args):
    from common.asgi import serve
    from mdms.app import create_app
    from mdms.web import WebConfig

    cert, key = tls_files(args, home(args))
    app = create_app(WebConfig(home(args), secure_cookies=bool(cert)))
    serve(app, args.bind, args.port, cert, key,
          ready=lambda url: print(f"READY {url}", flush=True),
          log_level="info" if args.verbose else "warning",
          forwarded_allow_ips=args.forwarded_allow_ips)


def cmd_release(args):
    from mdms import config, report
    from mdms.job import ReleaseJob, wait_for_lease

    period = args.period_days or args.period
    if period not in (None, "month") and (not str(period).isdigit() or
                                          not 1 <= int(period) <= 400):
        raise ConfigError(f"--period must be \"month\" or 1..400 days, not {period!r}")
    period = period if period in (None, "month") else int(period)
    store = _store(args)
    try:
        job = ReleaseJob(store, config.authority(home(args)), period,
                         config.MdmsHome(home(args)).retention_days())
        if args.every:
            import threading

            print(f"release job: every {args.every} s (one MDMS process at a time); Ctrl-C"
                  " stops it", flush=True)
            try:
                job.serve(args.every, threading.Event())
            except KeyboardInterrupt:
                return
        rel = wait_for_lease(job)
    finally:
        store.close()
    if args.json:
        Path(args.json).write_text(json.dumps(rel.to_json()))
    print(report.format_demand(rel.aggregates) if rel.aggregates else "no aggregates released")
    print()
    print(report.format_bills(rel.bills, rel.period) if rel.bills else "no bills released")
    for r in rel.refusals:
        print(f"refused: {r}")
    for w in rel.waiting:
        print(f"waiting: {w}")


def cmd_status(args):
    store = _store(args)
    try:
        counts = store.counts()
        gws = store.gateways()
    finally:
        store.close()
    for g in gws:
        at = "never" if g["health_at"] is None else f"at {g['health_at']:.0f}"
        print(f"gateway {g['gateway_id']}: last health report {at}")
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))


def cmd_user_add(args):
    from mdms.pages import add_user

    pw = read_secret_file(args.password_file, "GRIDVEIL_WEB_PASSWORD", "password")
    if pw is None:
        raise ConfigError("give the password with --password-file or $GRIDVEIL_WEB_PASSWORD")
    store = _store(args)
    try:
        add_user(store, args.username, args.role, pw)
    finally:
        store.close()
    print(f"user {args.username} ({args.role}) added")


def register(subparsers) -> None:
    m = sub(subparsers, "mdms", "the utility's MDMS: init, holder-add, trust-gateway, bindings,"
                                " serve, release, status, user-add")
    s = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "init", "create the MDMS's home and database")
    x.add_argument("--db", help="sqlite:///PATH (default: mdms.db in the home) or"
                                " postgresql://... (a password goes in $GRIDVEIL_MDMS_DB)")
    tls_args(x, init=True)
    x.set_defaults(func=cmd_init)
    x = sub(s, "holder-add", "reach a key holder's API; makes the token it must allow")
    x.add_argument("role", choices=("utility", "guardian", "single"))
    x.add_argument("--url", required=True, help="e.g. https://holder-u.example:8711")
    x.add_argument("--ca", help="the holder's certificate (pinned) or its CA, for https")
    x.add_argument("--token-hash-out", help="also write the token's SHA-256 to this file")
    x.set_defaults(func=cmd_holder_add)
    x = sub(s, "trust-gateway", "accept pushes from a gateway")
    x.add_argument("gateway_id")
    x.add_argument("public_key", help="the gateway's signing.pub")
    x.add_argument("--add", action="store_true",
                   help="keep its other keys too (a rotation); without it this key replaces"
                        " them")
    x.set_defaults(func=cmd_trust)
    x = sub(s, "retire-gateway", "take a gateway out of service: refuse its pushes, stop"
                                 " waiting for it, free its meters")
    x.add_argument("gateway_id")
    x.set_defaults(func=cmd_retire)
    x = sub(s, "bindings", "export the guardian's signed bindings of activated households, for"
                           " the gateways")
    x.add_argument("--out", required=True, help="folder for <household>.binding.json")
    x.set_defaults(func=cmd_bindings)
    x = sub(s, "serve", "serve the intake API, the dashboard and the portal")
    x.add_argument("--bind", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8080)
    tls_args(x)
    x.add_argument("--forwarded-allow-ips", default="", metavar="ADDRS",
                   help="reverse proxies whose X-Forwarded-For is believed, comma-separated"
                        " (default: none; never list addresses clients can reach from)")
    x.set_defaults(func=cmd_serve)
    x = sub(s, "release", "release what the privacy guardian's decisions allow, through the key"
                          " holders, and print it")
    x.add_argument("--period", help="billing period: month (calendar months, UTC) or a number of"
                                    " days (default: what the key holders' policies bill by)")
    x.add_argument("--period-days", type=int, help="the same, in days (as --period N)")
    x.add_argument("--json", help="also write what was released to this file")
    x.add_argument("--every", type=float, metavar="S",
                   help="keep running, a pass every S seconds (a service; any number of MDMS"
                        " hosts may run it, one at a time does)")
    x.set_defaults(func=cmd_release)
    x = sub(s, "status", "gateways, meters and what the MDMS holds")
    x.set_defaults(func=cmd_status)
    x = sub(s, "user-add", "add a dashboard user (admin, operator, analyst, billing, auditor,"
                           " guardian)")
    x.add_argument("username")
    x.add_argument("--role", required=True)
    x.add_argument("--password-file", help="file with the password (or $GRIDVEIL_WEB_PASSWORD)")
    x.set_defaults(func=cmd_user_add)
