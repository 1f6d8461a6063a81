"""Two CPU processes (gloo): both ranks end with the same weights and the same test metrics, the metrics equal a
single-process evaluation of those weights (features sharded then gathered), and the two ranks' training batches
are the single-process sampler's batches dealt out in turn."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

from cvlab_shared.data.vi_reid import VIIdentitySampler


def test_ddp_two_processes(tmp_path):
    env = {**os.environ, "CVLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("ddp_worker.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=600, env=env, cwd=tmp_path)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key])
    assert a["results"] == b["results"] and a["results"]["all_mAP"] > 0

    os.environ["CVLAB_CACHE"] = str(tmp_path / "cache")
    spec = importlib.util.spec_from_file_location("vireid_ddp_worker", script)  # unique name: other packages
    worker = importlib.util.module_from_spec(spec)  # have a ddp_worker.py too, and one pytest runs them all
    spec.loader.exec_module(worker)
    model, data = worker.tiny(tmp_path)
    data.setup("test")
    # single process: the same weights, every test image, the same protocol
    from vireid_dense.models import TwoStreamNet

    net = TwoStreamNet(data.num_classes, "tiny", 8)
    net.load_state_dict(a["state"])
    model.net = net.eval()
    feats = []
    for images, _, _, index in data.test_loader():
        infrared = torch.tensor(data.test_infrared)[index]
        feats.append(model.embed_batch(images, infrared))
    single = data.evaluate(torch.cat(feats))
    for k, v in single.items():
        assert abs(v - a["results"][k]) < 1e-5, k

    # the ranks' batches: the single-process sampler's batches, even ones on rank 0, odd ones on rank 1 (epoch 0)
    whole = VIIdentitySampler(
        [r.pid for r in data.train_visible], [r.pid for r in data.train_thermal], 4, 2, seed=0, num_batches=4
    ).batches()
    labels = lambda batch: [data.train_visible[i].pid for i, _ in batch] + [data.train_thermal[j].pid for _, j in batch]
    assert a["labels"][:2] == [labels(whole[0]), labels(whole[2])]
    assert b["labels"][:2] == [labels(whole[1]), labels(whole[3])]
