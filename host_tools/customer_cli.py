"""`gridveil customer ...`: a household's own tool: its key pair, and its
own detailed readings fetched from the portal and decrypted here."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from common.files import ConfigError

from .cli_common import read_secret_file, sub

PASSWORD_ENV = "GRIDVEIL_CUSTOMER_PASSWORD"


def _password(args, who: str) -> str:
    pw = read_secret_file(args.password_file, PASSWORD_ENV, "password")
    if pw is None:
        import getpass

        if not sys.stdin.isatty():
            raise ConfigError(f"give the password with --password-file or ${PASSWORD_ENV}")
        pw = getpass.getpass(f"password for {who}: ")
    return pw


def cmd_create(args):
    from common.customer import PBKDF2_ITERATIONS

    from . import provision

    out_dir = Path(args.out_dir)
    for cid in args.customer_ids:
        path, code = provision.create_customer(cid, _password(args, cid), out_dir / f"{cid}.json",
                                               iterations=args.iterations or PBKDF2_ITERATIONS)
        print(f"customer {cid}: {path} holds the key pair (private key wrapped under the"
              " password); give it to the gateway (`gateway customer-add`) and the MDMS"
              " (`mdms customer-add`)")
        # Shown once, stored nowhere: the only way back after a forgotten password.
        print(f"recovery code for {cid}: {code}  (write it down and keep it apart from the"
              " password; it is shown only now)")


def cmd_export(args):
    from . import customer_export

    rows = customer_export.readings(args.mdms, args.ca, args.customer_id,
                                    _password(args, args.customer_id))
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


def cmd_check_portal(args):
    from . import customer_export

    results = customer_export.check_portal(args.mdms, args.ca)
    for path, digest, same in results:
        print(f"{'same' if same else 'DIFFERENT':9} {digest}  {path}")
    if not all(same for _, _, same in results):
        raise ConfigError("the portal serves code that is not this release's: do not enter your"
                          " password there; use `gridveil customer export` instead")
    print("the portal serves this release's code, unchanged")


def register(subparsers) -> None:
    c = sub(subparsers, "customer", "a household's tool: its key pair and its own readings")
    s = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "create", "make customers' key pairs, wrapped under their passwords")
    x.add_argument("customer_ids", nargs="+")
    x.add_argument("--out-dir", default=".", help="folder for <customer>.json (default: here)")
    x.add_argument("--iterations", type=int, help="PBKDF2 iterations (default and minimum 600,000)")
    x.add_argument("--password-file", help=f"file with the password (or ${PASSWORD_ENV};"
                                           " else asked for on a terminal)")
    x.set_defaults(func=cmd_create)
    x = sub(s, "export", "log in to the portal and decrypt your own readings here")
    x.add_argument("customer_id")
    x.add_argument("--mdms", required=True, help="the portal's address, e.g. https://mdms:8443")
    x.add_argument("--ca", help="the portal's certificate or CA, for https")
    x.add_argument("--out", help="CSV file (default: standard output)")
    x.add_argument("--password-file", help=f"file with the password (or ${PASSWORD_ENV};"
                                           " else asked for on a terminal)")
    x.set_defaults(func=cmd_export)
    x = sub(s, "check-portal", "check that the portal serves this release's code, unchanged")
    x.add_argument("--mdms", required=True, help="the portal's address, e.g. https://mdms:8443")
    x.add_argument("--ca", help="the portal's certificate or CA, for https")
    x.set_defaults(func=cmd_check_portal)
