"""Encryption keys the tests configure, and a storage location that uses them."""

from __future__ import annotations

import base64

RAW_A, RAW_B = bytes(range(32)), bytes(range(100, 132))
KEY_A = base64.b64encode(RAW_A).decode()  # base64 in the environment
KEY_B = RAW_B.hex()  # hex works too

VAULT = """
[storages.vault]
url = "{url}"
{extra}
{keys}
"""
KEYS_A = 'encryption_key_id = "vault-2026"\nencryption_key_env = "SNAPLEDGER_TEST_KEY_A"'
