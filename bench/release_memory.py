#!/usr/bin/env python3
"""What the first inference after a fit hands back to the OS: RSS and malloc's freed bytes after a frozen
1-epoch fit at 224 px, then three get_preds (the first one trims, the next ones must not fault again).

    python bench/release_memory.py DATA [--size 224] [--bs 64]
"""

import argparse
import os
import resource
import time

os.environ.setdefault("VISIONTUNE_QUIET", "1")

import torch  # noqa: E402

import visiontune as vt  # noqa: E402
from visiontune._core.allocator import freed_bytes_held, release_freed_memory  # noqa: E402


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(2)
    learn = vt.vision_learner(vt.ImageData.from_folder(a.data, size=a.size, bs=a.bs, augment="side_on"),
                              "efficientnet_lite0")
    learn.fit_one_cycle(1, 1e-3)
    print(f"after fit: RSS {rss_mb():.0f} MiB, freed bytes malloc holds {freed_bytes_held() / 2**20:.0f} MiB")
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    held = release_freed_memory()
    print(f"release_freed_memory: {time.perf_counter() - t:.2f} s for {held / 2**20:.0f} MiB; RSS {rss_mb():.0f} MiB")
    for i in range(3):
        t = time.perf_counter()
        learn.get_preds()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
        print(f"get_preds {i}: {time.perf_counter() - t:.2f} s, RSS {rss_mb():.0f} MiB, minor faults since the "
              f"trim {faults:,}")


if __name__ == "__main__":
    main()
