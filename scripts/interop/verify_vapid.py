#!/usr/bin/env python3
"""Checks a VAPID `Authorization` header (RFC 8292) independently of the
plugin: the ES256 signature of the JWT against the `k=` key (with
`cryptography` directly and with Mozilla's `py_vapid`), the JWT header, and
the claims `aud`, `exp` (in the future, at most 24 h away) and `sub`.
Prints the claims as JSON on success; exits 1 with the reason otherwise.
Used by tests/tests/end_to_end/interop.rs.

usage: verify_vapid.py AUTHORIZATION_HEADER EXPECTED_AUD EXPECTED_SUB [EXPECTED_K]
"""
import base64
import json
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid02


def b64url_decode(s: str) -> bytes:
    if "=" in s or "+" in s or "/" in s:
        raise ValueError("not unpadded base64url: %r" % s)
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def fail(msg: str) -> int:
    print("VAPID check failed: " + msg, file=sys.stderr)
    return 1


def parse(header: str):
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError("scheme is %r, not vapid" % scheme)
    params = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise ValueError("bad parameter %r" % part)
        params[name.strip().lower()] = value.strip()
    return params["t"], params["k"]


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    header, want_aud, want_sub = sys.argv[1:4]
    want_k = sys.argv[4] if len(sys.argv) == 5 else None
    try:
        token, k = parse(header)
    except (ValueError, KeyError) as e:
        return fail("cannot parse header: %r" % e)
    if want_k is not None and k != want_k:
        return fail("k=%s, expected %s" % (k, want_k))
    raw_key = b64url_decode(k)
    if len(raw_key) != 65 or raw_key[0] != 4:
        return fail("k is not an uncompressed P-256 point")
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)

    parts = token.split(".")
    if len(parts) != 3:
        return fail("JWT has %d parts" % len(parts))
    signing_input = (parts[0] + "." + parts[1]).encode()
    sig = b64url_decode(parts[2])
    if len(sig) != 64:
        return fail("signature is %d octets, not raw r||s (64)" % len(sig))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return fail("ES256 signature does not verify (cryptography)")
    # The same check through py_vapid's own verifier.
    if not Vapid02.from_raw_public(k.encode()).verify_token(
        validation_token=signing_input, verification_token=parts[2]
    ):
        return fail("ES256 signature does not verify (py_vapid)")

    jwt_header = json.loads(b64url_decode(parts[0]))
    if jwt_header.get("alg") != "ES256":
        return fail("alg is %r" % jwt_header.get("alg"))
    if jwt_header.get("typ", "JWT") != "JWT":
        return fail("typ is %r" % jwt_header.get("typ"))
    claims = json.loads(b64url_decode(parts[1]))
    if claims.get("aud") != want_aud:
        return fail("aud is %r, expected %r" % (claims.get("aud"), want_aud))
    if claims.get("sub") != want_sub:
        return fail("sub is %r, expected %r" % (claims.get("sub"), want_sub))
    exp = claims.get("exp")
    now = int(time.time())
    if not isinstance(exp, int) or exp <= now or exp > now + 24 * 3600:
        return fail("exp %r is not within the next 24 h (now %d)" % (exp, now))
    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
