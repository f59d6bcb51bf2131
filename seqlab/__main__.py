"""`python -m seqlab` is the `seqlab` command (also what `torchrun -m seqlab` starts)."""

from seqlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
