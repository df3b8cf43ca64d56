"""Accounts (SPEC §12): registered nicks, logins, closed servers. Policy here (accounts.py),
hashing (passwords.py), attempt windows (attempts.py); the storage is store/accounts.py."""

from chatd.accounts.accounts import AccountError, Accounts

__all__ = ["AccountError", "Accounts"]
