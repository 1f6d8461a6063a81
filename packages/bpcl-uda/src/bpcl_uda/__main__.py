"""`python -m bpcl_uda` is the `bpcl-uda` command."""

from bpcl_uda.cli import main

main()
