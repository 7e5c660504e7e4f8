"""SNMPv3 privacy ciphers (AES-CFB128, DES/3DES-CBC) from the OpenSSL the interpreter already runs on.

pysnmp encrypts with the `cryptography` package, whose Rust library alone maps ~6 MB into the
agent and ~9 MB in all. The same ciphers are in the libcrypto that Python's own hashlib and ssl
are linked against, already loaded: these objects are shaped like the `Cipher(...)` pysnmp
builds (`.encryptor()` / `.decryptor()` with `update` and `finalize`) and run on that library
through ctypes. Where its symbols cannot be reached (Windows, a statically linked build),
`available()` is False and pysnmp keeps `cryptography`.
"""

from __future__ import annotations

import ctypes
from typing import Any

_BLOCK = {"aes": 16, "des3": 8}


def _library() -> Any | None:
    try:
        import _hashlib  # linked against the interpreter's libcrypto

        lib = ctypes.CDLL(_hashlib.__file__)  # dlsym() on it searches its libcrypto too
        p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for name, args, res in (
            ("EVP_CIPHER_CTX_new", [], p),
            ("EVP_CIPHER_CTX_free", [p], None),
            ("EVP_CipherInit_ex", [p, p, p, c, c, i], i),
            ("EVP_CIPHER_CTX_set_padding", [p, i], i),
            ("EVP_CipherUpdate", [p, c, ctypes.POINTER(i), c, i], i),
            ("EVP_CipherFinal_ex", [p, c, ctypes.POINTER(i)], i),
            ("EVP_aes_128_cfb128", [], p),
            ("EVP_aes_192_cfb128", [], p),
            ("EVP_aes_256_cfb128", [], p),
            ("EVP_des_ede3_cbc", [], p),
        ):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
    except (ImportError, OSError, AttributeError):
        return None
    return lib


_lib = _library()


def available() -> bool:
    return _lib is not None


class CipherError(ValueError):
    """OpenSSL refused the key, IV or data (e.g. CBC data that is not whole blocks)."""


class _Context:
    """One encryption or decryption pass, as cryptography's CipherContext."""

    def __init__(self, kind: str, key: bytes, iv: bytes, encrypt: bool) -> None:
        assert _lib is not None
        self._ctx: int | None = None
        if kind == "aes":
            if len(key) not in (16, 24, 32):
                raise CipherError(f"AES key of {len(key)} bytes")
            cipher = {16: _lib.EVP_aes_128_cfb128, 24: _lib.EVP_aes_192_cfb128, 32: _lib.EVP_aes_256_cfb128}
            evp = cipher[len(key)]()
        else:  # TripleDES: 8 bytes is single DES (k1=k2=k3), 16 bytes is two-key 3DES (k3=k1)
            if len(key) == 8:
                key = key * 3
            elif len(key) == 16:
                key = key + key[:8]
            if len(key) != 24:
                raise CipherError(f"TripleDES key of {len(key)} bytes")
            evp = _lib.EVP_des_ede3_cbc()
        if len(iv) != _BLOCK[kind]:
            raise CipherError(f"IV of {len(iv)} bytes")
        self._block = _BLOCK[kind]
        self._ctx = _lib.EVP_CIPHER_CTX_new()
        if not self._ctx:
            raise MemoryError("EVP_CIPHER_CTX_new")
        if _lib.EVP_CipherInit_ex(self._ctx, evp, None, bytes(key), bytes(iv), 1 if encrypt else 0) != 1:
            self._free()
            raise CipherError("EVP_CipherInit_ex failed")
        _lib.EVP_CIPHER_CTX_set_padding(self._ctx, 0)  # as cryptography: the caller pads (pysnmp does)

    def update(self, data: bytes) -> bytes:
        assert _lib is not None
        if not self._ctx:
            raise CipherError("context already finalized")
        data = bytes(data)
        out = ctypes.create_string_buffer(len(data) + self._block)
        n = ctypes.c_int(0)
        if _lib.EVP_CipherUpdate(self._ctx, out, ctypes.byref(n), data, len(data)) != 1:
            raise CipherError("EVP_CipherUpdate failed")
        return out.raw[: n.value]

    def finalize(self) -> bytes:
        assert _lib is not None
        if not self._ctx:
            raise CipherError("context already finalized")
        out = ctypes.create_string_buffer(self._block)
        n = ctypes.c_int(0)
        try:
            if _lib.EVP_CipherFinal_ex(self._ctx, out, ctypes.byref(n)) != 1:
                raise CipherError("data is not a whole number of blocks")
            return out.raw[: n.value]
        finally:
            self._free()

    def _free(self) -> None:
        if self._ctx and _lib is not None:
            _lib.EVP_CIPHER_CTX_free(self._ctx)
        self._ctx = None

    def __del__(self) -> None:
        self._free()


class Cipher:
    """AES in CFB128 mode or TripleDES in CBC mode, with a key and an IV."""

    def __init__(self, kind: str, key: bytes, iv: bytes) -> None:
        self.kind, self.key, self.iv = kind, bytes(key), bytes(iv)

    def encryptor(self) -> _Context:
        return _Context(self.kind, self.key, self.iv, True)

    def decryptor(self) -> _Context:
        return _Context(self.kind, self.key, self.iv, False)


def aes_cfb(key: bytes, iv: bytes) -> Cipher:
    return Cipher("aes", key, iv)


def des3_cbc(key: bytes, iv: bytes) -> Cipher:
    return Cipher("des3", key, iv)
