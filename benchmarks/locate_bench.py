"""How far can the sliding box step? `zoo.locate` on synthetic pages at several strides.

    python -m benchmarks.locate_bench --pages 10 --strides 0.25 0.5

Each page (zoo.locating.make_search_page: procedural merchant marks drawn dark on grainy
paper, default 1000 x 800 px, 8 marks) hides one mark; the query is another drawing of its
identity. For each encoder and stride it prints the hit rate (best box IoU > 0.5 with the
mark's ink box), the seconds per page, the boxes searched, and the speed-up over the first
stride, all measured in this process. The raw-pixel encoder (cosine of the preprocessed crops'
pixels) is the baseline: whatever it finds is owed to the crop-to-ink preprocessing alone.
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
        from zoo.evaluation.retrieval import raw_pixel_embeddings

        return raw_pixel_embeddings(validate_images(images, size=self.image_size))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=8, help="marks per page")
    parser.add_argument("--strides", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--models", nargs="+", default=["sketch_gan_merchant"])
    args = parser.parse_args(argv)

    import zoo
    from zoo.locating import box_iou, locate, make_search_page
    from zoo.machine import machine_description

    pages = [make_search_page(args.height, args.width, args.marks, target=seed % args.marks,
                              seed=seed) for seed in range(args.pages)]
    encoders = [zoo.load(name, with_hash_head=False) for name in args.models] + [RawPixelEncoder()]
    locate(pages[0].page, pages[0].query, model=encoders[0], progress=False)  # warm up graphs

    print(f"machine: {machine_description()}")
    print(f"{args.pages} pages of {args.width}x{args.height} px, {args.marks} marks each; "
          f"default box sides; hit = best box IoU > 0.5")
    print(f"{'encoder':24s} {'stride':>6} {'hits':>7} {'s/page':>7} {'boxes':>6} {'speed-up':>8}")
    for encoder in encoders:
        first_seconds = None
        for stride in args.strides:
            hits, seconds, boxes = [], [], []
            for page in pages:
                started = time.perf_counter()
                found = locate(page.page, page.query, model=encoder, stride=stride,
                               progress=False)
                seconds.append(time.perf_counter() - started)
                hits.append(bool(found.boxes) and box_iou(found.boxes[0], page.truth) > 0.5)
                boxes.append(len(found.scores))
            mean_seconds = float(np.mean(seconds))
            first_seconds = first_seconds or mean_seconds
            print(f"{encoder.name:24s} {stride:>6.3g} {sum(hits):>3d}/{len(hits):<3d} "
                  f"{mean_seconds:>7.2f} {int(np.mean(boxes)):>6d} "
                  f"{first_seconds / mean_seconds:>7.2f}x")


if __name__ == "__main__":
    main()
