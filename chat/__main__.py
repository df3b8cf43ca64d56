"""`python -m chat`: the same as the installed `chat` command."""

from chat.cli import main

main(prog_name="chat")
