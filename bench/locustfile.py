"""Locust load test of the facade (or of anything answering the same API): one user class per way
of using it, weighted like real traffic, real photos and texts from a prepared dataset.

    .venv/bin/locust -f bench/locustfile.py --host http://127.0.0.1:8080 --data runs/real/prepared

    # headless, 8 users, 10 s of warm-up left out of the figures, then 40 s measured
    .venv/bin/locust -f bench/locustfile.py --host http://127.0.0.1:8080 --data runs/real/prepared \
        --headless -u 8 -r 8 -t 50s --warmup 10 --csv runs/bench/load/u8

    # one kind of request only: name the user classes
    .venv/bin/locust -f bench/locustfile.py ... CombinedUser

Traffic mix (user class weights): combined prediction 50, text 20, image 15, similar 15; Locust
splits the users between the classes by weight (1 user: combined only; 8: 4 / 2 / 1 / 1). Each
user sends its next request as soon as the last one is answered (no think time), so throughput
is the server's capacity at that many concurrent users.

Every answer is checked: HTTP 200, a prediction's `pred` among its `classes` and those the
dataset's label map names, similar listings a list of at most k with ids and categories; a wrong
answer counts as a failure in Locust's statistics. A 503 (the facade shedding load, or Triton
away) is also counted under its own name, `PATH (503)`, so that the latency of answered requests
stays apart from that of fast refusals; the user then waits the answer's Retry-After before its
next request, as `fbmr.client` does.

Options (also from environment variables): --data / FBMR_BENCH_DATA (prepared dataset, required),
--split / FBMR_BENCH_SPLIT (default val), --listings / FBMR_BENCH_LISTINGS (how many, default
128), --photos / FBMR_BENCH_PHOTOS (a folder of photos as sellers upload them, named by image id,
such as the sample's raw_images/: sent instead of the prepared 256-px ones), --api-key /
FBMR_API_KEY (sent as a bearer token when set), --warmup / FBMR_BENCH_WARMUP
(seconds after the start whose requests are left out of the statistics), --k (similar listings
asked for, default 10). FBMR_LOCUST_HTTP=requests switches the users from FastHttpUser
(geventhttpclient, the default: less CPU per request in the load generator) to HttpUser
(requests). The load generator's own CPU time is written beside Locust's CSV
(PREFIX_loadgen.json) and printed at the end.
"""

from __future__ import annotations

import json
import os
import resource
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gevent
from answers import check_prediction, check_similar
from common import Listing, load_listings
from locust import FastHttpUser, HttpUser, constant, events, task
from locust.env import Environment

from fbmr.core import contract
from fbmr.core.labels import LabelMap

PREDICT_IMAGE, PREDICT_TEXT = contract.PREDICT_IMAGE_PATH, contract.PREDICT_TEXT_PATH
PREDICT_COMBINED, SIMILAR = contract.PREDICT_COMBINED_PATH, contract.SIMILAR_PATH

# traffic mix, as user class weights
WEIGHTS = {"combined": 50, "text": 20, "image": 15, "similar": 15}


# -- listings and request bodies -----------------------------------------------------------


def multipart(fields: dict[str, str], photo: bytes | None) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type, built once so that the load generator
    spends its CPU on sending requests, not on encoding them."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    if photo is not None:
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="photo"; filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + photo
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    content_type: str


def requests_for(listing: Listing, k: int) -> dict[str, Request]:
    """The request of each kind for one listing."""
    return {
        "combined": Request(PREDICT_COMBINED, *multipart({"text": listing.text}, listing.photo)),
        "image": Request(PREDICT_IMAGE, *multipart({}, listing.photo)),
        "text": Request(
            PREDICT_TEXT, json.dumps({"text": listing.text}).encode(), "application/json"
        ),
        "similar": Request(SIMILAR, *multipart({"text": listing.text, "k": str(k)}, listing.photo)),
    }


# -- options and shared state -----------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--data", env_var="FBMR_BENCH_DATA", default="", help="prepared dataset (fbmr data prepare)"
    )
    parser.add_argument("--split", env_var="FBMR_BENCH_SPLIT", default="val")
    parser.add_argument("--listings", env_var="FBMR_BENCH_LISTINGS", type=int, default=128)
    parser.add_argument(
        "--photos",
        env_var="FBMR_BENCH_PHOTOS",
        default="",
        help="photos as sellers upload them, named by image id (the sample's raw_images/): "
        "sent instead of the prepared ones, with their listings' texts (any split)",
    )
    parser.add_argument("--api-key", env_var="FBMR_API_KEY", default="", is_secret=True)
    parser.add_argument(
        "--warmup",
        env_var="FBMR_BENCH_WARMUP",
        type=float,
        default=0.0,
        help="seconds after the start left out of the statistics",
    )
    parser.add_argument("--k", type=int, default=10, help="similar listings asked for")


class Shared:
    """What every user reads: request bodies, expected classes, headers (set at init)."""

    requests: ClassVar[list[dict[str, Request]]] = []
    classes: ClassVar[frozenset[str] | None] = None
    headers: ClassVar[dict[str, str]] = {}
    k: ClassVar[int] = 10


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # library use: nothing to load
        return
    if not options.data:
        raise SystemExit("give the prepared dataset: --data DIR or FBMR_BENCH_DATA")
    data = Path(options.data)
    Shared.requests = [
        requests_for(x, options.k)
        for x in load_listings(
            data, options.split, options.listings, Path(options.photos) if options.photos else None
        )
    ]
    label_map = data / "label_map.json"
    Shared.classes = frozenset(LabelMap.load(label_map).classes) if label_map.is_file() else None
    Shared.headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    Shared.k = options.k
    # Loading took seconds without yielding to gevent's loop, whose cached clock is now stale:
    # timers set from it (Locust's --run-time, the warm-up) would fire that much too early.
    gevent.get_hub().loop.update_now()


_started: dict[str, float] = {}


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _started.update(cpu=usage.ru_utime + usage.ru_stime, wall=time.monotonic())
    warmup = environment.parsed_options.warmup if environment.parsed_options else 0
    if warmup > 0:

        def reset() -> None:
            gevent.sleep(warmup)
            environment.stats.reset_all()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            _started.update(cpu=usage.ru_utime + usage.ru_stime, wall=time.monotonic())

        gevent.spawn(reset)


@events.test_stop.add_listener
def _stop(environment: Environment, **_: Any) -> None:
    if not _started:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - _started["cpu"]
    wall = time.monotonic() - _started["wall"]
    requests = environment.stats.total.num_requests
    report = {
        "client": HTTP_CLIENT,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cpu_share_of_one_core": round(cpu / wall, 3) if wall else None,
        "requests": requests,
        "cpu_ms_per_request": round(1000 * cpu / requests, 3) if requests else None,
    }
    print("load generator:", json.dumps(report))
    prefix = environment.parsed_options.csv_prefix if environment.parsed_options else None
    if prefix:
        Path(f"{prefix}_loadgen.json").write_text(json.dumps(report, indent=2) + "\n")


# -- users ------------------------------------------------------------------------------------

HTTP_CLIENT = os.environ.get("FBMR_LOCUST_HTTP", "fast")
if HTTP_CLIENT not in ("fast", "requests"):
    raise SystemExit(f"FBMR_LOCUST_HTTP: fast or requests, not {HTTP_CLIENT!r}")
BaseUser: type = FastHttpUser if HTTP_CLIENT == "fast" else HttpUser


class ApiUser(BaseUser):
    """Sends one kind of request back to back, cycling through the listings."""

    abstract = True
    wait_time = constant(0)
    kind = ""
    # FastHttpUser: don't let connection errors stop the user; count them as failures
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.position = id(self) % max(1, len(Shared.requests))

    def send(self) -> None:
        request = Shared.requests[self.position % len(Shared.requests)][self.kind]
        self.position += 1
        headers = {**Shared.headers, "Content-Type": request.content_type}
        retry_after = 0.0
        with self.client.post(
            request.path, data=request.body, headers=headers, catch_response=True
        ) as response:
            try:
                body = response.json()
            except Exception:
                body = None
            if self.kind == "similar":
                problem = check_similar(response.status_code, body, Shared.k)
            else:
                problem = check_prediction(response.status_code, body, Shared.classes)
            if response.status_code == 503:
                # refused (load shed, or Triton away): its own row, so that the latency of the
                # answered requests is not diluted by fast refusals; still a failure
                response.request_meta["name"] = f"{request.path} (503)"
                retry_after = retry_after_s(response.headers.get("Retry-After"))
            if problem:
                response.failure(problem)
            else:
                response.success()
        # as fbmr.client does: a refused caller waits what the server asked before trying again,
        # instead of sending refusals back to back (which takes the CPU the answers need)
        gevent.sleep(retry_after)


def retry_after_s(value: str | None) -> float:
    """A Retry-After in seconds (1 when missing or not a number of seconds), at most 10."""
    try:
        return min(10.0, max(0.0, float(value or 1)))
    except ValueError:
        return 1.0


class CombinedUser(ApiUser):
    weight = WEIGHTS["combined"]
    kind = "combined"

    @task
    def combined(self) -> None:
        self.send()


class TextUser(ApiUser):
    weight = WEIGHTS["text"]
    kind = "text"

    @task
    def text(self) -> None:
        self.send()


class ImageUser(ApiUser):
    weight = WEIGHTS["image"]
    kind = "image"

    @task
    def image(self) -> None:
        self.send()


class SimilarUser(ApiUser):
    weight = WEIGHTS["similar"]
    kind = "similar"

    @task
    def similar(self) -> None:
        self.send()
