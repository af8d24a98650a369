"""`zoo` command line: parses arguments and calls library functions, nothing more."""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _recipe_changes(pairs):
    """Parse --set key=value pairs into a dict with int/float values where they parse."""
    changes = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"Expected --set key=value, got {pair!r}.")
        key, value = pair.split("=", 1)
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        changes[key] = value
    return changes


def cmd_list(args):
    from zoo import list_models

    for name, description in list_models().items():
        print(f"{name:24s} {description}")


def cmd_train(args):
    from zoo.training.run import train_model

    path = train_model(args.name, out_dir=args.out, data_dir=args.data_dir,
                       recipe_changes=_recipe_changes(args.set), resume=not args.restart)
    print(f"weights: {path}")


def cmd_publish(args):
    from zoo.training.run import publish

    record = publish(args.name, args.run_dir)
    print(json.dumps(record, indent=2))


def cmd_evaluate(args):
    from zoo.evaluation.run import evaluate_retrieval, format_table

    results = evaluate_retrieval(args.names, corpus=args.corpus, data_dir=args.data_dir,
                                 grid_dir=args.grid, record=args.record)
    print(format_table(results))
    if args.grid:
        print(f"retrieval grids written to {args.grid}/")


def cmd_evaluate_invariance(args):
    from zoo.evaluation.invariance import format_summary
    from zoo.evaluation.report import evaluate_invariance, write_report

    command = (f"zoo evaluate invariance {' '.join(args.names)} --out {args.out} --seed {args.seed}"
               + (" --record" if args.record else ""))
    result = evaluate_invariance(args.names, args.out, seed=args.seed, data_dir=args.data_dir,
                                 command=command, record=args.record)
    print(format_summary(result["summary"]))
    for claim in result["claims"].values():
        print(claim["text"])
    print(f"figures, JSON and CSV in {args.out}/; report: {write_report(args.out)}")


def cmd_evaluate_oneshot(args):
    from zoo.evaluation.report import evaluate_oneshot, write_report

    for name in args.names:
        command = (f"zoo evaluate oneshot {name} --out {args.out}"
                   + (" --record" if args.record else ""))
        result = evaluate_oneshot(name, data_dir=args.data_dir, out_dir=args.out, runs=args.runs,
                                  command=command, record=args.record)
        print(name)
        for method, error in result["mean_error"].items():
            print(f"  {method:24s} {100 * error:5.1f}% error ({len(result['runs'])} runs)")
    print(f"report: {write_report(args.out)}")


def cmd_report(args):
    from zoo import model_cards
    from zoo.evaluation.report import write_report

    print(f"wrote {model_cards.write()}")
    print(f"wrote {write_report(args.out)}")


def cmd_models_md(args):
    from zoo import model_cards

    if args.check:
        with open(model_cards.MODELS_MD) as handle:
            if handle.read() != model_cards.render():
                raise ValueError("MODELS.md is out of date; run `zoo models-md`.")
        print("MODELS.md is up to date")
    else:
        print(f"wrote {model_cards.write()}")


def cmd_demo(args):
    from zoo.demo import run_demo

    print(run_demo(args.model, args.out, via_server=not args.in_process))


def cmd_bench(args):
    from zoo.benchmarks import benchmark_training

    result = benchmark_training(args.name, steps=args.steps, batch_size=args.batch_size,
                                rounds=args.rounds, jit_compile=args.jit)
    print(f"machine: {result['machine']}")
    print(f"{args.name}, batch {result['batch_size']}, {result['steps']} steps each "
          f"(median s/step; speed-up = reference / loop):")
    for loop, seconds in result["s_per_step"].items():
        speedup = result["speedup"].get(loop)
        ratio = f"  {speedup:.2f}x" if speedup else "  (baseline: eager GradientTape, float32)"
        print(f"  {loop:24s} {seconds:7.3f} s/step{ratio}")


def cmd_export(args):
    from zoo import load

    path = load(args.name).export(args.out, args.version, overwrite=args.overwrite)
    print(f"exported {args.name} version {args.version} to {path}")


def cmd_serve(args):
    from serving.server import serve

    serve(args.model_base_path, port=args.port, rest_port=args.rest_port, host=args.host,
          model_config_file=args.model_config_file,
          batching_parameters_file=args.batching_parameters_file,
          poll_interval=args.poll_interval, max_message_mb=args.max_message_mb,
          warmup=not args.no_warmup)


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
    sub.set_defaults(run=cmd_train)

    sub = commands.add_parser("publish", help="copy a finished run's weights into the package")
    sub.add_argument("name")
    sub.add_argument("run_dir")
    sub.set_defaults(run=cmd_publish)

    sub = commands.add_parser("export", help="write a versioned SavedModel for TF Serving")
    sub.add_argument("name")
    sub.add_argument("--out", default="models", help="base folder (default: models)")
    sub.add_argument("--version", type=int, default=1)
    sub.add_argument("--overwrite", action="store_true", help="replace an existing version")
    sub.set_defaults(run=cmd_export)

    sub = commands.add_parser("evaluate", help="measure models against baselines")
    kinds = sub.add_subparsers(dest="kind", required=True)
    kind = kinds.add_parser("retrieval", help="P@8, mAP, R@1/R@8 with a raw-pixel baseline")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--corpus", help="named corpus (default: the first model's eval corpus)")
    kind.add_argument("--data-dir", help="where the corpus lives (Omniglot zips)")
    kind.add_argument("--grid", metavar="DIR", help="write a retrieval grid PNG per row")
    kind.add_argument("--record", action="store_true",
                      help="store the numbers in the weights manifest (for MODELS.md)")
    kind.set_defaults(run=cmd_evaluate)

    kind = kinds.add_parser("invariance", help="rotation/scale/shift invariance (paper Fig. 5) "
                                               "vs. raw pixels and an untrained encoder")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--out", default="reports",
                      help="figures, JSON, CSV and REPORT.md (default: reports)")
    kind.add_argument("--seed", type=int, default=0)
    kind.add_argument("--data-dir", help="where the corpus lives (Omniglot zips)")
    kind.add_argument("--record", action="store_true",
                      help="store the summaries in the weights manifest (for MODELS.md)")
    kind.set_defaults(run=cmd_evaluate_invariance)

    kind = kinds.add_parser("oneshot", help="Omniglot 20-way one-shot error vs. raw pixels and "
                                            "Modified Hausdorff Distance")
    kind.add_argument("names", nargs="+")
    kind.add_argument("--data-dir", help="folder holding all_runs.zip (default: "
                                         "../shared/data/omniglot or ZOO_OMNIGLOT_DIR)")
    kind.add_argument("--out", default="reports")
    kind.add_argument("--runs", type=int, help="only the first N runs (quick check)")
    kind.add_argument("--record", action="store_true",
                      help="store the mean errors in the weights manifest (for MODELS.md)")
    kind.set_defaults(run=cmd_evaluate_oneshot)

    sub = commands.add_parser("report", help="regenerate MODELS.md's results and the report "
                                             "linking every figure (REPORT.md)")
    sub.add_argument("--out", default="reports", help="the evaluation folder (default: reports)")
    sub.set_defaults(run=cmd_report)

    sub = commands.add_parser("models-md", help="regenerate MODELS.md from the registry")
    sub.add_argument("--check", action="store_true", help="only check that it is up to date")
    sub.set_defaults(run=cmd_models_md)

    sub = commands.add_parser("demo", help="export, serve, encode a generated corpus through "
                                           "the client, write a retrieval grid")
    sub.add_argument("--model", default="sketch_gan_merchant")
    sub.add_argument("--out", default="demo")
    sub.add_argument("--in-process", action="store_true", help="encode without the server")
    sub.set_defaults(run=cmd_demo)

    sub = commands.add_parser("bench", help="training speed vs. a plain reference loop")
    sub.add_argument("name")
    sub.add_argument("--steps", type=int, default=10)
    sub.add_argument("--rounds", type=int, default=2)
    sub.add_argument("--batch-size", type=int, default=128)
    sub.add_argument("--jit", action="store_true", help="compile the zoo loop with XLA")
    sub.set_defaults(run=cmd_bench)

    sub = commands.add_parser("serve", help="serve exported models with TF Serving's gRPC/REST API")
    sub.add_argument("model_base_path", nargs="?",
                     help="folder of NAME/VERSION/ SavedModels (every model, latest version)")
    sub.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    sub.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--model-config-file", help="TF Serving ModelServerConfig text proto")
    sub.add_argument("--batching-parameters-file", help="TF Serving BatchingParameters text proto")
    sub.add_argument("--poll-interval", type=float, default=1.0,
                     help="seconds between file-system polls for new versions (0: never)")
    sub.add_argument("--max-message-mb", type=float, default=64, help="largest request accepted")
    sub.add_argument("--no-warmup", action="store_true", help="skip the warmup requests")
    sub.set_defaults(run=cmd_serve)
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
