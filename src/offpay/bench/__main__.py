"""``python -m offpay.bench``: the same command as ``offpay bench``."""

from __future__ import annotations

import typer

from offpay.bench.cli import bench


def main() -> None:
    typer.run(bench)


if __name__ == "__main__":
    main()
