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
DEFAULT_CONFIG = "config/config.json"
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
    todo = selected(_stages(args.stages))
    if idle := [s for s in args.force if s not in todo]:
        print(f"ltx2 run: --force {' '.join(idle)} but --stages {args.stages} does not run it: add it to --stages "
              "(or leave --stages out to run every stage)", file=sys.stderr)
        return 2
    if args.dask_address:
        from flows.cluster import ClusterUnavailable, cluster_access

        try:
            cluster_access(args.dask_address, args.dask_certs, args.insecure_dask_plaintext)
        except ClusterUnavailable as error:
            print(f"ltx2 run: {error}", file=sys.stderr)
            return 2
    # Check the configs before Prefect starts: a bad file costs a second, not a flow run.
    overrides = _overrides(args)
    project = load_project(args.config, args.databackend, check_paths=bool(READS_SOURCE_FILES & set(todo)),
                           overrides=overrides)
    from flows.console import RichSink, print_status, print_summary
    from storage.store import Store
    from tasks.pending import nothing_pending
    from tasks.status import stage_status

    videos = _video_datasets(project.datasets)
    store_exists = "://" in args.storage or Path(args.storage).is_dir()  # don't create a folder just to look
    try:
        store = Store.open(args.storage) if store_exists else None
    except ValueError as error:  # credentials in the URI, an S3 store unreachable or refusing us
        print(f"ltx2 run: {error}", file=sys.stderr)
        return 2
    if not args.force and store is not None and nothing_pending(store, project.config, videos, todo):
        # Nothing to do: starting an orchestrator (a temporary Prefect API takes ~10 s here) would only record that.
        for warning in project.warnings:  # else the flow logs them (once, to the terminal and the UI)
            print(f"warning: {warning}", file=sys.stderr)
        print_status([r for r in stage_status(args.storage, videos, project.config) if r["stage"] in todo], args.storage,
                     title="up to date: nothing to run")
        return 0
    from flows.ephemeral import prefect_api
    from flows.pipeline import pipeline
    from tasks import progress

    if not args.verbose:
        _quiet_console_errors()
    try:
        api = prefect_api()
    except ValueError as error:  # a configured API that cannot be reached or refuses us: before any flow run
        print(f"ltx2 run: {error}", file=sys.stderr)
        return 1
    try:
        with api, RichSink() as sink:
            progress.install(sink)
            reports = pipeline(config=args.config, databackend=args.databackend, storage=args.storage,
                               stages=_stages(args.stages), force=args.force, checkpoint=args.checkpoint,
                               overrides=overrides, dask_address=args.dask_address, dask_certs=args.dask_certs,
                               dask_insecure_plaintext=args.insecure_dask_plaintext)
    except Exception as error:  # one block a user can act on; the traceback goes to a file and the Prefect log
        from flows.ephemeral import drain_to_api

        drain_to_api()  # so Prefect's exit-time drain has nothing left to warn about below the block
        _report_failure(error, project.config, args.storage)
        return 1
    print_summary(reports, args.storage)
    if "validate" in todo:
        from ltx2core.keys import run_id
        from storage.sql import sql_eq

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


def _quiet_console_errors() -> None:
    """Prefect prints a failing task's error and traceback on the terminal; `_report_failure` says it once,
    plainly. The records still reach the Prefect API (its own handler), so the UI has every line. Its
    background senders' "still processing items" at exit are not for the user either."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in (logging.getLogger(), *(logging.getLogger(n) for n in logging.root.manager.loggerDict)):
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(lambda record: record.levelno < logging.ERROR)
    for sender in ("EventsWorker", "APILogWorker"):  # Prefect names these loggers after the class
        logging.getLogger(sender).setLevel(logging.ERROR)


def _report_failure(error: BaseException, config, storage: str) -> None:
    import tempfile

    from tasks.failures import explain, write_traceback

    failure = explain(error, config)
    folders = [Path(config.output_dir) / "logs"] + ([] if "://" in storage else [Path(storage) / "_logs"])
    log_file = write_traceback(error, [*folders, Path(tempfile.gettempdir())])
    print(f"ltx2 run failed {failure.where()}\n"
          f"  cause: {failure.cause}\n"
          f"  fix:   {failure.fix}\n"
          f"  full traceback: {log_file or 'not written (no folder took it)'} and the flow run's log in Prefect",
          file=sys.stderr)


def _overrides(args: argparse.Namespace):
    from ltx2core.config.overrides import Overrides

    return Overrides(**{name: getattr(args, name) for name in Overrides.model_fields})


def cmd_status(args: argparse.Namespace) -> int:
    from flows.console import print_failures, print_status
    from tasks.status import failures, stage_status, stored_status

    if "://" not in args.storage and not Path(args.storage).is_dir():
        print(f"ltx2 status: no store at {args.storage} (nothing has run there yet): give the --storage of an "
              "earlier `ltx2 run`", file=sys.stderr)
        return 2
    config = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    if args.failed:
        rows = failures(args.storage)
    elif config is None:  # the store alone: what the tables hold; what is missing needs the config
        rows = stored_status(args.storage)
    else:
        from ltx2core.config.load import load_project

        project = load_project(config, args.databackend, check_paths=False)
        for warning in project.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        rows = stage_status(args.storage, _video_datasets(project.datasets), project.config)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.failed:
        print_failures(rows)
    else:
        print_status(rows, args.storage, title="ltx2 status" if config else "ltx2 status (no config: what the "
                     "store holds; give --config for what is missing)")
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    _prefect_defaults(args.verbose)
    import tempfile

    from flows.stages import STAGES, selected

    unknown = [s for s in _stages(args.stages) if s not in STAGES]
    if unknown:
        print(f"ltx2 rehearse: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}", file=sys.stderr)
        return 2
    width, _, height = args.aspect.partition(":")
    from flows.console import print_rehearsal, print_stage_figures
    from flows.rehearse import rehearse

    if not args.verbose:
        _quiet_console_errors()
    with tempfile.TemporaryDirectory(prefix="ltx2-rehearse-") as scratch:
        work = Path(args.keep or scratch).absolute()
        work.mkdir(parents=True, exist_ok=True)
        try:
            rehearsal = rehearse(args.config, args.databackend, work, stages=selected(_stages(args.stages)),
                                 clips=args.clips, steps=args.steps, model=args.model,
                                 aspect=float(width) / float(height or 1), card_gib=args.card_gib,
                                 storage=args.storage, on_stage=print_stage_figures)
        except ValueError as error:  # a configured Prefect API that cannot be reached or refuses us
            print(f"ltx2 rehearse: {error}", file=sys.stderr)
            return 1
        (work / "rehearsal.json").write_text(json.dumps(rehearsal.as_dict(), indent=2))
        print_rehearsal(rehearsal)
        if args.json:
            Path(args.json).write_text(json.dumps(rehearsal.as_dict(), indent=2))
    return 1 if any(f.error and not f.tries for f in rehearsal.stages) else 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from ltx2core.models.flavours import canonical
    from ltx2core.models.tiny import make_tiny_model

    flavour = canonical(args.flavour)
    folder = make_tiny_model(Path(args.folder), flavour)
    print(f"wrote the tiny LTX-{flavour} (random weights: UNTRAINED) to {folder}; use it with "
          f'"pretrained_model_name_or_path": "{folder}", "model_flavour": "{flavour}"')
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ltx2core.media.synth import make_sample_dataset

    paths = make_sample_dataset(Path(args.folder))
    print(f"{len(paths)} sample clips with captions in {args.folder} (clips already there are left as they are)")
    return 0


def cmd_cluster_certs(args: argparse.Namespace) -> int:
    from flows.cluster_certs import CertsExist, make_certs, role_files

    folder = Path(args.folder)
    try:
        make_certs(folder)
    except CertsExist as error:
        print(f"ltx2 cluster-certs: {error}", file=sys.stderr)
        return 1
    flags = {role: (f"--tls-ca-file {files.ca} --tls-cert {files.cert} --tls-key {files.key}")
             for role in ("scheduler", "worker") for files in [role_files(folder, role)]}
    print(f"wrote a cluster CA and the scheduler, worker and client certificates to {folder}/ (keys mode 600).\n"
          f"Keep ca-key.pem on this machine only; copy ca.pem + worker*.pem to worker machines, ca.pem + client*.pem "
          f"to the machine that runs the flow.\n"
          f"  dask scheduler --protocol tls --host 0.0.0.0 --port 8786 {flags['scheduler']}\n"
          f"  dask worker tls://SCHEDULER:8786 {flags['worker']}\n"
          f"  ltx2 run --dask-address tls://SCHEDULER:8786 --dask-certs {folder}")
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, config_default: str | None = DEFAULT_CONFIG) -> None:
        p.add_argument("--config", default=config_default, help="SimpleTuner-style config.json" + (
            "" if config_default else f" (default: {DEFAULT_CONFIG} if it exists, else the store alone)"))
        p.add_argument("--databackend", help="multidatabackend.json (default: the config's data_backend_config, "
                       "looked up beside the config file, then in the working folder)")
        p.add_argument("--storage", default="ltx2-store", help="LanceDB URI: a folder or s3://bucket/prefix")

    run = sub.add_parser("run", help="run the pipeline (only what is missing)", formatter_class=_ShowDefaults)
    common(run)
    run.add_argument("--stages", help=STAGE_HELP)
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="redo this stage (repeatable)")
    run.add_argument("--checkpoint", type=int, metavar="STEP", help="validate this checkpoint (default: latest)")
    run.add_argument("--dask-address", metavar="tls://HOST:PORT",
                     help="run the shards of probe, text-embeds and latents on this Dask scheduler's workers "
                     "(tcp:// on this machine only, unless --insecure-dask-plaintext)")
    run.add_argument("--dask-certs", metavar="DIR", help="for tls://: the folder `ltx2 cluster-certs DIR` wrote")
    run.add_argument("--insecure-dask-plaintext", action="store_true",
                     help="allow plain tcp:// to a scheduler on another machine (anyone reaching it runs code there)")
    run.add_argument("-v", "--verbose", action="store_true", help="show Prefect's log lines")
    group = run.add_argument_group("overrides", "replace the config files' value for this run")
    group.add_argument("--resolution", type=int, metavar="PX", help="every video dataset's short edge (multiple of 32)")
    group.add_argument("--num-frames", type=int, metavar="N", help="frames per training clip (8k+1)")
    group.add_argument("--max-train-steps", type=int, metavar="N", help="optimizer steps")
    group.add_argument("--lora-rank", type=int, metavar="R", help="LoRA rank")
    group.add_argument("--learning-rate", type=float, metavar="LR", help="peak learning rate")
    run.set_defaults(fn=cmd_run)

    status = sub.add_parser("status", help="rows done and missing per stage, and the last error",
                            formatter_class=_ShowDefaults)
    common(status, config_default=None)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--failed", action="store_true", help="list the files that failed or were rejected, and why")
    status.set_defaults(fn=cmd_status)

    rehearsal = sub.add_parser(
        "rehearse", formatter_class=_ShowDefaults,
        help="run the configured stages here on random full-size weights and synthetic clips: speed, memory, fit")
    rehearsal.add_argument("--config", default=DEFAULT_CONFIG, help="SimpleTuner-style config.json")
    rehearsal.add_argument("--databackend", help="multidatabackend.json (default: the config's data_backend_config)")
    rehearsal.add_argument("--stages", help=STAGE_HELP)
    rehearsal.add_argument("--clips", type=int, default=4, help="synthetic clips per video dataset")
    rehearsal.add_argument("--steps", type=int, default=8, help="train steps (the first 2 are left out of s/step)")
    rehearsal.add_argument("--aspect", default="3:2", help="width:height of the synthetic clips")
    rehearsal.add_argument("--card-gib", type=float, metavar="GIB",
                           help="rehearse for a card with this much memory (this GPU is capped to it)")
    rehearsal.add_argument("--model", default="random", choices=["random", "tiny-random"],
                           help="random: the flavour's full-size model; tiny-random: its tiny sizes (a smoke test)")
    rehearsal.add_argument("--storage", help="the rehearsal's store (default: in its own folder); s3:// to measure S3")
    rehearsal.add_argument("--keep", metavar="DIR", help="keep clips, store and outputs in DIR (default: removed)")
    rehearsal.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    rehearsal.add_argument("-v", "--verbose", action="store_true", help="show Prefect's log lines")
    rehearsal.set_defaults(fn=cmd_rehearse)

    tiny = sub.add_parser("make-tiny-model", help="write a tiny random LTX-2 (diffusers layout) to a folder")
    tiny.add_argument("folder")
    tiny.add_argument("--flavour", default="2.0", help="2.0 (default), 2.3, 2.3-distilled, 2.5 (its folder also "
                      "serves 2.5-distilled, as LTX-2.5-Diffusers does)")
    tiny.set_defaults(fn=cmd_make_tiny_model)

    demo = sub.add_parser("demo-data", help="write the generated sample clips and captions",
                          formatter_class=_ShowDefaults)
    demo.add_argument("folder", nargs="?", default="datasets/demo")
    demo.set_defaults(fn=cmd_demo_data)

    certs = sub.add_parser("cluster-certs", help="make TLS certificates for a Dask cluster (tls:// with mutual auth)")
    certs.add_argument("folder")
    certs.set_defaults(fn=cmd_cluster_certs)

    server = sub.add_parser("server", help="local Prefect server + UI, the pipeline's deployments and a worker",
                            formatter_class=_ShowDefaults)
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    server.add_argument("--port", type=int, default=4200)
    server.set_defaults(fn=cmd_server)
    return parser


class _ShowDefaults(argparse.HelpFormatter):
    """Help lines end with the default, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ltx2-pipeline")
    except PackageNotFoundError:  # a checkout that was not installed
        return "unknown"


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
    except BrokenPipeError:  # `ltx2 status --json | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not raise again
        return 0


if __name__ == "__main__":
    sys.exit(main())
