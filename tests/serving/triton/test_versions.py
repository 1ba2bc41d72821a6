"""A new model version while the facade serves: the facade moves to it without a failed request,
and every answer comes from exactly one version (inputs built, model run and labels read for the
same export), never a mix.

Version 2 is the same trained run with its class order rotated: each classifier's last layer and
the class list shifted by one. It ranks the same categories, so every answer must equal version
1's; an answer that mixed the versions would name the neighbouring category instead.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from fbmr.export.export import export_run
from fbmr.training.data.prepared import PreparedDataset
from tests.helpers import serving_stack

STAGES = ("image", "text", "fusion")


def rotated_class_order(run: Path, out: Path) -> Path:
    """A copy of `run` whose classifiers give the same answers under another class order."""
    shutil.copytree(run, out)
    for stage in STAGES:
        path = out / stage / "best.pt"
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        classes = checkpoint["classes"]
        order = [*range(1, len(classes)), 0]  # new class id i is old class order[i]
        checkpoint["classes"] = [classes[i] for i in order]
        state = checkpoint["model"]
        # the last layer of each classifier head (the fusion model stacks three) and the stack's
        # bias: the only head tensors with a row per class
        last = [k for k, v in state.items() if "head" in k and tuple(v.shape[:1]) == (len(order),)]
        layers = [k for k in last if k != "head.bias"]
        ends = sorted(k.rsplit(".", 1)[1] for k in layers)
        assert layers and ends == sorted(["bias", "weight"] * (len(layers) // 2)), last
        assert ("head.bias" in last) == (stage == "fusion"), last
        for key in last:
            state[key] = state[key][order]
        torch.save(checkpoint, path)
    return out


def test_a_new_export_under_load_fails_no_request_and_mixes_no_versions(
    tiny_run, demo_prepared, cpu_repository, facade_settings, listings, tmp_path
):
    repository = tmp_path / "model_repository"
    shutil.copytree(cpu_repository, repository)
    version_2 = rotated_class_order(tiny_run, tmp_path / "run-rotated")

    def ask(client, i: int):
        photo, text = listings[i % len(listings)]
        return client.post(
            "/v1/predict/combined", files={"photo": ("p.jpg", photo)}, data={"text": text}
        )

    with serving_stack(repository, facade_settings, tmp_path) as client:
        first = [ask(client, i).json() for i in range(len(listings))]
        assert {answer["model_version"] for answer in first} == {1}
        stop, failures, answers = threading.Event(), [], []
        took: list[float] = []  # each request's seconds, the swap's wait included

        def hammer(worker: int) -> None:
            i = worker
            while not stop.is_set():
                sent = time.monotonic()
                response = ask(client, i)
                took.append(time.monotonic() - sent)
                if response.status_code == 200:
                    answers.append((i % len(listings), response.json()))
                else:
                    failures.append(response.text)
                i += 1

        with ThreadPoolExecutor(3) as pool:
            for worker in range(3):
                pool.submit(hammer, worker)
            try:
                export_run(
                    version_2, repository, data=PreparedDataset(demo_prepared), progress=False
                )
                exported = time.monotonic()
                deadline = exported + 120
                while time.monotonic() < deadline:
                    if sum(answer["model_version"] == 2 for _, answer in answers) >= 10:
                        break
                    time.sleep(0.2)
                switched = time.monotonic() - exported
            finally:
                stop.set()
        ready = client.get("/readyz").json()
        # the index was built for version 1: never searched with version 2's vectors
        similar = client.post("/v1/similar", data={"text": listings[0][1]})

    versions = [answer["model_version"] for _, answer in answers]
    print(
        f"{len(answers) + len(failures)} requests during the swap: {versions.count(1)} answered "
        f"by version 1, {versions.count(2)} by version 2, {len(failures)} failed; the slowest "
        f"took {max(took):.1f} s, version 2 answered 10 times {switched:.1f} s after the export"
    )
    assert failures == []
    # The stack lets a request wait 45 s for a switch (swap_wait_s), so a swap that held
    # requests for 40 s would still fail none: the wait itself is bounded here. A switch takes
    # about 5 s on a loaded 2-core machine (the rollout polls every 0.5 s, loads and checks the
    # new version beside the old); three times that is room for a slower machine, not for a
    # switch that stalls.
    assert max(took) < 15, f"a request waited {max(took):.1f} s during the swap"
    assert switched < 60, f"version 2 answered 10 requests only {switched:.1f} s after its export"
    assert {answer["model_version"] for _, answer in answers} == {1, 2}, ready["rollout"]
    for i, answer in answers:
        # Each category's probability as version 1 gave it (version 2 holds its classes in
        # another order). The demo model is barely trained, so two categories can tie within
        # float rounding, which differs with Triton's batch: the prediction is a most probable
        # category, not necessarily the same one of a tie.
        got = dict(zip(answer["classes"], answer["probabilities"], strict=True))
        want = dict(zip(first[i]["classes"], first[i]["probabilities"], strict=True))
        assert got == pytest.approx(want, abs=1e-4), (answer["model_version"], i)
        assert answer["pred"] == answer["classes"][0]
        assert want[answer["pred"]] == pytest.approx(max(want.values()), abs=1e-4)
    assert ready["model_version"] == 2
    assert similar.status_code == 503 and "rebuild" in similar.json()["error"]
