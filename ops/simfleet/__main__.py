"""``python -m ops.simfleet --fleet m3-ultra-sim [--time-scale 0.1]``: serve until Ctrl-C."""

from ops.simfleet._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
