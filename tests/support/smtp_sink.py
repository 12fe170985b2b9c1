"""An SMTP server for tokenwarden's tests: stores every message it accepts.

Usage: smtp_sink.py DIR [--port N] [--starttls CERT KEY | --implicit CERT KEY]
                        [--auth USER PASS] [--reject CODE] [--echo-auth]

Listens on 127.0.0.1 (a free port unless --port), prints "port N" once ready, and serves
until standard input closes, so it dies with the test process that started it. Message n is
stored as DIR/<n>.eml plus DIR/<n>.json: {"mail_from", "rcpt_tos", "tls", "auth_user"}.

--starttls: STARTTLS offered and required before MAIL. --implicit: TLS from the first byte.
--auth: AUTH PLAIN/LOGIN required, only this user and password accepted; offered only under
TLS, except without any TLS option (plain text to loopback). --reject: every DATA is
answered with CODE (a 5xx or 4xx) and nothing is stored. --echo-auth: every AUTH is refused
with a 535 that quotes what the client sent (the AUTH PLAIN argument in base64, the user and
the password), as a hostile or careless server may.
"""
import argparse
import asyncio
import itertools
import json
import os
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--implicit", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth", nargs=2, metavar=("USER", "PASS"))
    p.add_argument("--reject", type=int)
    p.add_argument("--echo-auth", action="store_true")
    args = p.parse_args()

    counter = itertools.count(1)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            if args.reject:
                return f"{args.reject} {'rejected' if args.reject >= 500 else 'try again later'} by smtp_sink"
            n = next(counter)
            tls = server.transport.get_extra_info("ssl_object") is not None or session.ssl is not None
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": tls,
                "auth_user": session.auth_data if session.authenticated else None,
            }
            with open(os.path.join(args.dir, f"{n}.eml"), "wb") as f:
                f.write(envelope.original_content)
            # The .json last: a reader that sees it sees the whole message.
            tmp = os.path.join(args.dir, f".{n}.json.tmp")
            with open(tmp, "w") as f:
                json.dump(meta, f)
            os.rename(tmp, os.path.join(args.dir, f"{n}.json"))
            return "250 OK stored"

    def authenticator(server, session, envelope, mechanism, auth_data):
        if args.echo_auth and isinstance(auth_data, LoginPassword):
            import base64

            plain = b"\0" + auth_data.login + b"\0" + auth_data.password
            quoted = base64.b64encode(plain).decode()
            return AuthResult(
                success=False,
                handled=False,
                message=f"535 5.7.8 refused AUTH {mechanism} {quoted} "
                f"(user {auth_data.login.decode()}, password {auth_data.password.decode()})",
            )
        ok = (
            isinstance(auth_data, LoginPassword)
            and args.auth is not None
            and auth_data.login.decode() == args.auth[0]
            and auth_data.password.decode() == args.auth[1]
        )
        # handled=False: aiosmtpd itself answers 235 or 535.
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    def context(pair):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pair[0], pair[1])
        return ctx

    def factory():
        kw = {}
        if args.starttls:
            kw.update(tls_context=context(args.starttls), require_starttls=True)
        if args.auth:
            # aiosmtpd offers AUTH only after STARTTLS by default; implicit TLS and a plain
            # loopback sink must offer it without.
            kw.update(
                authenticator=authenticator,
                auth_required=True,
                auth_require_tls=bool(args.starttls),
            )
        return SMTP(Handler(), hostname="smtp-sink.test", **kw)

    loop = asyncio.new_event_loop()
    ssl_ctx = context(args.implicit) if args.implicit else None
    server = loop.run_until_complete(
        loop.create_server(factory, host="127.0.0.1", port=args.port, ssl=ssl_ctx)
    )
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)

    def wait_stdin():
        sys.stdin.read()
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=wait_stdin, daemon=True).start()
    loop.run_forever()
    server.close()


if __name__ == "__main__":
    main()
