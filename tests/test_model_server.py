"""Generation as a service (``p2p serve-models``, ``p2p_app/model_server.py``) and the remote generator
(``generators/remote.py``): the same pixels and cache keys as in-process, batching, bad requests, and a backend
that is down, slow or answers garbage (a clear GenerationError; in the arena a clear message and no trial)."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import free_port, serving
from generators import BackendUnavailable, GenerationError, ModelLoadError, ModelSpec, cache_key
from generators.remote import RemoteGenerator
from p2p_app.model_server import ModelService
from p2p_app.service import SERVICE_DOWN, UserError
from p2p_app.startup import create

PROMPTS = ("sessile polyp in the sigmoid colon", "flat serrated lesion, narrow band imaging",
           "small hyperplastic polyp in the rectum", "ulcerative colitis with friable mucosa")


@contextmanager
def model_service(registry, **options):
    service = ModelService(registry, **{"batching": "off", **options})
    try:
        with serving(service.asgi()) as url:
            yield service, url
    finally:
        service.close()


@pytest.fixture(scope="module")
def service_url(demo_registry):
    with model_service(demo_registry) as (_service, url):
        yield url


def remote_of(registry, name: str, url: str, **kwargs) -> RemoteGenerator:
    spec = registry.spec(name)
    return RemoteGenerator(name, spec.family, spec.modality, url, **kwargs)


def remote_config(tmp_path, registry, url: str, **settings) -> str:
    """An app config whose models are the demo's, each served by the generation service at ``url``."""
    lines = ["studies = []", *(f"{k} = {json.dumps(v)}" for k, v in settings.items())]
    for name in registry.names():
        spec = registry.spec(name)
        lines += ["", "[[models]]", f'name = "{name}"', f'family = "{spec.family}"',
                  f'modality = "{spec.modality}"', f'source = "{url}"']
    path = tmp_path / "remote.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------------------- identity


def test_every_model_gives_the_same_pixels_and_cache_key_through_the_service(demo_registry, service_url):
    for name in demo_registry.names():  # three families × two modalities (radiology: greyscale)
        local = demo_registry.get(name)
        remote = remote_of(demo_registry, name, service_url)
        assert remote.effective_params() == local.effective_params()
        assert remote.prompt_tokens(PROMPTS[0]) == local.prompt_tokens(PROMPTS[0])
        ours = local.generate(PROMPTS[0], 424242)
        theirs = remote.generate(PROMPTS[0], 424242)
        assert np.array_equal(pixels(ours.image), pixels(theirs.image)), name
        assert cache_key(name, theirs.prompt, theirs.seed, theirs.params) == cache_key(
            name, ours.prompt, ours.seed, ours.params)
        # a parameter given per call travels too, and changes the image as in-process
        assert np.array_equal(pixels(local.generate(PROMPTS[1], 7, num_inference_steps=1).image),
                              pixels(remote.generate(PROMPTS[1], 7, num_inference_steps=1).image)), name
        remote.close()


def test_an_app_whose_models_are_a_service_stores_the_same_presentation_copies(tmp_path, demo_registry, service_url):
    """The web tier holds no weights; the images it stores (re-encoded presentation copies) are byte-identical
    to the in-process app's, under the same cache keys."""
    remote_app = create(remote_config(tmp_path, demo_registry, service_url), data_dir=tmp_path / "remote")
    local_app = create(data_dir=tmp_path / "local", registry=demo_registry)
    try:
        assert remote_app.registry.all_remote and not remote_app.registry.is_made(demo_registry.names()[0])
        for spec in remote_app.config.models_for("radiology"):
            mine = remote_app.generate_image(remote_app.registry.get(spec.name), PROMPTS[2], 99)
            theirs = local_app.generate_image(demo_registry.get(spec.name), PROMPTS[2], 99)
            assert mine.image.sha256 == theirs.image.sha256
            assert remote_app.storage.image_by_cache_key(
                cache_key(spec.name, PROMPTS[2], 99, demo_registry.get(spec.name).effective_params())) is not None
        rater = remote_app.sign_in("Dr Remote")
        trial = remote_app.live_generate(rater, "colonoscopy", PROMPTS[3])
        assert [p.label for p in trial.panels] == ["Image A", "Image B", "Image C"]
        assert remote_app.generation_slots > 1  # the service batches: several live trials at once
    finally:
        remote_app.close()
        local_app.storage.close()


def test_models_are_listed_with_family_modality_and_defaults(demo_registry, service_url):
    listing = httpx.get(f"{service_url}/v1/models").json()
    assert [m["id"] for m in listing["data"]] == demo_registry.names()
    one = listing["data"][0]
    assert one["family"] == demo_registry.spec(one["id"]).family
    assert one["defaults"] == demo_registry.get(one["id"]).effective_params()
    assert httpx.get(f"{service_url}/healthz").json()["ok"] is True


def test_png_response_format(demo_registry, service_url):
    name = demo_registry.names()[0]
    r = httpx.post(f"{service_url}/v1/images/generations",
                   json={"model": name, "prompt": PROMPTS[0], "seed": 5, "size": "64x64", "steps": 2,
                         "response_format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-p2p-seed"] == "5"
    image = Image.open(io.BytesIO(r.content))
    assert np.array_equal(pixels(image), pixels(demo_registry.get(name).generate(PROMPTS[0], 5).image))


# ------------------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("body, status, words", [
    ({"model": "no-such-model", "prompt": "x", "seed": 1}, 404, "unknown model 'no-such-model'"),
    ({"model": "{m}", "prompt": "x", "seed": -1}, 400, "seed must be an integer"),
    ({"model": "{m}", "prompt": "x", "seed": "12"}, 400, "seed must be an integer"),
    ({"model": "{m}", "prompt": "x", "seed": True}, 400, "seed must be an integer"),
    ({"model": "{m}", "prompt": "x", "seed": 2**63}, 400, "seed must be an integer"),
    ({"model": "{m}", "prompt": "x"}, 400, "'seed' is required"),
    ({"model": "{m}", "prompt": "  ", "seed": 1}, 400, "'prompt' must be non-empty"),
    ({"model": "{m}", "prompt": "x", "seed": 1, "size": "big"}, 400, "'size' must be 'WIDTHxHEIGHT'"),
    ({"model": "{m}", "prompt": "x", "seed": 1, "size": "68x64"}, 400, "multiple of 8"),
    ({"model": "{m}", "prompt": "x", "seed": 1, "n": 2}, 400, "'n' must be 1"),
    ({"model": "{m}", "prompt": "x", "seed": 1, "quality": "hd"}, 400, "unknown field(s) 'quality'"),
    ({"model": "{m}", "prompt": "x", "seed": 1, "params": {"cfg": 3}}, 400, "unknown parameter 'cfg'"),
    ({"model": "{m}", "prompt": "x", "seed": 1, "params": {"greyscale": False}}, 400, "'greyscale' is set"),
    ({"model": "{m}", "prompt": "polyp " * 200, "seed": 1}, 400, "too long"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_bad_generation_requests_get_a_4xx_with_a_clear_json_error(demo_registry, service_url, body, status, words):
    if isinstance(body, dict) and body.get("model") == "{m}":
        body = {**body, "model": demo_registry.names()[0]}
    r = httpx.post(f"{service_url}/v1/images/generations", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_oversized_and_malformed_bodies(demo_registry, service_url):
    name = demo_registry.names()[0]
    huge = json.dumps({"model": name, "prompt": "x" * 70_000, "seed": 1})
    r = httpx.post(f"{service_url}/v1/images/generations", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]

    def chunks():  # no content-length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 8192

    r = httpx.post(f"{service_url}/v1/images/generations", content=chunks())
    assert r.status_code == 413
    r = httpx.post(f"{service_url}/v1/images/generations", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert httpx.get(f"{service_url}/v1/models/nope").status_code == 404


def test_a_token_guards_every_route_but_the_health_check(demo_registry, tmp_path):
    name = demo_registry.names()[0]
    with model_service(demo_registry, token="s3cret") as (_service, url):
        assert httpx.get(f"{url}/healthz").status_code == 200
        r = httpx.get(f"{url}/v1/models")
        assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        with pytest.raises(BackendUnavailable, match="model_token"):
            remote_of(demo_registry, name, url).generate(PROMPTS[0], 1)
        good = remote_of(demo_registry, name, url, token="s3cret")
        assert np.array_equal(pixels(good.generate(PROMPTS[0], 1).image),
                              pixels(demo_registry.get(name).generate(PROMPTS[0], 1).image))


# ------------------------------------------------------------------------------------------- batching


class CountingPipe:
    """The pipeline with a call counter (and the size of each call's batch)."""

    def __init__(self, pipe):
        self.pipe, self.batches = pipe, []

    def __call__(self, *args, **kwargs):
        prompt = kwargs.get("prompt")
        self.batches.append(len(prompt) if isinstance(prompt, list) else 1)
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def concurrently(url: str, name: str, prompts, seeds):
    def one(args):
        prompt, seed = args
        r = httpx.post(f"{url}/v1/images/generations", json={"model": name, "prompt": prompt, "seed": seed},
                       timeout=120)
        assert r.status_code == 200, r.text
        return pixels(Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))))

    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, zip(prompts, seeds)))


def test_concurrent_requests_for_one_model_are_combined_into_one_pipeline_call(demo_registry, monkeypatch):
    """Forced batching (``batching="on"``): four concurrent requests become one pipeline call, and each image is
    its own prompt and seed's (within rounding of its one-at-a-time image: batched kernels may round
    differently, which is why ``auto`` batches only where the images are identical)."""
    name = demo_registry.names()[0]  # the tiny MSDM model
    gen = demo_registry.get(name)
    counting = CountingPipe(gen._pipe)
    monkeypatch.setattr(gen, "_pipe", counting)
    seeds = [3, 30, 300, 3000]
    with model_service(demo_registry, batching="on", window_s=1.0) as (service, url):
        images = concurrently(url, name, PROMPTS, seeds)
        stats = service.queues()[name].stats
    assert counting.batches == [4] and (stats.calls, stats.images, stats.largest) == (1, 4, 4)
    singles = [pixels(gen.generate(p, s).image) for p, s in zip(PROMPTS, seeds)]
    for i, image in enumerate(images):
        diff = np.abs(image.astype(int) - singles[i].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001  # its own image, up to rounding
        assert all(np.abs(image.astype(int) - other.astype(int)).max() > 10 for j, other in enumerate(singles) if j != i)


def test_auto_batches_only_where_batched_outputs_are_identical(demo_registry, monkeypatch):
    """``auto`` probes each model: batched only if one batched call gives bit-identical float outputs to one call
    per prompt. Then concurrent requests give exactly the in-process images whichever way they ran."""
    results = {}
    for name in demo_registry.names()[:2]:  # MSDM and FLUX
        gen = demo_registry.get(name)
        prompts, seeds = list(PROMPTS[:3]), [1, 2, 3]
        # the 8-bit images of a batched call differ from one-at-a-time ones exactly where the probe says so
        batched = [pixels(r.image) for r in gen.generate_many(prompts, seeds)]
        same_pixels = all(np.array_equal(b, pixels(gen.generate(p, s).image))
                          for b, p, s in zip(batched, prompts, seeds))
        results[name] = gen.batch_invariant(prompts, seeds)
        assert same_pixels or not results[name], name  # invariant outputs give identical pixels
    name = demo_registry.names()[0]
    gen = demo_registry.get(name)
    counting = CountingPipe(gen._pipe)
    monkeypatch.setattr(gen, "_pipe", counting)
    seeds = [4, 40, 400]
    with model_service(demo_registry, batching="auto", window_s=1.0) as (service, url):
        queue = service.queue(name)
        assert queue.probe() == results[name] and queue.batches == results[name]
        counting.batches.clear()
        images = concurrently(url, name, PROMPTS[:3], seeds)
    assert counting.batches == ([3] if results[name] else [1, 1, 1])
    for image, prompt, seed in zip(images, PROMPTS, seeds):
        assert np.array_equal(image, pixels(gen.generate(prompt, seed).image))


def test_requests_with_different_settings_are_not_batched_together(demo_registry, monkeypatch):
    name = demo_registry.names()[0]
    gen = demo_registry.get(name)
    counting = CountingPipe(gen._pipe)
    monkeypatch.setattr(gen, "_pipe", counting)
    with model_service(demo_registry, batching="on", window_s=1.0) as (_service, url):
        def one(steps):
            return httpx.post(f"{url}/v1/images/generations", timeout=120,
                              json={"model": name, "prompt": PROMPTS[0], "seed": 1, "steps": steps}).status_code
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(one, [1, 2, 1, 2])) == [200] * 4
    assert sorted(counting.batches) == [2, 2]


# ------------------------------------------------------------------------------------------- faults


def fake_backend(demo_registry, generations):
    """A service that describes the demo models correctly but answers generations with ``generations``."""
    async def model(request):
        name = request.path_params["name"]
        spec = demo_registry.spec(name)
        return JSONResponse({"id": name, "family": spec.family, "modality": spec.modality,
                             "defaults": demo_registry.get(name).effective_params()})

    async def tokens(request):
        return JSONResponse({"counts": [{"encoder": "CLIP text encoder", "used": 3, "limit": 75}]})

    async def healthz(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/healthz", healthz), Route("/v1/models/{name:path}", model),
                             Route("/v1/tokens", tokens, methods=["POST"]),
                             Route("/v1/images/generations", generations, methods=["POST"])])


def png_b64(size) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def _not_png(request):
    body = await request.json()
    return JSONResponse({"data": [{"b64_json": base64.b64encode(b"GIF89a....").decode(), "seed": body["seed"]}]})


async def _wrong_size(request):
    body = await request.json()
    return JSONResponse({"data": [{"b64_json": png_b64((32, 48)), "seed": body["seed"], "prompt": body["prompt"],
                                   "params": body["params"]}]})


async def _html_error_page(request):
    from starlette.responses import HTMLResponse

    return HTMLResponse("<html>502 Bad Gateway</html>", status_code=502)


async def _slow(request):
    import asyncio

    await asyncio.sleep(3)
    return JSONResponse({})


@pytest.mark.parametrize("handler, words", [
    (_not_png, "not a PNG"),
    (_wrong_size, "32×48 pixels instead of 64×64"),
    (_html_error_page, "HTTP 502"),
    (_slow, "did not answer within 0.5 s"),
])
def test_a_backend_answering_garbage_or_too_slowly_is_a_generation_error(demo_registry, handler, words):
    name = demo_registry.names()[0]
    with serving(fake_backend(demo_registry, handler)) as url:
        remote = remote_of(demo_registry, name, url, timeout=0.5)
        with pytest.raises(GenerationError, match=words) as err:
            remote.generate(PROMPTS[0], 1)
        assert name in str(err.value) and url in str(err.value)


def test_a_dead_backend_is_a_generation_error_naming_the_address(demo_registry):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    remote = remote_of(demo_registry, demo_registry.names()[0], url)
    with pytest.raises(BackendUnavailable, match="cannot be reached.*serve-models"):
        remote.generate(PROMPTS[0], 1)
    assert remote.reachable() is False


@pytest.mark.parametrize("dead", [True, False])
def test_arena_with_a_dead_or_garbage_backend_shows_a_clear_message_and_stores_no_trial(tmp_path, demo_registry, dead):
    if dead:
        url = f"http://127.0.0.1:{free_port()}"
        ctx = None
    else:
        ctx = serving(fake_backend(demo_registry, _wrong_size))
        url = ctx.__enter__()
    app = create(remote_config(tmp_path, demo_registry, url), data_dir=tmp_path / "web")
    try:
        rater = app.sign_in("Dr Down")
        with pytest.raises(UserError) as err:
            app.live_generate(rater, "colonoscopy", PROMPTS[0])
        assert str(err.value) == SERVICE_DOWN
        assert app.storage.trials_for(rater.rater_pk, None) == []
        # the live counter says it cannot count rather than failing
        assert app.prompt_budget("colonoscopy", PROMPTS[0]).used is None or not dead
    finally:
        app.close()
        if ctx is not None:
            ctx.__exit__(None, None, None)


def test_a_service_model_that_differs_from_the_entry_is_refused(demo_registry, service_url):
    name = demo_registry.names()[0]
    spec = demo_registry.spec(name)
    other = "radiology" if spec.modality == "colonoscopy" else "colonoscopy"
    with pytest.raises(ModelLoadError, match="modality"):
        RemoteGenerator(name, spec.family, other, service_url).load()
    with pytest.raises(ModelLoadError, match="grey"):
        RemoteGenerator(name, spec.family, spec.modality, service_url, greyscale=True).load()
    missing = RemoteGenerator("not-served", spec.family, spec.modality, service_url)
    with pytest.raises(BackendUnavailable, match="HTTP 404.*unknown model"):
        missing.load()


@pytest.mark.parametrize("extra, words", [
    ({"source": "http://"}, "plain http"),
    ({"source": "http://gpu:8000/?token=x"}, "no query"),
    ({"source": "http://gpu:99999"}, "not a valid address"),
    ({"weight_seed": 3}, "weight_seed is set in the generation service"),
    ({"lora": "adapter/"}, "lora is set in the generation service"),
    ({"device": "cuda"}, "device is set in the generation service"),
])
def test_bad_service_entries_are_refused_when_the_config_is_read(extra, words):
    entry = {"name": "m", "family": "flux", "modality": "colonoscopy", "source": "http://gpu-host:8000", **extra}
    with pytest.raises(ValueError, match=words):
        ModelSpec.from_dict(entry)
    good = {"name": "m", "family": "flux", "modality": "colonoscopy", "source": "https://gpu-host/p2p"}
    assert ModelSpec.from_dict(good).is_remote and not ModelSpec.from_dict(good).is_tiny


def test_a_web_tier_of_service_models_runs_without_the_generation_stack(tmp_path, demo_registry, service_url):
    """A config of service models works where torch, diffusers and transformers cannot even be imported."""
    from test_startup import no_torch_env, run_py

    config = remote_config(tmp_path, demo_registry, service_url)
    r = run_py(f"""
        from p2p_app.batch import my_share
        from p2p_app.startup import create, prepare_in_background
        app = create({config!r}, data_dir={str(tmp_path / 'nt')!r})
        prepare_in_background(app, [], echo=print)  # what `p2p serve` runs once it listens
        assert not app.readiness.models_error, app.readiness.models_error
        assert my_share([1, 2]) == [1, 2]  # `p2p generate` / `p2p study generate` run here too
        rater = app.sign_in("Dr Light")
        trial = app.live_generate(rater, "radiology", "frontal chest radiograph, small left pleural effusion")
        print(app.generation_slots, len(trial.panels), app.prompt_budget("radiology", "chest").used)
        """, no_torch_env(tmp_path), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-3:] == ["8", "3", "1"]


def test_presenter_mode_generates_live_while_a_service_answers(tmp_path, demo_registry, service_url):
    """A pack whose config names a generation service: the pack's prompts show their stored images, other prompts
    are generated live while the service answers; without it only the pack's prompts are offered. No torch."""
    from test_startup import _pack, no_torch_env, run_py

    pack, _st = _pack(tmp_path, demo_registry)
    config = pack / "config.toml"
    lines = [ln for ln in config.read_text().splitlines() if not ln.startswith(("weight_seed", "source"))]
    out = []
    for ln in lines:
        out.append(ln)
        if ln == "[[models]]":
            out.append(f'source = "{service_url}"')
    config.write_text("\n".join(out) + "\n")
    dead = f"http://127.0.0.1:{free_port()}"
    r = run_py(f"""
        from p2p_app.pack import install_pack
        from p2p_app.service import PRESENTER_PROMPTS, UserError
        from p2p_app.startup import create
        app = create({str(config)!r}, data_dir={str(tmp_path / 'site')!r})
        install_pack(app, app.config.pack)
        me = app.sign_in("visitor")
        packed = app.arena_examples("colonoscopy")[0]
        stored = {{i.id for i in app.storage.generated_images(packed, "colonoscopy")}}
        from_pack = app.live_generate(me, "colonoscopy", packed)
        assert {{p.image_id for p in from_pack.panels}} <= stored
        assert app.live_models("colonoscopy")
        live = app.live_generate(me, "colonoscopy", "a prompt nobody pre-generated, made live")
        assert not {{p.image_id for p in live.panels}} & stored and len(live.panels) == len(from_pack.panels)
        assert app.prompt_budget("colonoscopy", "sessile polyp").used is not None
        app.close()
        text = open({str(config)!r}).read().replace({service_url!r}, {dead!r})
        open({str(config)!r}, "w").write(text)
        app = create({str(config)!r}, data_dir={str(tmp_path / 'site')!r})
        me = app.sign_in("visitor 2")
        assert not app.live_models("colonoscopy")
        assert app.prompt_budget("colonoscopy", "sessile polyp").describe() == PRESENTER_PROMPTS
        try:
            app.live_generate(me, "colonoscopy", "another new prompt")
        except UserError as exc:
            assert str(exc) == PRESENTER_PROMPTS
        else:
            raise AssertionError("a new prompt was accepted with the service down")
        assert len(app.live_generate(me, "colonoscopy", packed).panels) == len(from_pack.panels)
        print("ok")
        """, no_torch_env(tmp_path), tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]


def test_serve_models_refuses_service_entries_and_a_taken_port(tmp_path, demo_registry):
    import socket

    from click.testing import CliRunner

    from p2p_app.cli import main

    config = remote_config(tmp_path, demo_registry, "http://gpu-host:8000")
    r = CliRunner().invoke(main, ["serve-models", "--config", config])
    assert r.exit_code == 1 and "themselves served by a generation service" in r.output, r.output
    local = tmp_path / "local.toml"
    local.write_text('studies = []\n\n[[models]]\nname = "m"\nfamily = "msdm"\nmodality = "colonoscopy"\n'
                     'source = "tiny:msdm"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = CliRunner().invoke(main, ["serve-models", "--config", str(local), "--port", str(port)])
    assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.output, r.output
