"""`gridveil authority ...`: keys, epochs, the holders' API, the audit log."""

from __future__ import annotations

from common.files import ConfigError

from .cli_common import home, passphrase_args, read_secret_file, sub

PASS_ENV = "GRIDVEIL_AUTHORITY_PASSPHRASE"


def _passphrases(args) -> dict:
    p = read_secret_file(getattr(args, "passphrase_file", None), PASS_ENV, "passphrase")
    return {"single": p, "utility": p, "guardian": p}


def cmd_init(args):
    from . import provision

    kid = provision.init_authority(home(args) / "authority", args.bits, args.k,
                                   threshold=not args.single, passphrases=_passphrases(args))
    mode = "one holder, key encrypted under the passphrase" if args.single else \
        "threshold: shares in utility/ and guardian/"
    print(f"key authority ready in {home(args) / 'authority'} ({mode}); {args.bits}-bit Paillier"
          f" key {kid}; k = {args.k}")


def cmd_rotate(args):
    from authority import setup

    kid = setup.rotate(home(args) / "authority", args.bits, _passphrases(args))
    print(f"new key epoch {kid}; give the gateway {setup.public_key_file(home(args) / 'authority')}"
          " with `gridveil gateway rekey`")


def cmd_trust(args):
    from . import provision

    provision.trust_gateway(home(args) / "authority", home(args) / "gateway")
    print("every key holder now accepts records signed by this gateway")


def _holder_dir(args):
    from authority.setup import holder_dirs

    dirs = holder_dirs(home(args) / "authority")
    role = args.holder or next(iter(dirs))
    if role not in dirs:
        raise ConfigError(f"no key holder {role!r}; this authority has {sorted(dirs)}")
    return role, dirs[role]


def cmd_token(args):
    from authority import api

    role, d = _holder_dir(args)
    api.new_token(d, args.name, args.out)
    print(f"API token for {args.name!r} at the {role} holder written to {args.out} (owner-only)")


def cmd_serve(args):
    from authority import api
    from authority.holder import KeyHolder

    role, d = _holder_dir(args)
    holder = KeyHolder(d, _passphrases(args)[role])
    api.serve(holder, args.bind, args.port,
              ready=lambda port: print(f"READY http://{args.bind}:{port}", flush=True))


def cmd_log(args):
    from authority.holder import HolderHome
    from authority.ledger import Ledger

    role, d = _holder_dir(args)
    ledger = Ledger(HolderHome(d).ledger)
    if not args.verify_only:
        for e in ledger.entries():
            verdict = "GRANTED" if e["granted"] else "REFUSED"
            print(f"{e['n']:>5} {verdict} {e['requester']:<8} {e['kind']:<9} {e['subject']:<36}"
                  f" {e['reason']}")
    ok, msg = ledger.verify()
    print(f"{role} holder's audit log " + ("OK: " if ok else "BROKEN: ") + msg)
    return 0 if ok else 1


def register(subparsers) -> None:
    a = sub(subparsers, "authority", "key authority: keys, epochs, API, audit log")
    s = a.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "init", "generate the Paillier key (shares by default) and the policy")
    x.add_argument("--bits", type=int, default=2048, help="Paillier modulus size (default 2048)")
    x.add_argument("--k", type=int, default=5, help="minimum contributors per aggregate (>= 3)")
    x.add_argument("--single", action="store_true",
                   help="one holder with the whole key (encrypted under a passphrase) instead"
                        " of shares for the utility and the privacy guardian")
    passphrase_args(x)
    x.set_defaults(func=cmd_init)
    x = sub(s, "rotate", "start a new Paillier key epoch; old keys stay for old periods")
    x.add_argument("--bits", type=int, default=2048)
    passphrase_args(x)
    x.set_defaults(func=cmd_rotate)
    x = sub(s, "trust-gateway", "accept records signed by the gateway in --home")
    x.set_defaults(func=cmd_trust)
    x = sub(s, "token", "create an API bearer token for a requester (e.g. the MDMS)")
    x.add_argument("--holder", help="utility, guardian or single (default: the first)")
    x.add_argument("--name", default="mdms", help="requester name recorded in the log")
    x.add_argument("--out", required=True, help="file to write the token to (created 0600)")
    x.set_defaults(func=cmd_token)
    x = sub(s, "serve", "serve one key holder's HTTP API on loopback")
    x.add_argument("--holder", help="utility, guardian or single (default: the first)")
    x.add_argument("--bind", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8710)
    passphrase_args(x)
    x.set_defaults(func=cmd_serve)
    for name, text in (("log", "print a holder's audit log and verify its hash chain"),
                       ("verify", "verify a holder's audit log (edits, deletions, reordering)")):
        x = sub(s, name, text)
        x.add_argument("--holder", help="utility, guardian or single (default: the first)")
        if name == "log":
            x.add_argument("--verify-only", action="store_true", help="only verify the chain")
        x.set_defaults(func=cmd_log, verify_only=name == "verify")
