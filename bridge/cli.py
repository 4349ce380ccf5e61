"""``img2img-bridge``: serve, run (the reference client) and install-plugins."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from . import protocol as p
from .client import DEFAULT_URL, BridgeClient, ClientError, Disconnected, new_job_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="img2img-bridge", description="A local img2img diffusion server for GIMP and Krita.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the bridge server")
    serve.add_argument("--host", default=p.DEFAULT_HOST, help="address to bind (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=p.DEFAULT_PORT, help="port (default: %(default)s)")
    serve.add_argument(
        "--model", default=None, help="Hub repo id, diffusers folder, .safetensors/.ckpt file, or 'tiny' (default: stabilityai/sd-turbo)"
    )
    serve.add_argument(
        "--models-dir",
        action="append",
        default=[],
        type=Path,
        help="add the models in this folder to the model list: any folder, a ComfyUI or A1111 install, or ComfyUI's extra_model_paths.yaml",
    )
    serve.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the --model's recipe, e.g. steps=4, guidance=1.5, scheduler=LCMScheduler, kind=sdxl-lightning (see docs/models.md)",
    )
    serve.add_argument(
        "--allow-pickle", action="store_true", help="also load pickled .ckpt checkpoints (they can run code: only from sources you trust)"
    )
    serve.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    serve.add_argument("--token", default=None, help="require this token from every client (needed to bind beyond loopback)")
    serve.add_argument("--allow-origin", action="append", default=[], help="a browser Origin allowed to connect (default: none)")
    serve.add_argument("--max-pixels", type=int, default=p.Limits().max_pixels, help="largest image accepted, in pixels")
    serve.add_argument("--max-side", type=int, default=p.Limits().max_side, help="largest image side accepted")
    serve.add_argument("--cuda-graphs", action="store_true", help="capture the UNet in CUDA graphs for live jobs (faster live mode)")
    serve.add_argument("--live-size", type=int, default=512, help="canvas size warmed up for live jobs with --cuda-graphs")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))

    run = commands.add_parser("run", help="send an image to a running bridge and save the result")
    run.add_argument("input", type=Path, help="the image (PNG, JPEG, …)")
    run.add_argument("--prompt", required=True)
    run.add_argument("--negative", default="")
    run.add_argument("--strength", type=float, default=None, help="0-1: low stays close to the input (default: the model's recipe)")
    run.add_argument("--steps", type=int, default=None, help="the full schedule; about steps x strength run (default: the model's recipe)")
    run.add_argument("--guidance", type=float, default=None, help="0-1 turns guidance off (default: the model's recipe)")
    run.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    run.add_argument("--count", type=int, default=1, help="variations, with seeds seed, seed+1, …")
    run.add_argument("--mask", type=Path, default=None, help="grayscale mask: white regenerates, black keeps")
    run.add_argument("--out", type=Path, default=Path("out.png"))
    run.add_argument("--previews", type=Path, default=None, help="save each preview into this folder")
    run.add_argument("--url", default=DEFAULT_URL)
    run.add_argument("--token", default=None)

    install = commands.add_parser("install-plugins", help="install the GIMP and Krita plug-ins for this user")
    install.add_argument("--gimp", action="store_true", help="only GIMP (default: both)")
    install.add_argument("--krita", action="store_true", help="only Krita (default: both)")
    install.add_argument("--dest", type=Path, default=None, help="install into this folder instead (with one of --gimp/--krita)")
    install.add_argument("--enable", action="store_true", help="enable the Krita plug-in in kritarc (Krita must be closed)")
    install.add_argument("--kritarc", type=Path, default=None, help="the kritarc to edit with --enable")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "run":
        return _run(args)
    return _install(args)


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .models import DEFAULT_MODEL, ModelError, pick_device, resolve, scan_models_dir
    from .recipes import RecipeError, parse_flags
    from .server import ServerConfig, create_app, is_loopback

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not is_loopback(args.host) and not args.token:
        print(f"refusing to listen on {args.host} without --token: anyone on the network could use it", file=sys.stderr)
        return 2
    try:
        device = pick_device(args.device)
    except ModelError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    model = args.model or DEFAULT_MODEL
    try:
        recipe = parse_flags(args.recipe)
        catalog = tuple(spec for folder in args.models_dir for spec in scan_models_dir(folder, allow_pickle=args.allow_pickle))
        resolve(model, list(catalog), allow_pickle=args.allow_pickle)
    except (ModelError, RecipeError) as exc:
        print(exc.message, file=sys.stderr)
        return 2
    limits = p.Limits(max_pixels=args.max_pixels, max_side=args.max_side)
    config = ServerConfig(
        model=model,
        device=device,
        token=args.token,
        limits=limits,
        catalog=catalog,
        allowed_origins=tuple(args.allow_origin),
        cuda_graphs=args.cuda_graphs,
        live_size=args.live_size,
        recipe=recipe,
        allow_pickle=args.allow_pickle,
    )
    url = f"ws://{args.host}:{args.port}{p.WS_PATH}"
    print(f"img2img-bridge {__version__} on {url}  (health: http://{args.host}:{args.port}/health)", flush=True)
    print(f"device: {device}; model: {model} (loading; /health shows when it is ready)", flush=True)
    if model == "tiny":
        print("the tiny model is a built-in test model with random weights: its output is noise", flush=True)
    if catalog:
        print(f"{len(catalog)} more models found in {', '.join(str(d) for d in args.models_dir)}", flush=True)
    try:
        web.run_app(create_app(config), host=args.host, port=args.port, print=None, handle_signals=True)
    except OSError as exc:
        print(
            f"could not listen on {args.host}:{args.port}: {exc.strerror or exc} (is another bridge running? try --port)", file=sys.stderr
        )
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from PIL import Image as PILImage

    try:
        with PILImage.open(args.input) as source:
            rgba = source.convert("RGBA")
        mask_data = None
        if args.mask is not None:
            with PILImage.open(args.mask) as mask_image:
                gray = mask_image.convert("L")
            if gray.size != rgba.size:
                print(f"the mask is {gray.size[0]}x{gray.size[1]} but the image is {rgba.size[0]}x{rgba.size[1]}", file=sys.stderr)
                return 2
            mask_data = p.Mask(width=gray.width, height=gray.height, data=gray.tobytes())
    except OSError as exc:
        print(f"could not read an image: {exc}", file=sys.stderr)
        return 2

    if args.previews is not None:
        args.previews.mkdir(parents=True, exist_ok=True)

    def on_event(event: p.Message | Disconnected) -> None:
        if isinstance(event, p.Queued) and event.position:
            print(f"queued behind {event.position} job(s)", flush=True)
        elif isinstance(event, p.Progress):
            print(f"\rstep {event.step}/{event.steps}", end="", flush=True)
        elif isinstance(event, p.Preview) and args.previews is not None:
            path = args.previews / f"preview-{event.index:02d}-{event.step:03d}.png"
            PILImage.frombytes("RGBA", (event.image.width, event.image.height), event.image.raw_rgba()).save(path)

    try:
        with BridgeClient(args.url, token=args.token, name="img2img-bridge run") as client:
            welcome = client.welcome
            assert welcome is not None
            state = welcome.model
            if state.status in (p.ModelStatus.NO_MODEL, p.ModelStatus.ERROR):
                print(f"the bridge has no model: {state.message}", file=sys.stderr)
                return 1
            if state.test_model:
                print(f"note: {state.name} is a test model; its output is noise", flush=True)
            if state.recipe is not None:
                print(f"{state.name}: {_describe(state.recipe)}", flush=True)
            request = p.Generate(
                job_id=new_job_id(),
                image=p.Image(width=rgba.width, height=rgba.height, data=rgba.tobytes()),
                mask=mask_data,
                prompt=args.prompt,
                negative_prompt=args.negative,
                strength=args.strength,
                steps=args.steps,
                guidance=args.guidance,
                seed=args.seed,
                count=args.count,
                preview=p.PreviewSettings(every=1 if args.previews is not None else 0),
            )
            outcome = client.run(request, on_event)
    except ClientError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print()
    if outcome.error is not None:
        where = f" ({outcome.error.field})" if outcome.error.field else ""
        print(f"error{where}: {outcome.error.message}", file=sys.stderr)
        return 1
    if outcome.cancelled:
        print("the job was cancelled", file=sys.stderr)
        return 1
    for result in outcome.results:
        out = args.out if result.index == 0 else args.out.with_name(f"{args.out.stem}-{result.index}{args.out.suffix}")
        patch = PILImage.frombytes("RGBA", (result.image.width, result.image.height), result.image.raw_rgba())
        full = rgba.copy()
        full.paste(patch, (result.x, result.y))
        full.save(out)
        total = result.timings.get("total_ms", 0.0)
        print(f"wrote {out} (seed {result.seed}, {_ran(result)}, {total:.0f} ms)")
    if args.previews is not None:
        print(f"{outcome.previews} previews in {args.previews}")
    return 0


def _describe(recipe: p.Recipe) -> str:
    guidance = "off" if recipe.guidance <= 1.0 else f"{recipe.guidance:g}"
    return (
        f"{recipe.kind or recipe.family} recipe: {recipe.steps} steps, strength {recipe.strength:g}, guidance {guidance}, "
        f"{recipe.resolution} px, {recipe.scheduler}"
    )


def _ran(result: p.Result) -> str:
    """What the bridge reports it ran: the request's settings, or the recipe's where it left them unset."""
    if result.steps is None or result.strength is None or result.guidance is None:
        return "settings not reported"
    return f"steps {result.steps} x strength {result.strength:g}, guidance {result.guidance:g}"


def _install(args: argparse.Namespace) -> int:
    from .install import InstallError, install_gimp, install_krita

    both = not args.gimp and not args.krita
    if args.dest is not None and both:
        print("--dest needs --gimp or --krita (the two editors use different folders)", file=sys.stderr)
        return 2
    try:
        done = []
        if args.gimp or both:
            done.append(install_gimp(args.dest))
        if args.krita or both:
            done.append(install_krita(args.dest, enable=args.enable, kritarc=args.kritarc))
    except (InstallError, OSError) as exc:
        print(f"install failed: {exc}", file=sys.stderr)
        return 1
    for item in done:
        print(f"installed the {item.host} plug-in into {item.path}")
        if item.host == "GIMP":
            print("  restart GIMP; the command is Filters > AI > Img2Img…")
        elif item.enabled:
            print("  enabled in kritarc; restart Krita and show the docker: Settings > Dockers > Img2Img Bridge")
        else:
            print("  restart Krita, enable it in Settings > Configure Krita > Python Plugin Manager, restart again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
