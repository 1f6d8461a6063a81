"""`python -m dkd` is the `dkd` command."""

from dkd.cli import main

main()
