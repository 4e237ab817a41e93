"""`python -m cli ...`: the `chainyard` command without its console script (the local stack starts the API so)."""

from cli import main

main()
