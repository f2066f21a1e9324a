"""``python -m tuplehub.client.cli`` runs the ``tuplehub`` command."""

from tuplehub.client.cli import main

main()
