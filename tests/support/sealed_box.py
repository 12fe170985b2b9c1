"""libsodium sealed boxes through PyNaCl, an implementation independent of tokenwarden's, for
the loopback GitHub receiver of the `github_actions_secret` tests.

`sealed_box.py keypair` prints a new key pair, "<secret key> <public key>", base64.
`sealed_box.py open` reads the secret key and a sealed value (base64, one a line) on standard
input and prints what the box holds. Nothing secret is ever an argument.
"""
import base64
import sys

from nacl.public import PrivateKey, SealedBox

if sys.argv[1] == "keypair":
    sk = PrivateKey.generate()
    print(base64.b64encode(bytes(sk)).decode(), base64.b64encode(bytes(sk.public_key)).decode())
elif sys.argv[1] == "open":
    sk_b64, sealed_b64 = sys.stdin.read().split()
    sk = PrivateKey(base64.b64decode(sk_b64))
    sys.stdout.write(SealedBox(sk).decrypt(base64.b64decode(sealed_b64)).decode())
else:
    sys.exit(f"unknown command {sys.argv[1]!r}")
