"""Issue 14, part 3: learned 64-bit code heads (zoo.training.code_head) against the ITQ head
fitted on the same frozen embeddings, in one run, seeds fixed.

    python -m benchmarks.code_head_probe sketch_gan_plus_merchant sketch_gan_plus_omniglot \
        --variant 'NT-Xent + BRE={}' --variant '+ distillation={"lambda_distill": 0.3}'

Each variant is LABEL=JSON, a dict of changes to CodeHeadRecipe() (its defaults, not the
registry's recipe, so rows compare with each other), one row each. Prints P@8 by Hamming
distance on the model's evaluation corpus and on the other archive (transfer) for the float
embedding, the ITQ head refitted here and each learned head. Nothing is shipped; `--record`
records each model's table as a "code_head_probe" result (MODELS.md, "Learned 64-bit codes").
"""

import argparse
import json
import shlex
import sys
import time

from zoo.registry import TRANSFER_ARCHIVE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--variant", action="append", default=None, metavar="LABEL=JSON",
                        help="a row: label and CodeHeadRecipe changes (repeatable; default "
                             "'defaults={}')")
    parser.add_argument("--record", action="store_true",
                        help="record the table as a result (reports/results/; MODELS.md)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.code_head_probe " + shlex.join(
        sys.argv[1:] if argv is None else argv)

    import zoo
    from zoo.data.corpora import load_corpus
    from zoo.apps.evaluation.retrieval import retrieval_metrics
    from zoo.hashing import fit_itq
    from zoo.machine import machine_description
    from zoo.registry import get_corpus
    from zoo.training.code_head import CodeHeadRecipe, encode_views, train_code_head

    machine = machine_description()
    print(f"machine: {machine}")
    variants = []
    for variant in args.variant or ["defaults={}"]:
        label, separator, changes = variant.partition("=")
        if not separator:
            raise SystemExit(f"--variant expects LABEL=JSON, got {variant!r}")
        variants.append((label, json.loads(changes)))
    base = CodeHeadRecipe()
    table = {}
    for name in args.models:
        encoder = zoo.load(name, with_hash_head=False)
        started = time.perf_counter()
        train = load_corpus(get_corpus(encoder.entry.corpus)).images
        embeddings = encoder.encode(train)
        views = encode_views(encoder, train, max(base.replace(**v).views for _, v in variants))
        corpora = [encoder.entry.eval_corpus, TRANSFER_ARCHIVE[encoder.entry.eval_corpus]]
        evaluated = {}
        for corpus in corpora:
            data = load_corpus(get_corpus(corpus))
            evaluated[corpus] = (encoder.encode(data.images), data.labels)
        print(f"\n{name}: heads trained on {encoder.entry.corpus} ({len(train)} images); "
              f"P@8 on {corpora[0]} | {corpora[1]} (transfer); encoding "
              f"{time.perf_counter() - started:.0f} s")

        rows = table.setdefault(name, {"corpora": corpora, "rows": []})["rows"]

        def row(label, head, seconds=None):
            cells = []
            for corpus in corpora:
                embedded, labels = evaluated[corpus]
                values = embedded if head is None else head.bits(embedded) * 2.0 - 1.0
                cells.append(round(retrieval_metrics(values, labels, k=8)["P@8"], 4))
            rows.append([label, *cells])  # a list: results are written with sorted keys
            timing = "" if seconds is None else f" ({seconds:.0f} s)"
            print(f"  {label + timing:<64} {cells[0]:.3f} | {cells[1]:.3f}", flush=True)

        row("float embedding (cosine)", None)
        for bits in sorted({base.replace(**changes).bits for _, changes in variants}):
            row(f"{bits}-bit ITQ (the learned heads' start)",
                fit_itq(embeddings, bits, seed=base.seed))
        for label, changes in variants:
            recipe = base.replace(**changes)
            tick = time.perf_counter()
            head = train_code_head(embeddings, views[:, :recipe.views], recipe)
            row(f"{label} {json.dumps(changes)}", head, time.perf_counter() - tick)
    if args.record:
        from zoo.apps.evaluation import results

        path = results.record("code_head_probe", *(
            {"model": name, "command": command, "machine": machine, **record}
            for name, record in table.items()))
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
