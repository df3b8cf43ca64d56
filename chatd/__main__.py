"""`python -m chatd`: the same entry point as the `chatd` console script."""

from chatd.cli import main

if __name__ == "__main__":
    # prog_name so that usage and --version say "chatd", not "__main__.py".
    main(prog_name="chatd")
