"""The CPU allocator setting: a 224-pixel batch no longer unmaps and page-faults its activations every step,
and a person's own malloc choice is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys, torch
import visiontune as vt
from visiontune._core.allocator import keep_freed_memory
applied = keep_freed_memory()
torch.set_num_threads(2)
model = vt.vision_learner(vt.ImageData.from_folder(sys.argv[1], size=32), device="cpu").model.eval()
x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
faults = []
with torch.inference_mode():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def probe(folder, **env) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    r = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True,
                       env={**e, **env}, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_minor_page_faults_per_batch_stay_flat_after_warm_up(image_folder):
    tuned = probe(image_folder)
    assert tuned["applied"]
    # the earlier setting (mmap threshold at glibc's 32 MiB cap) left this batch's big buffers mmapped
    capped = probe(image_folder, MALLOC_MMAP_THRESHOLD_="33554432", MALLOC_TRIM_THRESHOLD_="1073741824")
    steady, old = max(tuned["faults"][2:]), min(capped["faults"][2:])
    assert steady < 2_000, tuned  # a few pages, not the activations (32x32x112x112 floats = 12,544 pages alone)
    assert old > 10 * steady, (tuned, capped)
