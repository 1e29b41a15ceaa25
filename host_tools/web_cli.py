"""`gridveil web` and `gridveil web-user`: the MDMS dashboard and portal."""

from __future__ import annotations

from common.files import ConfigError

from .cli_common import home, read_secret_file, sub


def cmd_web(args):
    import uvicorn

    from mdms.app import create_app
    from mdms.web import WebConfig

    if not (home(args) / "gateway").exists():
        raise ConfigError(f"no gateway in {home(args)}; set --home")
    app = create_app(WebConfig(home(args), secure_cookies=args.https))
    print(f"GridVeil web on http://{args.bind}:{args.port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.bind, port=args.port, log_level="info" if args.verbose else
                "warning", access_log=args.verbose)


def cmd_user_add(args):
    from mdms.pages import add_user
    from mdms.store import MdmsStore
    from mdms.web import WebConfig

    pw = read_secret_file(args.password_file, "GRIDVEIL_WEB_PASSWORD", "password")
    if pw is None:
        raise ConfigError("give the password with --password-file or $GRIDVEIL_WEB_PASSWORD")

    class _W:
        store = MdmsStore(WebConfig(home(args)).mdms_db)

    try:
        add_user(_W, args.username, args.role, pw)
    finally:
        _W.store.close()
    print(f"user {args.username} ({args.role}) added")


def register(subparsers) -> None:
    x = sub(subparsers, "web", "serve the MDMS dashboard and the customer portal")
    x.add_argument("--bind", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8080)
    x.add_argument("--https", action="store_true",
                   help="mark cookies Secure (when a TLS proxy fronts the app)")
    x.set_defaults(func=cmd_web)
    u = sub(subparsers, "web-user", "dashboard accounts")
    s = u.add_subparsers(dest="action", required=True, metavar="ACTION")
    x = sub(s, "add", "add a dashboard user (admin, operator, analyst, billing, auditor, guardian)")
    x.add_argument("username")
    x.add_argument("--role", required=True)
    x.add_argument("--password-file", help="file with the password (or $GRIDVEIL_WEB_PASSWORD)")
    x.set_defaults(func=cmd_user_add)
