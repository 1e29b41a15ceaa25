"""`gridveil customer ...`: a household's own tool: its activation (its keys
made here, its consent signed here), and its own detailed readings fetched
from the portal and decrypted here."""

from __future__ import annotations

import csv
import sys

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


def cmd_activate(args):
    from . import customer_export

    code = read_secret_file(args.code_file, "GRIDVEIL_ACTIVATION_CODE", "activation code")
    if code is None:
        raise ConfigError("give the activation code from the privacy guardian's letter with"
                          " --code-file or $GRIDVEIL_ACTIVATION_CODE")
    from common.customer import check_strength

    password = _password(args, args.household)
    check_strength(password, args.household)
    meters, recovery = customer_export.activate(
        args.mdms, args.ca, args.household, code.strip(), password,
        args.meters.split(",") if args.meters else None)
    print(f"household {args.household} activated: you consented to meter(s) {', '.join(meters)};"
          " your keys were made here and only this password (or the code below) opens them")
    # Shown once, stored nowhere: the only way back after a forgotten password.
    print(f"recovery code for {args.household}: {recovery}  (write it down and keep it apart"
          " from the password; it is shown only now)")


def cmd_confirm(args):
    from . import customer_export

    meters = customer_export.confirm(args.mdms, args.ca, args.household,
                                     _password(args, args.household),
                                     args.meters.split(",") if args.meters else None)
    print(f"household {args.household} consented to meter(s) {', '.join(meters)}: signed here,"
          " with the key made at activation")


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
    c = sub(subparsers, "customer", "a household's tool: its activation and its own readings")
    s = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "activate", "activate your household: make its keys here, consent to its meters"
                           " with the privacy guardian's one-time code")
    x.add_argument("household", help="your household id, from the guardian's letter")
    x.add_argument("--mdms", required=True, help="the portal's address, e.g. https://mdms:8443")
    x.add_argument("--ca", help="the portal's certificate or CA, for https")
    x.add_argument("--code-file", help="file with the activation code (or"
                                       " $GRIDVEIL_ACTIVATION_CODE)")
    x.add_argument("--meters", help="the meters in the guardian's letter, comma-separated:"
                                    " nothing else is signed for")
    x.add_argument("--password-file", help=f"file with the new password (or ${PASSWORD_ENV};"
                                           " else asked for on a terminal)")
    x.set_defaults(func=cmd_activate)
    x = sub(s, "confirm", "consent to meters the guardian enrolled for your household since")
    x.add_argument("household")
    x.add_argument("--mdms", required=True, help="the portal's address, e.g. https://mdms:8443")
    x.add_argument("--ca", help="the portal's certificate or CA, for https")
    x.add_argument("--meters", help="the meters you expect, comma-separated: nothing else is"
                                    " signed for")
    x.add_argument("--password-file", help=f"file with the password (or ${PASSWORD_ENV};"
                                           " else asked for on a terminal)")
    x.set_defaults(func=cmd_confirm)
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
