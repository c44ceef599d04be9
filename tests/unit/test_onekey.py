"""one_key proofs: the fingerprint, and trial decryption of what oned encrypted.

Ciphertexts are made by the openssl CLI with oned's parameters (src/common/NebulaUtil.cc:
AES-256-CBC, the key's first 32 bytes, a NULL IV, PKCS#7, base64), independently of onerun.
The key of the real oned 7.0.0 fixture is used where ../shared is present.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest
from testlib import DB_FIXTURES, require_shared

from onerun.onekey import FINGERPRINT_ATTRIBUTE, decrypts, fingerprint, prove_key

KEY = "4b1acccde94e4e8e26e250a21b2d44e99e99eafa960a6933b00199b11f8c952e"
OTHER = "0123456789abcdef" * 4
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n" \
          "-----END OPENSSH PRIVATE KEY-----\n"


def openssl_encrypt(key: str, plain: str) -> str:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    done = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", key.encode()[:32].hex(), "-iv", "0" * 32,
         "-base64"], input=plain.encode(), capture_output=True, check=True)
    return done.stdout.decode()  # with openssl's line breaks, as some encoders write


@pytest.mark.parametrize("plain", [SSH_KEY, "p", "", "ünïcödé passphrase", "x" * 16])
def test_the_right_key_decrypts_what_oned_encrypted(plain: str) -> None:
    value = openssl_encrypt(KEY, plain)
    assert decrypts(KEY, value) is True
    assert decrypts(OTHER, value) is False


def test_only_the_first_32_bytes_count_as_for_oned() -> None:
    value = openssl_encrypt(KEY, "secret")
    assert decrypts(KEY[:32] + "anything after the 32nd byte", value) is True


@pytest.mark.parametrize("value", ["", "plain-restic-password", "not base64 !", "QUJD",
                                   "-----BEGIN OPENSSH PRIVATE KEY-----"])
def test_values_oned_did_not_encrypt_say_nothing(value: str) -> None:
    assert decrypts(KEY, value) is None


def test_a_wrong_key_never_passes_for_the_right_one() -> None:
    """About one wrong key in 256 unpads cleanly; its bytes are still no text."""
    values = [openssl_encrypt(KEY, f"password-{n}") for n in range(64)]
    wrong = [f"{n:064x}" for n in range(40)]
    assert not any(decrypts(key, value) for key in wrong for value in values)


def test_fingerprint_is_domain_separated_and_hides_the_key() -> None:
    value = fingerprint(KEY)
    assert value == hashlib.sha256(b"onerun one_key fingerprint v1\0" + KEY.encode()).hexdigest()
    assert value != hashlib.sha256(KEY.encode()).hexdigest()
    assert KEY not in value and len(value) == 64


def test_prove_key() -> None:
    encrypted = (openssl_encrypt(KEY, "a"),)
    assert prove_key(KEY, fingerprint(KEY), ()).belongs is True
    assert prove_key(OTHER, fingerprint(KEY), encrypted).belongs is False  # fingerprint first
    assert prove_key(KEY, None, encrypted).belongs is True
    assert prove_key(OTHER, None, encrypted).belongs is False
    unknown = prove_key(KEY, None, ("plain",))
    assert unknown.belongs is None and FINGERPRINT_ATTRIBUTE in unknown.how


def test_the_fixture_key_of_a_real_oned() -> None:
    key = require_shared(DB_FIXTURES / "sqlite-bootstrapped/dot-one/one_key").read_text().split()[0]
    assert prove_key(key, None, (openssl_encrypt(key, SSH_KEY),)).belongs is True


def test_cryptography_is_not_imported_until_a_value_is_tried() -> None:
    """The probe imports nothing of this; a start imports it only to try a ONE_KEY."""
    code = ("import sys; from onerun.onekey import prove_key, fingerprint;"
            " prove_key('k' * 64, fingerprint('k' * 64), ()); prove_key('k' * 64, None, ('x',));"
            " print('cryptography' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
