"""Does a one_key belong to this database? Its recorded fingerprint, or a trial decryption.

oned encrypts the attributes oned.conf lists in ``*_ENCRYPTED_ATTR`` with AES-256-CBC: the
key is the first 32 bytes of one_key's first token, the IV is all zeros (NULL), the padding
PKCS#7, and the database stores the result in base64 (src/common/NebulaUtil.cc
``aes256cbc_encrypt``/``aes256cbc_decrypt``@7.4). A key that decrypts one such value is the
database's key; a key that decrypts none of them is not.

Independently, once oned answers, onerun records a fingerprint of the key in oneadmin's
user template (``ONERUN_ONE_KEY_FINGERPRINT``, through the API: the database keeps it when
the volume is lost). The fingerprint is sha256 of a domain-separated string, never the key.

The ``cryptography`` package is imported only for a trial decryption (never by the probe).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

FINGERPRINT_ATTRIBUTE = "ONERUN_ONE_KEY_FINGERPRINT"
_FINGERPRINT_DOMAIN = b"onerun one_key fingerprint v1\0"
KEY_BYTES = 32  # AES-256: oned uses the first 32 bytes of the key string
_BLOCK = 16


def fingerprint(key: str) -> str:
    """sha256 hex of a domain-separated string holding the key; it reveals nothing usable."""
    return hashlib.sha256(_FINGERPRINT_DOMAIN + key.encode()).hexdigest()


def decrypts(key: str, value: str) -> bool | None:
    """Whether ``key`` decrypts ``value`` as oned's aes256cbc_decrypt would, into text.

    None when the value is not something oned encrypted (not base64, not whole AES blocks):
    such a value says nothing about the key. A wrong key yields valid padding about once in
    256 tries and then random bytes, which are not text: that counts as False.
    """
    raw_key = key.encode()
    if len(raw_key) < KEY_BYTES:
        return None
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not data or len(data) % _BLOCK:
        return None
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(raw_key[:KEY_BYTES]), modes.CBC(bytes(_BLOCK))).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(_BLOCK * 8).unpadder()
    try:
        text = (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except ValueError:  # bad padding, or bytes that are not UTF-8
        return False
    return all(char.isprintable() or char in "\r\n\t" for char in text)


@dataclass(frozen=True)
class KeyProof:
    """What the database says about a key: ``belongs`` True, False, or None (cannot tell)."""

    belongs: bool | None
    how: str


def prove_key(key: str, recorded: str | None, encrypted: Sequence[str]) -> KeyProof:
    """Check ``key`` against the recorded fingerprint, else against encrypted values."""
    if recorded is not None:
        if hmac.compare_digest(fingerprint(key), recorded.strip().lower()):
            return KeyProof(True, f"its fingerprint matches {FINGERPRINT_ATTRIBUTE} in "
                                  "oneadmin's template")
        return KeyProof(False, f"its fingerprint differs from {FINGERPRINT_ATTRIBUTE} in "
                               "oneadmin's template, recorded from the key this database was "
                               "used with")
    verdicts = [decrypts(key, value) for value in encrypted]
    tried = [verdict for verdict in verdicts if verdict is not None]
    if any(tried):
        return KeyProof(True, f"it decrypts {sum(tried)} of {len(tried)} encrypted "
                              "attribute(s) in the database")
    if tried:
        return KeyProof(False, f"it decrypts none of the {len(tried)} encrypted attribute(s) "
                               "in the database")
    return KeyProof(None, f"the database holds neither {FINGERPRINT_ATTRIBUTE} (recorded "
                          "once a start with this onerun completes) nor an encrypted attribute "
                          "to try it on")
