"""SNMPv3 privacy ciphers from the interpreter's OpenSSL (checks/snmp/ciphers.py) give exactly what
`cryptography` gives for every protocol pysnmp builds with them: AES-128/192/256 in CFB128, DES
(as TripleDES with the key three times) and 3DES in CBC."""

from __future__ import annotations

import os

import pytest

from hisguard.checks.snmp import ciphers

pytest.importorskip("cryptography")
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

pytestmark = pytest.mark.skipif(not ciphers.available(), reason="libcrypto not reachable here")


def both_ways(ours: ciphers.Cipher, theirs: Cipher, data: bytes) -> tuple[bytes, bytes]:
    enc = ours.encryptor()
    mine = enc.update(data[:5]) + enc.update(data[5:]) + enc.finalize()
    ref = theirs.encryptor()
    expected = ref.update(data) + ref.finalize()
    dec = ours.decryptor()
    return mine, expected if (dec.update(mine) + dec.finalize()) == data else b"round trip failed"


@pytest.mark.parametrize("size", [16, 24, 32])
@pytest.mark.parametrize("length", [1, 16, 77, 1500])
def test_aes_cfb128_matches_cryptography(size: int, length: int) -> None:
    key, iv, data = os.urandom(size), os.urandom(16), os.urandom(length)
    mine, expected = both_ways(ciphers.aes_cfb(key, iv), Cipher(algorithms.AES(key), CFB(iv)), data)
    assert mine == expected


@pytest.mark.parametrize("size", [8, 16, 24])
def test_des_and_3des_cbc_match_cryptography(size: int) -> None:
    key, iv, data = os.urandom(size), os.urandom(8), os.urandom(8 * 37)
    full = {8: key * 3, 16: key + key[:8], 24: key}[size]  # the three-key form of each
    theirs = Cipher(decrepit.TripleDES(full), modes.CBC(iv))
    mine, expected = both_ways(ciphers.des3_cbc(key, iv), theirs, data)
    assert mine == expected


def test_bad_input_is_refused_like_cryptography_refuses_it() -> None:
    enc = ciphers.des3_cbc(os.urandom(8), os.urandom(8)).encryptor()
    enc.update(b"not a whole block")
    with pytest.raises(ValueError, match="whole number of blocks"):
        enc.finalize()
    with pytest.raises(ValueError, match="already finalized"):
        enc.update(b"12345678")
    with pytest.raises(ValueError, match="AES key of 20 bytes"):
        ciphers.aes_cfb(os.urandom(20), os.urandom(16)).encryptor()
    with pytest.raises(ValueError, match="IV of 8 bytes"):
        ciphers.aes_cfb(os.urandom(16), os.urandom(8)).decryptor()
