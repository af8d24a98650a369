"""`zoo.locate` on synthetic pages: the page's ink regions against the sliding grid at several
strides.

    python -m benchmarks.locate_bench --pages 10 --strides 0.25 0.5

Each page (zoo.apps.locating.make_search_page: procedural merchant marks drawn dark on grainy
paper, default 1000 x 800 px, 8 marks) hides one mark; the query is another drawing of its
identity. For each encoder it prints, for the ink regions (the default search) and for the
grid at each stride, the hit rate (best box IoU > 0.5 with the mark's ink box), the seconds
per page, the boxes encoded, and the speed-up over the grid at the first stride (the
exhaustive search), all measured in this process. The raw-pixel encoder (cosine of the
preprocessed crops' pixels) is the baseline: whatever it finds is owed to the preprocessing
alone.
"""

import argparse
import time

import numpy as np


class RawPixelEncoder:
    """The raw-pixel baseline with the Encoder interface locate uses."""

    name = "raw pixels"
    image_size = 64

    def encode(self, images, batch_size=None):
        from zoo.encoder import validate_images
        from zoo.apps.evaluation.retrieval import raw_pixel_embeddings

        return raw_pixel_embeddings(validate_images(images, size=self.image_size))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=8, help="marks per page")
    parser.add_argument("--strides", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--models", nargs="+",
                        default=["sketch_neighbours_merchant", "sketch_gan_plus_merchant",
                                 "sketch_gan_merchant"])
    args = parser.parse_args(argv)

    import zoo
    from zoo.apps.locating import box_iou, locate, make_search_page
    from zoo.machine import machine_description

    pages = [make_search_page(args.height, args.width, args.marks, target=seed % args.marks,
                              seed=seed) for seed in range(args.pages)]
    encoders = [zoo.load(name, with_hash_head=False) for name in args.models] + [RawPixelEncoder()]
    for encoder in encoders:  # warm up graphs
        locate(pages[0].page, pages[0].query, model=encoder, progress=False)
        locate(pages[0].page, pages[0].query, model=encoder, proposals="grid", progress=False)

    print(f"machine: {machine_description()}")
    print(f"{args.pages} pages of {args.width}x{args.height} px, {args.marks} marks each; "
          f"default box sides; hit = best box IoU > 0.5")
    print(f"{'encoder':24s} {'search':>11} {'hits':>7} {'s/page':>7} {'boxes':>6} "
          f"{'speed-up':>8}")
    for encoder in encoders:
        rows = []
        for stride in [None] + list(args.strides):
            hits, seconds, boxes = [], [], []
            for page in pages:
                started = time.perf_counter()
                if stride is None:
                    found = locate(page.page, page.query, model=encoder, progress=False)
                else:
                    found = locate(page.page, page.query, model=encoder, stride=stride,
                                   proposals="grid", progress=False)
                seconds.append(time.perf_counter() - started)
                hits.append(bool(found.boxes) and box_iou(found.boxes[0], page.truth) > 0.5)
                boxes.append(len(found.scores))
            rows.append(("ink regions" if stride is None else f"grid {stride:.3g}", hits,
                         float(np.mean(seconds)), int(np.mean(boxes))))
        exhaustive = rows[1][2]
        for label, hits, mean_seconds, boxes in rows:
            print(f"{encoder.name:24s} {label:>11} {sum(hits):>3d}/{len(hits):<3d} "
                  f"{mean_seconds:>7.2f} {boxes:>6d} {exhaustive / mean_seconds:>7.2f}x")


if __name__ == "__main__":
    main()
