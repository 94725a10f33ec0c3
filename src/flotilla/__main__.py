"""``python -m flotilla``: the same as the ``flotilla`` command."""

from flotilla.cli import main

if __name__ == "__main__":
    main()
