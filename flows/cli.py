"""`ltx2`: run the pipeline, show its status, make the tiny model and the demo data.

Entry point only: it configures the process (Prefect settings, logging), then hands over to flows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MODEL_STAGES = {"text-embeds", "latents", "train", "validate"}
STAGE_HELP = "comma-separated stages: probe,filter,bucket,captions,text-embeds,latents,train,validate (default: all)"


def _prefect_defaults(verbose: bool) -> None:
    # Set before prefect is imported: its settings are read at import time.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    if not verbose:  # our summary says what happened; the UI and the API still get every log line
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def _stages(text: str | None) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()] if text else []


def _video_datasets(datasets: list) -> list:
    return [d for d in datasets if getattr(d, "dataset_type", None) == "video" and not d.disabled]


def cmd_run(args: argparse.Namespace) -> int:
    _prefect_defaults(args.verbose)
    from flows.stages import READS_SOURCE_FILES, STAGES, selected
    from ltx2core.config.load import load_project

    unknown = [s for s in _stages(args.stages) + args.force if s not in STAGES]
    if unknown:
        print(f"ltx2 run: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}", file=sys.stderr)
        return 2
    # Check the configs before Prefect starts: a bad file costs a second, not a flow run.
    todo = selected(_stages(args.stages))
    overrides = _overrides(args)
    project = load_project(args.config, args.databackend, check_paths=bool(READS_SOURCE_FILES & set(todo)),
                           overrides=overrides)
    for warning in project.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from flows.console import RichSink, print_status, print_summary
    from storage.store import Store
    from tasks.pending import nothing_pending
    from tasks.status import stage_status

    videos = _video_datasets(project.datasets)
    store_exists = "://" in args.storage or Path(args.storage).is_dir()  # don't create a folder just to look
    if not args.force and store_exists and nothing_pending(Store.open(args.storage), project.config, videos, todo):
        # Nothing to do: starting an orchestrator (a temporary Prefect API takes ~10 s here) would only record that.
        print_status([r for r in stage_status(args.storage, videos, project.config) if r["stage"] in todo], args.storage,
                     title="up to date: nothing to run")
        return 0
    from flows.pipeline import pipeline
    from tasks import progress

    with RichSink() as sink:
        progress.install(sink)
        reports = pipeline(config=args.config, databackend=args.databackend, storage=args.storage,
                           stages=_stages(args.stages), force=args.force, checkpoint=args.checkpoint,
                           overrides=overrides, dask_address=args.dask_address)
    print_summary(reports, args.storage)
    if "validate" in todo:
        from storage.sql import sql_eq
        from tasks.pending import run_id

        rows = Store.open(args.storage).read("validations", ["step", "mode", "video_path"],
                                             where=sql_eq("run_id", run_id(project.config))).to_pylist()
        last = max((r["step"] for r in rows), default=None)
        for r in rows:
            if r["step"] == last:
                print(f"{r['mode']} sample (step {r['step']}): {r['video_path']}")
    if MODEL_STAGES & set(todo):
        from ltx2core.models.source import resolve_source

        source = resolve_source(project.config.pretrained_model_name_or_path, project.config.model_flavour)
        print(f"model: {source.label}")
    return 0


def _overrides(args: argparse.Namespace):
    from ltx2core.config.overrides import Overrides

    return Overrides(**{name: getattr(args, name) for name in Overrides.model_fields})


def cmd_status(args: argparse.Namespace) -> int:
    from flows.console import print_status
    from ltx2core.config.load import load_project
    from tasks.status import stage_status

    project = load_project(args.config, args.databackend, check_paths=False)
    rows = stage_status(args.storage, _video_datasets(project.datasets), project.config)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_status(rows, args.storage)
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from ltx2core.models.tiny import make_tiny_model

    folder = make_tiny_model(Path(args.folder))
    print(f"wrote the tiny LTX-2 (random weights: UNTRAINED) to {folder}; "
          f'use it with "pretrained_model_name_or_path": "{folder}"')
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ltx2core.media.synth import make_sample_dataset

    paths = make_sample_dataset(Path(args.folder))
    print(f"wrote {len(paths)} sample clips with captions to {args.folder}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from flows.server import ServerError, serve

    try:
        return serve(host=args.host, port=args.port)
    except ServerError as e:
        print(f"ltx2 server: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx2", description="LTX-2 LoRA training as resumable Prefect stages")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="config/config.json", help="SimpleTuner-style config.json")
        p.add_argument("--databackend", default="config/multidatabackend.json", help="multidatabackend.json")
        p.add_argument("--storage", default="ltx2-store", help="LanceDB URI: a folder or s3://bucket/prefix")

    run = sub.add_parser("run", help="run the pipeline (only what is missing)")
    common(run)
    run.add_argument("--stages", help=STAGE_HELP)
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo this stage (repeatable)")
    run.add_argument("--checkpoint", type=int, metavar="STEP", help="validate this checkpoint (default: latest)")
    run.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                     help="run the shards of probe, text-embeds and latents on this Dask scheduler's workers")
    run.add_argument("-v", "--verbose", action="store_true", help="show Prefect's log lines")
    group = run.add_argument_group("overrides", "replace the config files' value for this run")
    group.add_argument("--resolution", type=int, metavar="PX", help="every video dataset's short edge (multiple of 32)")
    group.add_argument("--num-frames", type=int, metavar="N", help="frames per training clip (8k+1)")
    group.add_argument("--max-train-steps", type=int, metavar="N", help="optimizer steps")
    group.add_argument("--lora-rank", type=int, metavar="R", help="LoRA rank")
    group.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate")
    run.set_defaults(fn=cmd_run)

    status = sub.add_parser("status", help="rows done and missing per stage, and the last error")
    common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(fn=cmd_status)

    tiny = sub.add_parser("make-tiny-model", help="write the tiny random LTX-2 (diffusers layout) to a folder")
    tiny.add_argument("folder")
    tiny.set_defaults(fn=cmd_make_tiny_model)

    demo = sub.add_parser("demo-data", help="write the generated sample clips and captions")
    demo.add_argument("folder", nargs="?", default="datasets/demo")
    demo.set_defaults(fn=cmd_demo_data)

    server = sub.add_parser("server", help="local Prefect server + UI, the pipeline's deployments and a worker")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    server.add_argument("--port", type=int, default=4200)
    server.set_defaults(fn=cmd_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.cluster import ClusterUnavailable
    from ltx2core.config.load import ConfigError
    from storage.location import StorageUnavailable

    try:
        return args.fn(args)
    except (ConfigError, StorageUnavailable, ClusterUnavailable) as e:
        print(str(e), file=sys.stderr)  # bad input: the message names the file, URI or address and the fix
        return 2


if __name__ == "__main__":
    sys.exit(main())
