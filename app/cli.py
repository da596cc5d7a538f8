"""The ``attnlens`` command line."""
from __future__ import annotations

import argparse

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlens", description="See what CNN plug-in blocks attend to.")
    parser.add_argument("--version", action="version", version=f"attnlens {__version__}")
    subcommands = parser.add_subparsers(dest="command")
    subcommands.add_parser("blocks", help="list the block kinds attnlens reads, with their classes")
    return parser


def list_blocks() -> None:
    import blocks

    for kind, names in (("acmix", "ACmix"), ("gc", "CB2d / GlobalContextBlock"),
                        ("ca", "CA / CoordinateAttention"), ("spd", "space_to_depth / SPDConv"),
                        ("dcn", "DCN / DCNv2 (mmcv-style), torchvision DeformConv2d")):
        print(f"{kind:6} {names}")
    print(f"\nimport them with: from blocks import {', '.join(blocks.__all__[:7])}")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "blocks":
        list_blocks()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
