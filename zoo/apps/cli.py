"""`zoo` command line: parses arguments and calls library functions, nothing more."""

import argparse
import json
import os
import shlex
import sys

from zoo.precision import CHOICES as PRECISION_CHOICES
from zoo.registry import RECOMMENDED

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cmd_list(args):
    from zoo import list_models

    for name, description in list_models().items():
        print(f"{name:24s} {description}")


def cmd_train(args):
    from zoo.recipes import parse_recipe_changes
    from zoo.training.run import train_model

    path = train_model(args.name, out_dir=args.out, data_dir=args.data_dir,
                       recipe_changes=parse_recipe_changes(args.set), resume=not args.restart,
                       corpus=args.corpus)
    print(f"weights: {path}")


def cmd_publish(args):
    from zoo.training.run import publish

    record = publish(args.name, args.run_dir, command=args.trained_with)
    print(json.dumps(record, indent=2))


def cmd_hash_head(args):
    from zoo.training.run import fit_hash_head, write_golden

    head = fit_hash_head(args.name)
    write_golden(args.name)
    print(f"{args.name}: {head.num_bits}-bit {head.kind} hash head shipped ({head.method})")


def cmd_evaluate(args):
    from zoo.apps.evaluation.run import evaluate_retrieval, format_table

    results = evaluate_retrieval(args.names, corpus=args.corpus, data_dir=args.data_dir,
                                 grid_dir=args.grid, record=args.record)
    print(format_table(results))
    if args.grid:
        print(f"retrieval grids written to {args.grid}/")


def cmd_evaluate_invariance(args):
    from zoo.apps.evaluation.invariance import format_summary
    from zoo.apps.evaluation.report import evaluate_invariance, write_report

    command = (f"zoo evaluate invariance {' '.join(args.names)} --out {args.out} --seed {args.seed}"
               + (" --record" if args.record else ""))
    result = evaluate_invariance(args.names, args.out, seed=args.seed, data_dir=args.data_dir,
                                 command=command, record=args.record)
    print(format_summary(result["summary"]))
    for claim in result["claims"].values():
        print(claim["text"])
    print(f"figures, JSON and CSV in {args.out}/; report: {write_report(args.out)}")


def cmd_evaluate_oneshot(args):
    from zoo.apps.evaluation.report import evaluate_oneshot, write_report

    for name in args.names:
        command = (f"zoo evaluate oneshot {name} --out {args.out}"
                   + (" --record" if args.record else ""))
        result = evaluate_oneshot(name, data_dir=args.data_dir, out_dir=args.out, runs=args.runs,
                                  command=command, record=args.record)
        print(name)
        for method, error in result["mean_error"].items():
            print(f"  {method:24s} {100 * error:5.1f}% error ({len(result['runs'])} runs)")
    print(f"report: {write_report(args.out)}")


def cmd_evaluate_hashing(args):
    from zoo.apps.evaluation.hashing import format_hashing_table, run_hashing_evaluation

    command = (f"zoo evaluate hashing {' '.join(args.names)}"
               + (f" --queries {args.queries}" if args.queries != 1000 else "")
               + (" --record" if args.record else ""))
    results = run_hashing_evaluation(args.names, data_dir=args.data_dir,
                                     num_queries=args.queries, seed=args.seed, out_dir=args.out,
                                     record=args.record, command=command)
    protocol = results["protocol"]
    print(f"{results['corpus']}: {protocol['queries']} seeded queries (seed {protocol['seed']}) "
          f"against {protocol['database']} database images, Hamming ranking, top {protocol['top']}")
    print(format_hashing_table(results))
    print(f"precision@k curves: {results['figure']}")


def cmd_evaluate_curve(args):
    from zoo.apps.evaluation.learning_curve import record_curves, run_curve, save_curves

    runs = {}
    for item in args.runs:
        name, separator, run_dir = item.partition("=")
        if not separator or not name or not run_dir:
            raise ValueError(f"Expected NAME=RUN_DIR (a registered model and its run folder), "
                             f"got {item!r}.")
        folder = os.path.basename(os.path.normpath(run_dir))
        runs[name if folder == name else f"{name} ({folder})"] = (name, run_dir)
    curves = run_curve(runs, data_dir=args.data_dir, corpus=args.corpus)
    figure, csv_path = save_curves(curves, args.out, args.title)
    print(f"wrote {figure} and {csv_path}")
    if args.record:
        options = [*args.runs, "--out", args.out, *(["--title", args.title] if args.title else []),
                   *(["--corpus", args.corpus] if args.corpus else []), "--record"]
        command = "zoo evaluate curve " + " ".join(shlex.quote(option) for option in options)
        print(f"recorded in {record_curves(curves, figure, command)}")


def cmd_evaluate_ablation(args):
    from zoo.apps.evaluation.ablation import (ROWS, format_table, new_rows, record,
                                              run_ablation, with_recorded_rows)

    rows = new_rows(args.trained_on) if args.new_rows else ROWS
    print(f"measuring {len(rows)} of {len(ROWS)} rows")
    result = run_ablation(args.trained_on, runs_dir=args.runs_dir, train=args.train,
                          data_dir=args.data_dir, rows=rows)
    if args.new_rows:
        result = with_recorded_rows(result)
    print(format_table(result))
    for skipped in result["skipped"]:
        print(f"not measured (no run yet): {skipped['label']}; train it with "
              f"`{skipped['command']}` or pass --train")
    if args.record:
        if result["skipped"]:
            raise ValueError("Not recording an incomplete ablation; pass --train.")
        print(f"recorded in {record(result)} (run `zoo models-md`)")


def cmd_report(args):
    from zoo.apps import model_cards
    from zoo.apps.evaluation.report import write_report

    print(f"wrote {model_cards.write()}")
    print(f"wrote {write_report(args.out)}")


def cmd_models_md(args):
    from zoo.apps import model_cards

    if args.check:
        with open(model_cards.MODELS_MD) as handle:
            if handle.read() != model_cards.render():
                raise ValueError("MODELS.md is out of date; run `zoo models-md`.")
        print("MODELS.md is up to date")
    else:
        print(f"wrote {model_cards.write()}")


def cmd_demo(args):
    from zoo.apps.demo import run_demo

    print(run_demo(args.model, args.out, via_server=not args.in_process))


def _archive_metadata(pairs):
    """Parse --meta key=value pairs (strings) into the archive metadata dict."""
    metadata = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"Expected --meta key=value, got {pair!r}.")
        key, value = pair.split("=", 1)
        metadata[key] = value
    return metadata or None


def _index_summary(index):
    if index.is_region_index:
        return (f"index {index.path}: {len(index)} pages, {index.region_count} regions, models "
                f"{', '.join(index.models)}")
    return f"index {index.path}: {len(index)} items, models {', '.join(index.models)}"


def cmd_index_build(args):
    from zoo.apps.index import Index
    from zoo.apps.index.index import format_report

    if args.from_shards is not None or args.source is None:
        return _index_build_from_shards(args)
    try:
        index = Index.build(args.out, args.source, models=args.model,
                            server=args.server, batch_size=args.batch_size,
                            metadata=_archive_metadata(args.meta), chunk_size=args.chunk_size,
                            regions=args.regions, precision=args.precision)
    except KeyboardInterrupt:
        sys.exit("\nzoo index build: interrupted; rerun the same command to resume.")
    print(format_report(index.report))
    print(_index_summary(index))


def _index_build_from_shards(args):
    """`zoo index build --from-shards DIR --out X [--model NAME]`: an index from Beam shards."""
    from zoo.apps.index import Index
    from zoo.apps.index.index import format_report

    if args.from_shards is None:
        raise ValueError("Expected a folder of images to index, or --from-shards DIR.")
    if args.source is not None:
        raise ValueError(f"Give a folder of images or --from-shards, not both (got "
                         f"{args.source!r} and --from-shards {args.from_shards!r}).")
    if args.regions or args.server:
        raise ValueError("--regions and --server do not apply to --from-shards: the shards are "
                         "encoded already, and say whether they hold regions.")
    if args.model and len(args.model) > 1:
        raise ValueError("Shards hold one model's encodings: give --model once.")
    try:
        index = Index.build_from_shards(args.out, args.from_shards,
                                        model=args.model[0] if args.model else None,
                                        metadata=_archive_metadata(args.meta),
                                        chunk_size=args.chunk_size)
    except KeyboardInterrupt:
        sys.exit("\nzoo index build: interrupted; rerun the same command to resume.")
    print(format_report(index.report))
    print(_index_summary(index))


def cmd_index_add(args):
    from zoo.apps.index import Index
    from zoo.apps.index.index import format_report

    index = Index.open(args.index, server=args.server)
    try:
        report = index.add(args.source, batch_size=args.batch_size, chunk_size=args.chunk_size)
    except KeyboardInterrupt:
        sys.exit("\nzoo index add: interrupted; rerun the same command to resume.")
    print(format_report(report))
    print(_index_summary(index))


def _box_argument(value):
    try:
        box = tuple(int(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[2] < 1 or box[3] < 1 or min(box) < 0:
        raise argparse.ArgumentTypeError(f"expected a box as x,y,w,h in pixels, got {value!r}")
    return box


def cmd_search(args):
    from zoo.data.images import decode_image
    from zoo.apps.index import Index
    from zoo.apps.index.encoding import prepare_query
    from zoo.apps.index.index import format_hits, save_search_grid
    from zoo.apps.index.regions import crop_box, format_page_hits, save_page_grid

    index = Index.open(args.index, server=args.server)
    mode = "hamming" if args.hamming else "embedding"
    query = args.query
    if args.box:
        query = crop_box(decode_image(args.query), args.box, what="query image")
    if index.is_region_index:
        hits = index.search(query, k=args.k, model=args.model, mode=mode, offset=args.offset,
                            candidates=args.candidates or None)
        print(format_page_hits(hits, mode))
        if args.grid and hits:
            size = index.model_info(args.model)["image_size"]
            print(f"grid: {save_page_grid(args.grid, hits, prepare_query(query, size)[..., 0])}")
        return
    hits = index.search(query, k=args.k, model=args.model, mode=mode, offset=args.offset,
                        approximate=args.approximate)
    print(format_hits(hits, mode))
    if args.grid:
        print(f"grid: {save_search_grid(args.grid, index, query, hits, args.model)}")


def cmd_locate(args):
    from zoo.apps.locating import draw_locate, format_located, locate

    found = locate(args.page, args.query, model=args.model, scales=args.scales,
                   stride=args.stride, top=args.top, batch_size=args.batch_size,
                   min_ink=args.min_ink, snap_to_ink=not args.no_snap, proposals=args.proposals)
    print(format_located(found))
    if args.out:
        print(f"heat map: {draw_locate(args.page, found, args.out)}")


def _beam_parser(command, description, files):
    """The flags every `zoo beam` pipeline takes; every other flag goes to Beam."""
    parser = argparse.ArgumentParser(
        prog=f"zoo beam {command}", allow_abbrev=False, description=description,
        epilog="Other flags go to Beam, e.g. --runner=DataflowRunner --project=P --region=R "
               "--temp_location=gs://B/tmp --setup_file=./setup.py (see README.md).")
    parser.add_argument("--model-dir", required=True,
                        help="an exported version directory, e.g. models/sketch_gan_merchant/1")
    parser.add_argument("--input", required=True, action="append",
                        help=f"glob of {files}, or a folder (repeat for several)")
    parser.add_argument("--output", required=True, help="folder for the shards and errors")
    return parser


def _beam_encode_parser():
    """`zoo beam encode`'s own flags; every other flag goes to Beam's PipelineOptions."""
    parser = _beam_parser(
        "encode", "Encode image files with an exported SavedModel in an Apache Beam pipeline "
                  "into .npz embedding/code shards (zoo/apps/beam_pipeline.py).", "image files")
    parser.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call")
    parser.add_argument("--max-file-mb", type=float, default=64,
                        help="larger files are reported as errors, not read")
    return parser


def _beam_regions_parser():
    """`zoo beam regions`' own flags; every other flag goes to Beam's PipelineOptions."""
    parser = _beam_parser(
        "regions", "Propose the candidate regions of page photographs, encode them with an "
                   "exported SavedModel in an Apache Beam pipeline, and write .npz region "
                   "shards for `zoo index build --from-shards` (zoo/apps/beam_pipeline.py).",
        "page photographs")
    parser.add_argument("--proposals", metavar="JSON_OR_FILE",
                        help="region proposal settings (zoo.apps.proposals.ProposalSettings) as "
                             "JSON text or a .json file; default: the defaults")
    parser.add_argument("--shard-size", type=int, default=500, help="pages per shard")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="region crops per model call")
    parser.add_argument("--pages-per-batch", type=int, default=8,
                        help="pages per RunInference batch")
    parser.add_argument("--max-file-mb", type=float, default=64,
                        help="larger files are reported as errors, not read")
    return parser


def _beam_pipeline():
    try:
        from zoo.apps import beam_pipeline
    except ImportError as error:
        raise ValueError(f"Apache Beam is not installed ({error}); install the extra: "
                         f"pip install -e '.[beam]'.") from None
    return beam_pipeline


def cmd_beam_encode(args):
    options, pipeline_args = _beam_encode_parser().parse_known_args(args.args)
    run = _beam_pipeline().encode_files(
        options.model_dir, options.input, options.output, pipeline_args,
        shard_size=options.shard_size, batch_size=options.batch_size,
        max_file_mb=options.max_file_mb)
    print(f"{run.state}: {run.images_encoded} images encoded, {run.files_failed} files failed; "
          f"shard files: {run.shards_written} in {options.output} (failures in errors-*.jsonl)")


def cmd_beam_regions(args):
    options, pipeline_args = _beam_regions_parser().parse_known_args(args.args)
    run = _beam_pipeline().encode_regions(
        options.model_dir, options.input, options.output, pipeline_args,
        proposals=options.proposals, shard_size=options.shard_size,
        batch_size=options.batch_size, pages_per_batch=options.pages_per_batch,
        max_file_mb=options.max_file_mb)
    print(f"{run.state}: {run.pages_encoded} pages encoded ({run.regions_encoded} regions), "
          f"{run.files_failed} files failed; shard files: {run.shards_written} in "
          f"{options.output} (failures in errors-*.jsonl)")


def cmd_export(args):
    from zoo import load

    encoder = load(args.name, precision=args.precision)
    path = encoder.export(args.out, args.version, overwrite=args.overwrite)
    print(f"exported {args.name} version {args.version} ({encoder.precision}) to {path}")


def cmd_transfer(args):
    from zoo.recipes import parse_recipe_changes
    from zoo.apps.transferring import format_report, record_transfer, transfer

    changes = parse_recipe_changes(args.set)
    result = transfer(args.base, args.source, steps=args.steps, out=args.out, name=args.name,
                      version=args.version, run_dir=args.run_dir, data_dir=args.data_dir,
                      recipe_changes=changes, hash_bits=args.hash_bits,
                      resume=not args.restart)
    print(format_report(result.report))
    if args.record:
        options = [f"--set {pair}" for pair in args.set or []] + [
            f"--{option.replace('_', '-')} {getattr(args, option)}"
            for option in ("out", "name", "run_dir", "hash_bits")
            if getattr(args, option) not in (None, "models")]
        command = " ".join(["zoo transfer", args.base, args.source, f"--steps {args.steps}",
                            *options, "--record"])
        print(f"recorded in {record_transfer(result.report, command)} (run `zoo models-md`)")


def cmd_web(args):
    try:
        from zoo.apps.web.app import serve
    except ImportError as error:
        raise ValueError(f"`zoo web` needs the optional web extra ({error}): "
                         f"pip install -e '.[web]'") from None

    serve(args.index, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          page_size=args.page_size, server=args.server)


def _flag_bool(text):
    """A TF Serving boolean flag value (--enable_batching, --enable_batching=true / false)."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def cmd_serve(args):
    from serving.server import serve

    if args.model_base_path and args.model_base_path_flag:
        raise ValueError("Give the model base path once: as the argument or as "
                         "--model_base_path.")
    rest_port = args.rest_port
    if args.rest_api_port is not None:  # TF Serving: --rest_api_port=0 means no REST API
        rest_port = args.rest_api_port or None
    warmup = not args.no_warmup if args.enable_model_warmup is None else args.enable_model_warmup
    serve(args.model_base_path or args.model_base_path_flag, port=args.port,
          rest_port=rest_port, host=args.host, model_config_file=args.model_config_file,
          batching_parameters_file=args.batching_parameters_file,
          poll_interval=args.poll_interval, max_message_mb=args.max_message_mb,
          warmup=warmup, model_name=args.model_name, enable_batching=args.enable_batching,
          monitoring_config_file=args.monitoring_config_file,
          keep_memory=not args.no_keep_memory)


def build_parser():
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sub = commands.add_parser("list", help="list registered models")
    sub.set_defaults(run=cmd_list)

    sub = commands.add_parser("train", help="train a registered model with its recipe")
    sub.add_argument("name")
    sub.add_argument("--out", help="run folder (default runs/NAME): checkpoints, samples, log")
    sub.add_argument("--data-dir", help="where the corpus lives (Omniglot zips, image folder)")
    sub.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a recipe field, e.g. --set iterations=200")
    sub.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    sub.add_argument("--corpus", help="train on this named corpus instead of the entry's own "
                                      "(for comparisons; such a run is not publishable)")
    sub.set_defaults(run=cmd_train)

    sub = commands.add_parser("publish", help="copy a finished run's weights into the package")
    sub.add_argument("name")
    sub.add_argument("run_dir")
    sub.add_argument("--trained-with", metavar="COMMAND",
                     help="the command that made the run, as the manifest should show it "
                          "(default: zoo train NAME)")
    sub.set_defaults(run=cmd_publish)

    sub = commands.add_parser("hash-head", help="refit a shipped model's hash head (ITQ, or its "
                              "learned code head) and its golden outputs; weights unchanged")
    sub.add_argument("name")
    sub.set_defaults(run=cmd_hash_head)

    sub = commands.add_parser("export", help="write a versioned SavedModel for TF Serving")
    sub.add_argument("name")
    sub.add_argument("--out", default="models", help="base folder (default: models)")
    sub.add_argument("--version", type=int, default=1)
    sub.add_argument("--overwrite", action="store_true", help="replace an existing version")
    sub.add_argument("--precision", choices=PRECISION_CHOICES, default="float32",
                     help="the graph's compute precision (default float32; bfloat16 is about "
                          "1.8x faster on servers whose CPU has AVX512-BF16 or AMX; elsewhere it is "
                          "emulated, with no gain; int8, for sketch-GAN+ models, about 2x where "
                          "the CPU has AVX512-VNNI, with embeddings further from float32's "
                          "(MODELS.md, 'Speed'); auto decides by this machine's CPU)")
    sub.set_defaults(run=cmd_export)

    sub = commands.add_parser("transfer", help="fine-tune a zoo model on a new archive (no "
                                               "labels) and export it as a new version")
    sub.add_argument("base", help="registered model to start from")
    sub.add_argument("source", help="folder of images, or a named corpus "
                                    "(e.g. omniglot_background)")
    sub.add_argument("--steps", type=int, default=500, help="generator updates (default 500)")
    sub.add_argument("--out", default="models", help="SavedModel base folder (default: models)")
    sub.add_argument("--name", help="exported model name (default: BASE_<archive name>)")
    sub.add_argument("--version", type=int, help="version to export (default: the next free one)")
    sub.add_argument("--run-dir", help="checkpoints, samples, weights, report (default runs/NAME)")
    sub.add_argument("--data-dir", help="where a named corpus lives (Omniglot zips)")
    sub.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a recipe field, e.g. --set batch_size=32")
    sub.add_argument("--hash-bits", type=int, help="hash code length (default: the base's)")
    sub.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    sub.add_argument("--record", action="store_true",
                     help="record the before/after retrieval as a result "
                          "(reports/results/; MODELS.md)")
    sub.set_defaults(run=cmd_transfer)

    sub = commands.add_parser("evaluate", help="measure models against baselines")
    kinds = sub.add_subparsers(dest="kind", required=True)
    kind = kinds.add_parser("retrieval", help="P@8, mAP, R@1/R@8 with a raw-pixel baseline")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--corpus", help="named corpus (default: the first model's eval corpus)")
    kind.add_argument("--data-dir", help="where the corpus lives (Omniglot zips)")
    kind.add_argument("--grid", metavar="DIR", help="write a retrieval grid PNG per row")
    kind.add_argument("--record", action="store_true",
                      help="record the numbers as results (reports/results/; MODELS.md)")
    kind.set_defaults(run=cmd_evaluate)

    kind = kinds.add_parser("invariance", help="rotation/scale/shift invariance (paper Fig. 5) "
                                               "vs. raw pixels and an untrained encoder")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--out", default="reports",
                      help="figures, JSON, CSV and REPORT.md (default: reports)")
    kind.add_argument("--seed", type=int, default=0)
    kind.add_argument("--data-dir", help="where the corpus lives (Omniglot zips)")
    kind.add_argument("--record", action="store_true",
                      help="record the summaries as results (reports/results/; MODELS.md)")
    kind.set_defaults(run=cmd_evaluate_invariance)

    kind = kinds.add_parser("oneshot", help="Omniglot 20-way one-shot error vs. raw pixels and "
                                            "Modified Hausdorff Distance")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--data-dir", help="folder holding all_runs.zip (default: "
                                         "../shared/data/omniglot or ZOO_OMNIGLOT_DIR)")
    kind.add_argument("--out", default="reports")
    kind.add_argument("--runs", type=int, help="only the first N runs (quick check)")
    kind.add_argument("--record", action="store_true",
                      help="record the mean errors as results (reports/results/; MODELS.md)")
    kind.set_defaults(run=cmd_evaluate_oneshot)

    kind = kinds.add_parser("hashing", help="mAP@1000 of binary codes (Hamming ranking) vs. LSH, "
                                            "PCAH and PCA-ITQ on the same pixels")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--data-dir", help="where the corpus lives (Fashion-MNIST idx files; "
                                         "default /usr/share/datasets/fashion-mnist)")
    kind.add_argument("--queries", type=int, default=1000, help="seeded queries (default 1000)")
    kind.add_argument("--seed", type=int, default=0)
    kind.add_argument("--out", default="reports", help="JSON and P@k figure go to OUT/hashing/")
    kind.add_argument("--record", action="store_true",
                      help="record the numbers as results (reports/results/; MODELS.md)")
    kind.set_defaults(run=cmd_evaluate_hashing)

    kind = kinds.add_parser("curve", help="learning curves: one-shot error, Omniglot and merchant "
                                          "P@8, merchant R@1 at every snapshot of training runs")
    kind.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR",
                      help="a registered model and the folder `zoo train NAME --out` wrote")
    kind.add_argument("--out", required=True, help="OUT.png and OUT.csv are written")
    kind.add_argument("--title", default="")
    kind.add_argument("--record", action="store_true",
                      help="store the curves as a result (reports/results/, for MODELS.md)")
    kind.add_argument("--corpus", help="calibrate on this named corpus (runs made with "
                                       "`zoo train --corpus`); default: each entry's own")
    kind.add_argument("--data-dir", help="folder holding the Omniglot zips")
    kind.set_defaults(run=cmd_evaluate_curve)

    kind = kinds.add_parser("ablation", help="the sketch-GAN+ ablation: one-shot error, Omniglot "
                                             "and merchant P@8, one row per change")
    kind.add_argument("--trained-on", required=True, choices=["merchant", "omniglot"])
    kind.add_argument("--runs-dir", help="short ablation runs (default runs/ablation/TRAINED_ON)")
    kind.add_argument("--train", action="store_true", help="train the runs not there yet")
    kind.add_argument("--new-rows", action="store_true",
                      help="measure only the rows the recorded table lacks and keep the "
                           "recorded ones (a row's weights and protocol do not change)")
    kind.add_argument("--data-dir", help="folder holding the Omniglot zips")
    kind.add_argument("--record", action="store_true",
                      help="record the table as results (reports/results/; MODELS.md)")
    kind.set_defaults(run=cmd_evaluate_ablation)

    sub = commands.add_parser("report", help="regenerate MODELS.md's results and the report "
                                             "linking every figure (REPORT.md)")
    sub.add_argument("--out", default="reports", help="the evaluation folder (default: reports)")
    sub.set_defaults(run=cmd_report)

    sub = commands.add_parser("models-md", help="regenerate MODELS.md from the registry")
    sub.add_argument("--check", action="store_true", help="only check that it is up to date")
    sub.set_defaults(run=cmd_models_md)

    sub = commands.add_parser("demo", help="export, serve, encode a generated corpus through "
                                           "the client, write a retrieval grid")
    sub.add_argument("--model", default=RECOMMENDED)
    sub.add_argument("--out", default="demo")
    sub.add_argument("--in-process", action="store_true", help="encode without the server")
    sub.set_defaults(run=cmd_demo)

    sub = commands.add_parser("index", help="index an archive's images for search by example")
    actions = sub.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="encode a folder of images into a new index "
                                             "(progress bar; rerun to resume)")
    build.add_argument("source", nargs="?",
                       help="folder of images (recursive); not with --from-shards")
    build.add_argument("--from-shards", metavar="DIR_OR_GLOB",
                       help="index the shards of a `zoo beam regions` (a region index) or "
                            "`zoo beam encode` run instead of encoding files; --model must be "
                            "the registered model that encoded them (default: theirs)")
    build.add_argument("--out", required=True, help="index directory to write, e.g. my.idx")
    build.add_argument("--model", action="append",
                       help=f"registered model (repeat for several; default {RECOMMENDED})")
    build.add_argument("--regions", action="store_true",
                       help="the files are page photographs: index every page's candidate "
                            "regions, so that a search finds pages and boxes")
    build.add_argument("--meta", action="append", metavar="KEY=VALUE",
                       help="archive metadata stored in the index, e.g. --meta archive=TNA")
    build.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                       help="in-process encoding: bfloat16 is about 1.8x faster where the CPU "
                            "has AVX512-BF16 or AMX, with the same retrieval (MODELS.md, "
                            "'Speed'); auto (default) uses it there and float32 "
                            "elsewhere; int8 (sketch-GAN+ models) is faster again where the CPU "
                            "has AVX512-VNNI, with P@8 within 0.01 of float32's. Recorded in the "
                            "index; `add` and queries use it too.")
    build.set_defaults(run=cmd_index_build)
    add = actions.add_parser("add", help="add a folder's new images to an index (files "
                                         "already in it are skipped)")
    add.add_argument("index", help="index directory")
    add.add_argument("source", help="folder of images (recursive)")
    add.set_defaults(run=cmd_index_add)
    for action in (build, add):
        action.add_argument("--server", metavar="HOST:PORT",
                            help="encode through a running model server instead of in-process")
        action.add_argument("--batch-size", type=int, default=256)
        action.add_argument("--chunk-size", type=int,
                            help="images per resumable chunk (default 1024; pages: 16)")

    sub = commands.add_parser("search", help="search an index by example: top-k table, "
                                             "optional PNG grid")
    sub.add_argument("index", help="index directory written by `zoo index build`")
    sub.add_argument("query", help="query image file")
    sub.add_argument("-k", type=int, default=8, help="number of results (default 8)")
    sub.add_argument("--offset", type=int, default=0, help="skip the first results (paging)")
    sub.add_argument("--model", help="which of the index's models (default: its first)")
    sub.add_argument("--hamming", action="store_true",
                     help="rank by Hamming distance of the binary codes (default: cosine)")
    sub.add_argument("--approximate", action="store_true",
                     help="search an HNSW graph instead of scanning (large indexes)")
    sub.add_argument("--grid", metavar="PNG", help="write the query and its results as a PNG")
    sub.add_argument("--server", metavar="HOST:PORT",
                     help="encode the query through a running model server")
    sub.add_argument("--box", type=_box_argument, metavar="X,Y,W,H",
                     help="search with this box of the query image (e.g. a mark on a page)")
    sub.add_argument("--candidates", type=int, default=4096,
                     help="region indexes: regions re-ranked by their float embeddings after "
                          "the Hamming pass (default 4096; 0 = scan every embedding exactly)")
    sub.set_defaults(run=cmd_search)

    sub = commands.add_parser("locate", help="find a mark on a page photograph: its ink "
                                             "regions (or sliding boxes) ranked, a heat map PNG")
    sub.add_argument("page", help="page image file")
    sub.add_argument("query", help="image file of the mark to find")
    sub.add_argument("--out", metavar="PNG", help="write the heat map and best boxes")
    sub.add_argument("--model", default=RECOMMENDED,
                     help=f"registered model (default {RECOMMENDED})")
    sub.add_argument("--scales", type=int, nargs="+", metavar="PX",
                     help="grid: box sides in pixels (default: 10, 15, 22, 33%% of the shorter "
                          "side)")
    sub.add_argument("--stride", type=float,
                     help="grid: step between boxes as a fraction of the box side (default "
                          "0.25)")
    sub.add_argument("--proposals", choices=("ink", "grid"),
                     help="search the page's ink regions (default) or a sliding grid of boxes "
                          "(the default when --scales or --stride is given)")
    sub.add_argument("--top", type=int, default=5, help="boxes to report (default 5)")
    sub.add_argument("--batch-size", type=int, default=256)
    sub.add_argument("--min-ink", type=float,
                     help="ink contrast below which a box counts as blank (default: from the "
                          "paper's grain)")
    sub.add_argument("--no-snap", action="store_true",
                     help="report whole boxes, not the ink inside them")
    sub.set_defaults(run=cmd_locate)

    sub = commands.add_parser("beam", help="encode an archive at scale with Apache Beam "
                                           "(the [beam] extra)")
    beam_actions = sub.add_subparsers(dest="action", required=True)
    encode = beam_actions.add_parser(
        "encode", prefix_chars="+", add_help=False,
        help="image files -> .npz embedding/code shards (zoo beam encode --help)")
    encode.add_argument("args", nargs=argparse.REMAINDER)  # parsed by _beam_encode_parser
    encode.set_defaults(run=cmd_beam_encode)
    regions = beam_actions.add_parser(
        "regions", prefix_chars="+", add_help=False,
        help="page photographs -> .npz shards of their encoded candidate regions, for `zoo "
             "index build --from-shards` (zoo beam regions --help)")
    regions.add_argument("args", nargs=argparse.REMAINDER)  # parsed by _beam_regions_parser
    regions.set_defaults(run=cmd_beam_regions)

    sub = commands.add_parser(
        "serve", help="serve exported models with TF Serving's gRPC/REST API",
        description="Serve SavedModels with TF Serving's gRPC and REST APIs. Also takes "
                    "tensorflow_model_server's flags (--rest_api_port, --model_name, "
                    "--model_base_path, --model_config_file, --batching_parameters_file, "
                    "--enable_batching, --monitoring_config_file), so a TF Serving command line "
                    "runs unchanged after `zoo serve`.")
    sub.add_argument("model_base_path", nargs="?",
                     help="folder of NAME/VERSION/ SavedModels (every model, latest version)")
    sub.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    sub.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501)")
    sub.add_argument("--rest_api_port", type=int, default=None,
                     help="TF Serving's REST port flag: overrides --rest-port; 0 turns REST off")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--model_name", help="TF Serving's single model: its name (with "
                                          "--model_base_path)")
    sub.add_argument("--model_base_path", dest="model_base_path_flag",
                     help="TF Serving's single model: the folder holding its VERSION/ folders")
    sub.add_argument("--model-config-file", "--model_config_file", dest="model_config_file",
                     help="TF Serving ModelServerConfig text proto")
    sub.add_argument("--batching-parameters-file", "--batching_parameters_file",
                     dest="batching_parameters_file",
                     help="TF Serving BatchingParameters text proto (turns batching on)")
    sub.add_argument("--enable_batching", nargs="?", const=True, default=False, type=_flag_bool,
                     help="batch concurrent requests (default parameters unless a batching "
                          "parameters file is given)")
    sub.add_argument("--monitoring-config-file", "--monitoring_config_file",
                     dest="monitoring_config_file",
                     help="TF Serving MonitoringConfig text proto (Prometheus metrics on the "
                          "REST port)")
    sub.add_argument("--poll-interval", "--file_system_poll_wait_seconds", type=float,
                     default=1.0, dest="poll_interval",
                     help="seconds between file-system polls for new versions (0: never)")
    sub.add_argument("--max-message-mb", type=float, default=64, help="largest request accepted")
    sub.add_argument("--no-warmup", action="store_true", help="skip the warmup requests")
    sub.add_argument("--no-keep-memory", action="store_true",
                     help="leave glibc's malloc settings alone (by default freed request "
                          "buffers are kept for reuse: serving/memory.py)")
    sub.add_argument("--enable_model_warmup", nargs="?", const=True, default=None,
                     type=_flag_bool, help="TF Serving's flag: replay the warmup requests "
                                           "(the default here)")
    sub.set_defaults(run=cmd_serve)

    sub = commands.add_parser("web", help="the search page: query an index by example in the "
                                          "browser (read-only, loopback by default)")
    sub.add_argument("index", help="an index written by `zoo index build`")
    sub.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--max-upload-mb", type=float, default=10,
                     help="largest query image accepted (default 10 MB)")
    sub.add_argument("--page-size", type=int, default=24, help="results per page (default 24)")
    sub.add_argument("--server", metavar="HOST:PORT",
                     help="encode queries through this model server (default: in-process)")
    sub.set_defaults(run=cmd_web)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
