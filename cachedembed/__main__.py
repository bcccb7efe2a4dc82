"""``python -m cachedembed`` runs the command line."""

from .cli import main

main()
