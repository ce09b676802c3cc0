"""`python -m imagegen` runs the command-line tool."""

from imagegen.cli import main

if __name__ == "__main__":
    main()
