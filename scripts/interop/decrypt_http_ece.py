#!/usr/bin/env python3
"""Decrypts one aes128gcm Web Push body (RFC 8291) with python `http_ece`,
the RFC 8188 author's reference implementation, and writes the plaintext to
stdout. Used by tests/tests/end_to_end/interop.rs.

usage: decrypt_http_ece.py BODY_FILE PRIVATE_KEY AUTH
  BODY_FILE    the push body as received (binary)
  PRIVATE_KEY  the receiver's P-256 private scalar, base64url (32 octets)
  AUTH         the receiver's auth secret, base64url (16 octets)
"""
import base64
import sys

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    body_file, private_b64, auth_b64 = sys.argv[1:]
    with open(body_file, "rb") as f:
        body = f.read()
    scalar = b64url_decode(private_b64)
    if len(scalar) != 32:
        print("private key must be 32 octets", file=sys.stderr)
        return 2
    private_key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    # With a private key and no dh, http_ece takes the sender's public key
    # from the aes128gcm header's keyid (RFC 8291 §4).
    plaintext = http_ece.decrypt(
        body,
        private_key=private_key,
        dh=None,
        auth_secret=b64url_decode(auth_b64),
        version="aes128gcm",
    )
    sys.stdout.buffer.write(plaintext)
    return 0


if __name__ == "__main__":
    sys.exit(main())
