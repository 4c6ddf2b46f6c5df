"""`python -m cxraug` is the same as the `cxraug` command."""

from cxraug.cli import main

if __name__ == "__main__":
    main()
