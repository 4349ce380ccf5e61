"""The client side of the benchmarks, in its own process: ``python [-S] bench/client_worker.py [--vendor DIR]``.

With ``--vendor`` (a folder holding ``bridge/editor`` as ``bridge.install.write_editor_package``
writes it) it imports the client library from there, with its own pure-Python
websockets and msgpack, as the editors' plug-ins do. It reads one JSON command per line on stdin and
answers each with one line on stdout that starts with ``@@``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _set_path(vendor: str | None) -> None:
    # bench/ itself off the path (its modules are the bench package); the vendored copies ahead of the checkout
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(_ROOT))
    if vendor:
        sys.path.insert(0, vendor)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vendor", help="a folder holding bridge/editor as install.write_editor_package writes it")
    args = parser.parse_args(argv)
    _set_path(args.vendor)
    from bench.client_ops import serve

    serve(expect_pure=bool(args.vendor))


if __name__ == "__main__":
    main()
