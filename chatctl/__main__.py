"""`python -m chatctl`: the same as the installed `chatctl` command."""

from chatctl.cli import main

main(prog_name="chatctl")
