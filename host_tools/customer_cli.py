"""`gridveil customer ...`: a customer's keys and their own readings."""

from __future__ import annotations

import csv
import sys

from common.files import ConfigError

from .cli_common import home, read_secret_file, sub

PASSWORD_ENV = "GRIDVEIL_CUSTOMER_PASSWORD"


def _password(args) -> str:
    pw = read_secret_file(args.password_file, PASSWORD_ENV, "password")
    if pw is None:
        import getpass

        if not sys.stdin.isatty():
            raise ConfigError(f"give the password with --password-file or ${PASSWORD_ENV}")
        pw = getpass.getpass(f"password for {args.customer_id}: ")
    return pw


def cmd_create(args):
    from . import provision

    path = provision.create_customer(home(args), home(args) / "gateway", args.customer_id,
                                     _password(args))
    print(f"customer {args.customer_id}: key file {path} (private key wrapped under the"
          " password); the gateway has the public key")


def cmd_export(args):
    from gateway.config import GatewayHome
    from gateway.store import Store

    from . import customer_export

    store = Store(GatewayHome(home(args) / "gateway").db, readonly=True)
    try:
        rows = customer_export.readings(home(args), store, args.customer_id, _password(args))
    finally:
        store.close()
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        w = csv.writer(out)
        w.writerow(["meter_id", "seq", "interval_end_utc", "energy_wh", "register_wh"])
        w.writerows(rows)
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{len(rows)} readings of {args.customer_id} written to {args.out}")


def register(subparsers) -> None:
    c = sub(subparsers, "customer", "customers: key pairs and their own detailed readings")
    s = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text, func in (("create", "create a customer's key pair, wrapped under a password",
                              cmd_create),
                             ("export", "decrypt a customer's own readings (needs the password)",
                              cmd_export)):
        x = sub(s, name, text)
        x.add_argument("customer_id")
        x.add_argument("--password-file", help=f"file with the password (or ${PASSWORD_ENV};"
                                               " else asked for on a terminal)")
        if name == "export":
            x.add_argument("--out", help="CSV file (default: standard output)")
        x.set_defaults(func=func)
