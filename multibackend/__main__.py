"""``python -m multibackend`` runs the command-line tool."""

from multibackend.cli import main

if __name__ == "__main__":
    main()
