"""``python -m dpaudit`` (e.g. ``torchrun --standalone --nproc-per-node 2 -m dpaudit train CONFIG``)."""

from dpaudit.cli import main

if __name__ == "__main__":
    main()
