"""The ``brainfuse`` command line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BENCHES = {
    "parcellation": "brainfuse.benchmarks.parcellation",
    "eeg": "brainfuse.benchmarks.eeg",
    "train": "brainfuse.benchmarks.train",
    "encoders": "brainfuse.benchmarks.encoders",
    "dag": "brainfuse.benchmarks.dag",
    "ingest": "brainfuse.benchmarks.ingest",
    "methods": "brainfuse.benchmarks.methods",
}


def _demo_data(args: argparse.Namespace) -> int:
    from brainfuse.core.atlas import load_atlas
    from brainfuse.demo.dataset import make_demo_dataset
    from brainfuse.demo.xcpd import convert_to_xcpd
    from brainfuse.inputs import demo_runs

    atlas = load_atlas(data_dir=args.atlas_data_dir)
    make_demo_dataset(args.outdir, atlas, n_subjects=args.subjects, seed=args.seed)
    subjects = list(demo_runs(args.subjects, args.seed))
    convert_to_xcpd(args.outdir, subjects[len(subjects) - args.xcpd_subjects :], atlas)
    print(f"demo dataset written to {args.outdir}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from brainfuse.inspect import describe

    for path in args.paths:
        print(describe(path))
    return 0


def _check(args: argparse.Namespace) -> int:
    """Print the planning check of a config file (what ``snakemake -n`` checks first)."""
    import yaml

    from brainfuse.check import check_plan
    from brainfuse.config import read_config
    from brainfuse.core.errors import ConfigError
    from brainfuse.extensions import load_extensions

    try:
        config = read_config(yaml.safe_load(Path(args.configfile).read_text()) or {})
        catalog, modalities = load_extensions(config.extensions, config.variants)
        catalog.check(config.methods)
    except ConfigError as error:
        print(f"{args.configfile}: {error}", file=sys.stderr)
        return 1
    plan = check_plan(config, modalities, catalog)
    print(plan.text())
    return 1 if plan.errors else 0


def _pretrained(args: argparse.Namespace) -> int:
    """List the encoders pre-trained once on a corpus, or print one's manifest."""
    import json

    import pandas as pd

    from brainfuse.methods.pretrained import list_encoders, read_manifest

    if args.action == "inspect":
        if args.path is None:
            print(
                "brainfuse pretrained inspect: give an encoder.bin or its folder", file=sys.stderr
            )
            return 2
        try:
            manifest = read_manifest(args.path)
        except (FileNotFoundError, ValueError) as error:
            print(error, file=sys.stderr)
            return 1
        print(json.dumps(manifest, indent=2))
        return 0
    root = Path(args.path or "results/pretrained")
    rows = list_encoders(root)
    if not rows:
        print(f"no pre-trained encoder under {root}")
        return 0
    table = pd.DataFrame(rows)[
        ["method", "corpus", "n_subjects", "n_samples", "created", "path"]
    ].rename(columns={"n_subjects": "subjects", "n_samples": "samples", "created": "date"})
    print(table.to_string(index=False))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(BENCHES[args.name])
    return module.main(args.rest)


def _run(args: argparse.Namespace) -> int:
    """Run the workflow shipped with this checkout (Snakefile in the project root)."""
    root = Path(__file__).resolve().parents[2]
    snakefile = root / "Snakefile"
    if not snakefile.exists():
        print(f"no Snakefile at {snakefile}: run snakemake from a checkout", file=sys.stderr)
        return 2
    cmd = ["snakemake", "--snakefile", str(snakefile), "--cores", str(args.cores), *args.rest]
    return subprocess.call(cmd, env=os.environ.copy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="brainfuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write the synthetic demo dataset")
    demo.add_argument("outdir")
    demo.add_argument("--subjects", type=int, default=24)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--xcpd-subjects", type=int, default=3, help="last subjects written as XCP-D time series"
    )
    demo.add_argument(
        "--atlas-data-dir", default=None, help="nilearn data folder holding the atlas"
    )
    demo.set_defaults(func=_demo_data)

    inspect = sub.add_parser("inspect", help="describe any artifact brainfuse writes")
    inspect.add_argument("paths", nargs="+")
    inspect.set_defaults(func=_inspect)

    check = sub.add_parser(
        "check", help="check a config and its inputs before running (found, filtered, planned)"
    )
    check.add_argument("--configfile", default="config.yaml")
    check.set_defaults(func=_check)

    pretrained = sub.add_parser(
        "pretrained", help="encoders pre-trained once on a corpus: list them, inspect one"
    )
    pretrained.add_argument("action", choices=["list", "inspect"])
    pretrained.add_argument(
        "path",
        nargs="?",
        default=None,
        help="list: a folder (default results/pretrained); inspect: an encoder.bin or its folder",
    )
    pretrained.set_defaults(func=_pretrained)

    bench = sub.add_parser("bench", help="benchmarks that print speed ratios")
    bench.add_argument("name", choices=sorted(BENCHES))
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    run = sub.add_parser("run", help="run the workflow (extra arguments go to snakemake)")
    run.add_argument("--cores", default="all")
    run.add_argument("rest", nargs=argparse.REMAINDER)
    run.set_defaults(func=_run)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
