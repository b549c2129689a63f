"""The ``dropkit`` command: ``methods`` and ``bench`` here; the lab's commands (``run``, ``sweep``, ``report``,
``lab``, ``probe``, ``experts``) from ``dropkit.lab.cli.register_commands``, their one registration point. Each
sub-command sets ``func`` to a callable taking the parsed ``args`` and returning an exit code."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from dropkit import __version__


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _cmd_methods(args: argparse.Namespace) -> int:
    import dropkit

    cards = dropkit.methods(args.pattern, family=args.family, kind=args.kind)
    if args.json:
        print(json.dumps([c.as_dict() for c in cards], indent=2, ensure_ascii=False))
        return 0
    axes = list(dropkit.TAXONOMY_AXES)
    if args.markdown:
        print("| method | family | kind | unit | θ depends on | paper | defaults |")
        print("|---|---|---|---|---|---|---|")
        def cell(text: str) -> str:  # a "|" inside a cell (p(θ|x)) would end it
            return str(text).replace("|", "\\|")

        for c in cards:
            defaults = ", ".join(f"{k}={v!r}" for k, v in c.defaults.items()
                                 if k not in ("generator", "process_group") and not k.startswith("_"))
            print(f"| `{c.name}` | {c.family} | {c.kind} | {c.taxonomy['unit']} | {cell(c.taxonomy['theta'])} | "
                  f"{cell(c.paper)} | {cell(defaults)} |")
        return 0
    rows = [[c.name, c.family, c.kind, *[c.taxonomy[a] for a in axes]] for c in cards]
    print(_format_table(rows, ["name", "family", "kind", *axes]))
    if args.verbose:
        for c in cards:
            defaults = ", ".join(f"{k}={v!r}" for k, v in c.defaults.items() if k != "generator")
            print(f"\n{c.name}: {c.summary}\n  paper: {c.paper}\n  defaults: {defaults}\n  page: {c.doc_page}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dropkit.bench import main as bench_main

    build_resnet = None
    if not args.no_memory:  # the saved-memory group trains the lab's ResNet-8 (the lab extra)
        from dropkit.lab.cli import bench_resnet as build_resnet
    return bench_main(args, build_resnet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropkit", description="Dropout-family regularizers and the lab that compares them.")
    parser.add_argument("--version", action="version", version=f"dropkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="list the registered methods with their taxonomy")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter on the name, e.g. '*drop*'")
    p.add_argument("--family", default=None)
    p.add_argument("--kind", default=None)
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.add_argument("--markdown", action="store_true", help="print the method table as Markdown (for the README)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each card's paper and defaults")
    p.set_defaults(func=_cmd_methods)

    from dropkit.bench import add_arguments as add_bench_arguments

    p = sub.add_parser("bench", help="time every activation method against nn.Dropout2d and a 3x3 conv")
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)

    # The lab is a front-end of the library, so the core imports it only here, when the command line is built.
    from dropkit.lab.cli import register_commands

    register_commands(sub)
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # A plain `kill` stops a command as Ctrl-C does: worker processes are stopped and one line says how to resume
    # (Python's default would end this process at once, with no word and no cleanup).
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # main() called from a thread other than the main one: leave signals alone
        previous = None
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Bad input from the command line: say what was wrong, no traceback.
        print(f"dropkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # A worker process killed from outside (the out-of-memory killer): one line that says how to resume.
        sweep = sys.modules.get("dropkit.lab.sweep")
        if sweep is None or not isinstance(err, sweep.WorkerDied):
            raise
        print(f"dropkit {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C: finished runs are already stored, each in its own transaction; the rest is redone next time.
        resume = (f"; finished runs are kept in {args.db or 'the store'}, run the same command again to resume"
                  if hasattr(args, "db") else "")
        print(f"dropkit {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
