"""chatctl: the admin command-line client for a running chatd (talks to its admin socket)."""
