"""`gridveil holder ...` (one key holder, run once for the utility and once
for the privacy guardian, each in its own home) and `gridveil keygen` (the
dealer's key ceremony)."""

from __future__ import annotations

from pathlib import Path

from common.files import ConfigError

from .cli_common import backup_commands, home, passphrase_args, read_secret_file, sub, tls_args, tls_files

PASS_ENV = "GRIDVEIL_HOLDER_PASSPHRASE"


def _passphrase(args) -> str | None:
    return read_secret_file(getattr(args, "passphrase_file", None), PASS_ENV, "passphrase")


def cmd_init(args):
    from authority import dealer, holder
    from authority.policy import Policy

    policy = Policy(k=args.k, billing=args.billing, min_bill_days=args.min_bill_days,
                    min_key_bits=args.min_key_bits, dp=args.dp)
    if args.role == "utility" and not args.guardian_key:
        raise ConfigError("the utility's holder releases only what the privacy guardian decides:"
                          " give the guardian holder's signing.pub with --guardian-key")
    raw = holder.create(home(args), args.role, policy, _passphrase(args))
    if args.guardian_key:
        holder.trust_guardian(home(args), Path(args.guardian_key))
    dealer.save_transport_pub(Path(args.export), raw, args.role)
    if args.export_signing_key:
        import shutil

        shutil.copyfile(holder.HolderHome(home(args)).signing_pub, args.export_signing_key)
    tls_files(args, home(args), f"holder-{args.role}")
    print(f"{args.role} key holder ready in {home(args)} (k = {args.k}); give {args.export} to"
          " the dealer (`gridveil keygen`)")


def cmd_keygen(args):
    from authority import dealer

    holders = {r: Path(p) for r, p in (("single", args.single), ("utility", args.utility),
                                       ("guardian", args.guardian)) if p}
    kid = dealer.deal(Path(args.out), args.bits, holders)
    print(f"{args.bits}-bit Paillier key in {args.out}: {kid}.pub.json for the gateways, one"
          f" sealed part for each of {sorted(holders)}; key epoch {kid}")


def cmd_import(args):
    from authority import holder

    kid = holder.import_key(home(args), Path(args.sealed), Path(args.pub), _passphrase(args))
    print(f"key epoch {kid} imported, encrypted under this holder's passphrase")


def cmd_tariff(args):
    from authority import holder

    for f in args.files:
        ref = holder.approve_tariff(home(args), Path(f))
        print(f"tariff {ref} approved: bills under it are priced from this registry")


def cmd_enroll(args):
    import json

    from authority import holder

    meters = {}
    if args.file:
        d = json.loads(Path(args.file).read_text())
        if not isinstance(d, dict):
            raise ConfigError(f"{args.file}: a JSON object {{meter id: household id}}")
        meters.update(d)
    if args.meter:
        if not args.household:
            raise ConfigError("give --household for the meter")
        meters[args.meter] = args.household
    if not meters:
        raise ConfigError("give a meter and --household, or --file")
    codes = holder.enroll(home(args), meters)
    print(f"{len(meters)} meters enrolled, each for its household; a household counts toward k"
          " once, with the meters it consented to")
    for household, code in sorted(codes.items()):
        # Shown once, stored only as the key it stands for: the guardian hands
        # it to the household apart from the utility (a letter, say).
        print(f"activation code for household {household}: {code}  (hand it to the household"
              " apart from the utility; it activates once)")


def cmd_trust(args):
    from authority import holder

    holder.trust_gateway(home(args), args.gateway_id, Path(args.public_key), add=args.add)
    print(f"records signed by gateway {args.gateway_id} with this key are now accepted"
          + (" (beside its other keys)" if args.add else ""))


def cmd_trust_guardian(args):
    from authority import holder

    holder.trust_guardian(home(args), Path(args.public_key))
    print("this holder now releases only what decisions signed with that key allow")


def _utc(text: str, what: str) -> int:
    from common.decisions import parse_time

    try:
        return parse_time(text)
    except ValueError as e:
        raise ConfigError(f"{what} must be a date or a time, UTC: {e}") from None


def _at_desk(args, act):
    """act(the guardian's desk) at this holder, then close it."""
    from authority.holder import HolderHome, KeyHolder
    from common.files import read_json

    if read_json(HolderHome(home(args)).meta, "key holder settings").get("role") == "utility":
        raise ConfigError("requests and decisions are the privacy guardian's: run this at the"
                          " guardian's holder")
    holder = KeyHolder(home(args), _passphrase(args))
    try:
        return act(holder.desk)
    finally:
        holder.close()


def cmd_requests(args):
    from common.decisions import ANY
    from common.decisions import show_time as _when

    rows = _at_desk(args, lambda desk: desk.proposals(pending_only=not args.all))
    if not rows:
        print("no request waits for a decision" if not args.all else "no requests yet")
    for p in reversed(rows):
        where = "any neighbourhood" if ANY in p["neighbourhoods"] else ", ".join(p["neighbourhoods"])
        state = "waiting" if p["decision"] is None else f"decided (decision {p['decision']})"
        print(f"request {p['id']} [{state}] from {p['requester']} ({p['ref'] or '-'}): release"
              f" {p['what']} of {where} from {_when(p['start'])} to {_when(p['end'])} UTC")
        if p["note"]:
            print(f"    the requester says: {p['note']}")


def cmd_decide(args):
    d = _at_desk(args, lambda desk: desk.decide(args.request, args.approve, args.reason or ""))
    print(f"signed: {d.in_words()}" + (f"; reason: {d.reason}" if d.reason else ""))


def cmd_standing(args):
    start, end = _utc(args.start, "--from"), _utc(args.end, "--to")
    expires = _utc(args.expires, "--expires") if args.expires else 0
    d = _at_desk(args, lambda desk: desk.standing(args.what, args.neighbourhoods.split(","),
                                                  start, end, expires, args.reason or ""))
    print(f"signed: {d.in_words()}")


def cmd_revoke(args):
    d = _at_desk(args, lambda desk: desk.revoke(args.decision))
    print(f"revoked: {d.in_words()}; this holder refuses it from now on")


def cmd_decisions(args):
    from common import decisions

    rows = _at_desk(args, lambda desk: desk.decisions())
    for d in rows:
        revoked = d.pop("revoked")
        print(decisions.parse(d).in_words() + (" [REVOKED]" if revoked else ""))
    if not rows:
        print("no decisions yet")


def cmd_desk_password(args):
    import getpass
    import sys

    from authority import deskweb
    from authority.holder import HolderHome
    from common.files import read_json

    h = HolderHome(home(args))
    if read_json(h.meta, "key holder settings").get("role") == "utility":
        raise ConfigError("the desk is the privacy guardian's: set its password at the"
                          " guardian's holder")
    pw = read_secret_file(args.password_file, "GRIDVEIL_DESK_PASSWORD", "password")
    if pw is None:
        if not sys.stdin.isatty():
            raise ConfigError("give the password with --password-file or $GRIDVEIL_DESK_PASSWORD")
        pw = getpass.getpass("desk password: ")
    deskweb.set_password(h.path, pw)
    print(f"desk password set: log in at https://<this holder>/desk (from {h.path})")


def cmd_allow(args):
    from authority import api

    digest = args.token_hash or Path(args.token_hash_file).read_text().strip()
    api.allow(home(args), args.requester, digest)
    print(f"{args.requester} may call this holder's API with its token")


def cmd_deny(args):
    from authority import api

    n = api.deny(home(args), args.requester)
    print(f"{n} token(s) of {args.requester} revoked; a serving holder refuses them from its"
          " next request")


def cmd_serve(args):
    from authority import api
    from authority.holder import KeyHolder
    from common.asgi import serve

    holder = KeyHolder(home(args), _passphrase(args))
    if holder.restored():
        # Not even to refuse: a logged refusal would fork the log from the
        # copies the reconciliation puts back.
        holder.close()
        raise ConfigError("this holder was restored from a backup and may have forgotten"
                          " releases; it serves nothing until reconciled (`gridveil holder"
                          " reconcile`, docs/deploy.md)")
    holder.verify_in_background()
    cert, key = tls_files(args, home(args))
    api.load_tokens(holder)  # none at all: say so at start, not at the first request
    app = api.create_app(holder, secure=bool(cert))
    serve(app, args.bind, args.port, cert, key,
          ready=lambda url: print(f"READY {url}", flush=True))


def _kept_heads(h, files) -> list:
    """Heads an auditor kept (`holder head`), each checked against this
    holder's own signing key before it is used."""
    from authority.ledger import check_head
    from common import signing
    from common.files import read_json

    pub = signing.load_public(h.signing_pub)
    out = []
    for f in files or []:
        try:
            out.append(check_head(pub, read_json(Path(f), "kept log head")))
        except ValueError as e:
            raise ConfigError(f"{f} is {e}") from None
    return out


def cmd_log(args):
    from authority.holder import HolderHome
    from authority.ledger import Ledger

    h = HolderHome(home(args))
    if not h.ledger.exists():
        raise ConfigError(f"no decision log in {h.path}")
    heads = _kept_heads(h, args.head)
    ledger = Ledger(h.ledger)
    try:
        after = 0
        while not args.verify_only:
            page = ledger.entries(after, 5000)
            for e in page:
                verdict = "GRANTED" if e["granted"] else "REFUSED"
                print(f"{e['n']:>5} {verdict} {e['requester']:<8} {e['kind']:<9}"
                      f" {e['subject']:<36} {e['reason']}")
            if len(page) < 5000:
                break
            after = page[-1]["n"]
        ok, msg = ledger.verify(heads)
    finally:
        ledger.close()
    kept = f" (and {len(heads)} kept head(s))" if heads else ""
    print("audit log " + ("OK: " if ok else "BROKEN: ") + msg + kept)
    return 0 if ok else 1


def cmd_sign_epoch(args):
    import json

    from authority.holder import KeyHolder

    holder = KeyHolder(home(args), _passphrase(args))
    try:
        sig = holder.sign_epoch(args.key_id)
    finally:
        holder.close()
    Path(args.out).write_text(json.dumps(sig, indent=2) + "\n")
    print(f"{args.out}: this holder's signature on key {args.key_id} ({sig['bits']} bits); the"
          " gateways need it (`gateway init/rekey --epoch-signature`)")


def cmd_head(args):
    import json

    from authority.holder import KeyHolder

    holder = KeyHolder(home(args), _passphrase(args))
    try:
        head = holder.head()
    finally:
        holder.close()
    text = json.dumps(head, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")


def cmd_backup(args):
    from authority.backup import backup

    m = backup(home(args), Path(args.out))
    print(f"{args.out}: the {m['role']} holder's home as of log entry {m['head']['n']}, made"
          " while it ran (its keys stay encrypted under its passphrase)")


def cmd_restore(args):
    from authority.backup import restore

    m = restore(Path(args.archive), home(args), replace=args.replace)
    print(f"restored as of log entry {m['head']['n']}. It releases nothing until reconciled:"
          " `gridveil holder reconcile --log <the auditor's export of this holder's log>"
          " --kept-head <the auditor's newest kept head> [--log <the other holder's export>]`")


def cmd_export_log(args):
    import json

    from authority.backup import export_log
    from authority.holder import KeyHolder

    holder = KeyHolder(home(args), _passphrase(args))
    try:
        x = export_log(holder, args.after)
    finally:
        holder.close()
    Path(args.out).write_text(json.dumps(x) + "\n")
    print(f"{args.out}: {len(x['entries'])} entries after {args.after}, up to the signed head"
          f" n={x['head']['n']}")


def cmd_reconcile(args):
    from authority.backup import reconcile
    from common.files import read_json

    exports = [read_json(Path(f), "log export") for f in args.log]
    heads = [read_json(Path(f), "kept log head") for f in args.kept_head]
    print(reconcile(home(args), exports, heads))


def register(subparsers) -> None:
    x = sub(subparsers, "keygen", "the dealer's key ceremony: a Paillier key, one sealed part per"
                                  " holder")
    x.add_argument("--bits", type=int, default=2048, help="modulus size (default 2048)")
    x.add_argument("--out", required=True, help="folder for the public key and the sealed parts")
    x.add_argument("--utility", help="the utility holder's transport key (from `holder init`)")
    x.add_argument("--guardian", help="the guardian holder's transport key")
    x.add_argument("--single", help="instead: one holder that gets the whole key")
    x.set_defaults(func=cmd_keygen)

    a = sub(subparsers, "holder", "one key holder: init, import-key, sign-epoch, tariff-approve,"
                                  " enroll, trust-gateway, trust-guardian, allow, serve, head,"
                                  " log, verify, backup, restore, export-log, reconcile; the"
                                  " guardian: requests, decide, standing, revoke, decisions")
    s = a.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "init", "create this holder's home, policy and transport key")
    x.add_argument("--role", required=True, choices=("utility", "guardian", "single"))
    x.add_argument("--k", type=int, default=5, help="minimum contributors per aggregate (>= 3)")
    x.add_argument("--billing", choices=("calendar-month", "days"), default="calendar-month",
                   help="bills cover whole calendar months (default), or whole days")
    x.add_argument("--min-bill-days", type=int, default=1,
                   help="with --billing days: the shortest bill, in days (default 1)")
    x.add_argument("--dp", choices=("on", "off"), default="on",
                   help="differential-privacy noise on every released aggregate (default on;"
                        " off only where exact sums are the point, as in the demo)")
    x.add_argument("--min-key-bits", type=int, default=2048,
                   help="refuse Paillier keys smaller than this (default 2048)")
    x.add_argument("--export-signing-key",
                   help="also copy this holder's signing.pub here (the guardian's goes to the"
                        " gateways; auditors check log heads with it)")
    x.add_argument("--export", required=True,
                   help="where to write the transport public key for the dealer")
    x.add_argument("--guardian-key", help="the utility's holder: the guardian holder's"
                                          " signing.pub, which signs every release decision")
    passphrase_args(x)
    tls_args(x, init=True)
    x.set_defaults(func=cmd_init)
    x = sub(s, "import-key", "open this holder's sealed share (or key) and keep it encrypted")
    x.add_argument("sealed", help="<key id>.<role>.sealed.json from `gridveil keygen`")
    x.add_argument("--pub", required=True, help="<key id>.pub.json from `gridveil keygen`")
    passphrase_args(x)
    x.set_defaults(func=cmd_import)
    x = sub(s, "tariff-approve", "add tariffs to this holder's registry (the only source of"
                                 " prices)")
    x.add_argument("files", nargs="+", help="tariff JSON files (see docs/privacy.md for bounds)")
    x.set_defaults(func=cmd_tariff)
    x = sub(s, "enroll", "enroll meters, each bound to one household (the guardian's registry)")
    x.add_argument("meter", nargs="?")
    x.add_argument("--household", help="the household (customer) the meter belongs to")
    x.add_argument("--file", help="or a JSON object {meter id: household id}")
    x.set_defaults(func=cmd_enroll)
    x = sub(s, "trust-gateway", "accept records signed by a gateway")
    x.add_argument("gateway_id")
    x.add_argument("public_key", help="the gateway's signing.pub")
    x.add_argument("--add", action="store_true",
                   help="keep its other keys too (a rotation: records under the old key"
                        " still verify); without it this key replaces them")
    x.set_defaults(func=cmd_trust)
    x = sub(s, "trust-guardian", "the utility's holder: the guardian's signing key, whose"
                                 " decisions it releases under")
    x.add_argument("public_key", help="the guardian holder's signing.pub")
    x.set_defaults(func=cmd_trust_guardian)
    x = sub(s, "requests", "the guardian: release requests waiting for a decision")
    x.add_argument("--all", action="store_true", help="decided ones too")
    passphrase_args(x)
    x.set_defaults(func=cmd_requests)
    x = sub(s, "decide", "the guardian: approve or decline a request, signed with this holder's"
                         " key")
    x.add_argument("request", type=int)
    g = x.add_mutually_exclusive_group(required=True)
    g.add_argument("--approve", action="store_true", dest="approve")
    g.add_argument("--decline", action="store_false", dest="approve")
    x.add_argument("--reason", help="why (required to decline; the requester sees it)")
    passphrase_args(x)
    x.set_defaults(func=cmd_decide)
    x = sub(s, "standing", "the guardian: approve routine releases ahead of any request")
    x.add_argument("what", choices=("aggregates", "bills"))
    x.add_argument("--neighbourhoods", default="*",
                   help="comma-separated, or * for any (default)")
    x.add_argument("--from", dest="start", required=True, help="UTC date or time it starts at")
    x.add_argument("--to", dest="end", required=True, help="UTC date or time it ends at")
    x.add_argument("--expires", help="UTC date or time after which it no longer counts")
    x.add_argument("--reason", help="why, for the log")
    passphrase_args(x)
    x.set_defaults(func=cmd_standing)
    x = sub(s, "revoke", "the guardian: withdraw a decision (this holder refuses it from now on)")
    x.add_argument("decision", type=int)
    passphrase_args(x)
    x.set_defaults(func=cmd_revoke)
    x = sub(s, "decisions", "the guardian: every decision signed here")
    passphrase_args(x)
    x.set_defaults(func=cmd_decisions)
    x = sub(s, "desk-password", "the guardian: set the password of the desk page this holder"
                                " serves at /desk")
    x.add_argument("--password-file", help="file with the password (or $GRIDVEIL_DESK_PASSWORD;"
                                           " else asked for on a terminal)")
    x.set_defaults(func=cmd_desk_password)
    x = sub(s, "allow", "let a requester (the MDMS) call the API with its token")
    x.add_argument("requester")
    g = x.add_mutually_exclusive_group(required=True)
    g.add_argument("--token-hash", help="SHA-256 of the requester's token, hex")
    g.add_argument("--token-hash-file", help="file holding that hash")
    x.set_defaults(func=cmd_allow)
    x = sub(s, "deny", "revoke every token of a requester (a serving holder refuses them at"
                       " once)")
    x.add_argument("requester")
    x.set_defaults(func=cmd_deny)
    x = sub(s, "serve", "serve this holder's HTTP API until SIGINT or SIGTERM")
    x.add_argument("--bind", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8711)
    passphrase_args(x)
    tls_args(x)
    x.set_defaults(func=cmd_serve)
    for name, text in (("log", "print this holder's decision log and verify its hash chain"),
                       ("verify", "verify this holder's decision log (edits, deletions, order,"
                                  " state, kept heads)")):
        x = sub(s, name, text)
        if name == "log":
            x.add_argument("--verify-only", action="store_true", help="only verify the chain")
        x.add_argument("--head", action="append", help="a head kept from `holder head` (or the"
                                                       " API's /v1/head): it must still be there")
        x.set_defaults(func=cmd_log, verify_only=name == "verify")
    x = sub(s, "sign-epoch", "sign a key epoch this holder holds a share of, for the gateways")
    x.add_argument("--key-id", required=True)
    x.add_argument("--out", required=True, help="file for the signature")
    passphrase_args(x)
    x.set_defaults(func=cmd_sign_epoch)
    backup_commands(s, "holder", "serves", "it then releases nothing until reconciled",
                    cmd_backup, cmd_restore)
    x = sub(s, "export-log", "write this holder's log entries after N with its signed head:"
                             " for the auditor to keep, and to reconcile a restored holder")
    x.add_argument("--after", type=int, default=0, help="entries after this number (default 0)")
    x.add_argument("--out", required=True, help="the file to write (JSON)")
    passphrase_args(x)
    x.set_defaults(func=cmd_export_log)
    x = sub(s, "reconcile", "bring a restored holder up to date from its auditor's exports and"
                            " kept heads, and the other holder's export")
    x.add_argument("--log", action="append", default=[],
                   help="an export (`holder export-log`) of this holder's log or the other's")
    x.add_argument("--kept-head", action="append", default=[],
                   help="a head of this holder's log that its auditor kept (`holder head`)")
    x.set_defaults(func=cmd_reconcile)
    x = sub(s, "head", "print the log's head signed with this holder's key, for auditors to keep")
    x.add_argument("--out", help="also write it to this file")
    passphrase_args(x)
    x.set_defaults(func=cmd_head)
