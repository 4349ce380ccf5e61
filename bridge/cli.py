"""``img2img-bridge``: serve, run (the reference client), install-plugins and package-plugins."""

from __future__ import annotations

import argparse
import os
import queue
import sys
from pathlib import Path

from . import __version__
from .bounds import ServerBounds
from .editor import protocol as p
from .editor.client import DEFAULT_URL, BridgeClient, ClientError, Disconnected, new_job_id
from .logs import LEVELS, LOG_FILE_BACKUPS, LOG_FILE_BYTES

#: where ``serve`` and ``run`` read the token when neither --token nor --token-file is given
TOKEN_ENV = "IMG2IMG_BRIDGE_TOKEN"


_SERVE_EXAMPLES = """examples:
  img2img-bridge serve                              the default model on ws://127.0.0.1:7421/ws
  img2img-bridge serve --model tiny                 the built-in test model (no download; output is noise)
  img2img-bridge serve --models-dir ~/ComfyUI/models/checkpoints --log-file bridge.log
the status page is http://127.0.0.1:7421/ (this machine only, or with the token)"""

_RUN_EXAMPLES = """examples:
  img2img-bridge run photo.png --prompt "a stormy sky" --out sky.png
  img2img-bridge run photo.png --prompt "a stormy sky" --mask mask.png --strength 0.7 --count 4
  img2img-bridge run photo.png --prompt "oil painting" --model other.safetensors --seed 42"""


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before or after a job: nothing to cancel, nothing to explain
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``serve``, ``run`` and ``install-plugins``, every option with its help and default."""
    parser = argparse.ArgumentParser(prog="img2img-bridge", description="A local img2img diffusion server for GIMP and Krita.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="start the bridge server", epilog=_SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        help="offer the models in this folder to clients (repeatable): any folder, a ComfyUI or A1111 install, "
        "or ComfyUI's extra_model_paths.yaml",
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
    serve.add_argument(
        "--no-shared-memory",
        dest="shared_memory",
        action="store_false",
        help="never hand pixels to clients on this machine through shared memory (the websocket carries them)",
    )
    serve.add_argument("--shm-folder", help="the private folder for shared-memory segments (default: /dev/shm/img2img-bridge-UID)")
    serve.add_argument(
        "--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="where the model runs (default: %(default)s: a GPU if any)"
    )
    _token_arguments(serve, "require this token from every client (needed to bind beyond loopback)")
    serve.add_argument("--allow-origin", action="append", default=[], help="a browser Origin allowed to connect (default: none)")
    serve.add_argument(
        "--allow-host", action="append", default=[], help="a Host name besides loopback ones that clients may use (default: none)"
    )
    serve.add_argument("--allow-hub", action="store_true", help="let clients load any Hugging Face Hub id, not only the listed models")
    serve.add_argument(
        "--max-pixels", type=int, default=p.Limits().max_pixels, help="largest image accepted, in pixels (default: %(default)s)"
    )
    serve.add_argument("--max-side", type=int, default=p.Limits().max_side, help="largest image side accepted (default: %(default)s)")
    serve.add_argument("--cuda-graphs", action="store_true", help="capture the UNet in CUDA graphs for live jobs (faster live mode)")
    serve.add_argument(
        "--live-size", type=int, default=512, help="canvas size warmed up for live jobs with --cuda-graphs (default: %(default)s)"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=LEVELS,
        help="debug also shows live frames and the libraries' own logs (default: %(default)s)",
    )
    serve.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help=f"also log to this file, rotated at {LOG_FILE_BYTES >> 20} MiB ({LOG_FILE_BACKUPS} old files kept)",
    )
    bounds = ServerBounds()
    serve.add_argument("--max-connections", type=int, default=bounds.max_connections, help="open websockets (default: %(default)s)")
    serve.add_argument(
        "--handshake-timeout",
        type=float,
        default=bounds.handshake_timeout,
        help="seconds for a connection's HTTP request (default: %(default)s)",
    )
    serve.add_argument(
        "--hello-timeout", type=float, default=bounds.hello_timeout, help="seconds for a client's hello (default: %(default)s)"
    )
    serve.add_argument(
        "--frame-timeout",
        type=float,
        default=bounds.frame_timeout,
        help="seconds the frames carrying a message's pixels may take to follow it (default: %(default)s)",
    )
    serve.add_argument(
        "--ping-interval", type=float, default=bounds.ping_interval, help="seconds between pings to each client (default: %(default)s)"
    )
    serve.add_argument(
        "--client-queue-mb",
        type=int,
        default=bounds.client_queued_bytes >> 20,
        help="MiB of waiting inputs per client (default: %(default)s)",
    )
    serve.add_argument(
        "--queue-mb", type=int, default=bounds.total_queued_bytes >> 20, help="MiB of waiting inputs in all (default: %(default)s)"
    )
    serve.add_argument(
        "--outbox-mb",
        type=int,
        default=None,
        help="MiB of unread events per client before it is disconnected (default: 256, or one largest result)",
    )

    run = commands.add_parser(
        "run",
        help="send an image to a running bridge and save the result",
        epilog=_RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", type=Path, help="the image (PNG, JPEG, WebP, TIFF…; 16-bit and grayscale too)")
    run.add_argument("--prompt", required=True, help="what the result should show")
    run.add_argument("--negative", default="", help="what it should not show (default: nothing)")
    run.add_argument("--strength", type=float, default=None, help="0-1: low stays close to the input (default: the model's recipe)")
    run.add_argument(
        "--steps", type=int, default=None, help="the full schedule; img2img runs about steps × strength (default: the model's recipe)"
    )
    run.add_argument("--guidance", type=float, default=None, help="0-1 turns guidance off (default: the model's recipe)")
    run.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    run.add_argument("--count", type=int, default=1, help="variations, with seeds seed, seed+1, … (default: %(default)s)")
    run.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="grayscale mask: white regenerates, black keeps; or an image with transparency: opaque regenerates",
    )
    run.add_argument("--out", type=Path, default=Path("out.png"), help="result file; more variations get -1, -2… (default: %(default)s)")
    run.add_argument("--previews", type=Path, default=None, help="save each preview into this folder")
    run.add_argument("--model", default=None, help="load this model on the bridge first (default: the one it serves)")
    run.add_argument("--url", default=DEFAULT_URL, help="the bridge (default: %(default)s)")
    _token_arguments(run, "the bridge's token")
    run.add_argument(
        "--keepalive",
        type=float,
        default=10.0,
        help="seconds between pings; a bridge silent for twice as long is an error (default: %(default)s)",
    )

    install = commands.add_parser("install-plugins", help="install the GIMP and Krita plug-ins for this user")
    install.add_argument("--gimp", action="store_true", help="only GIMP (default: both)")
    install.add_argument("--krita", action="store_true", help="only Krita (default: both)")
    install.add_argument("--dest", type=Path, default=None, help="install into this folder instead (with one of --gimp/--krita)")
    install.add_argument("--enable", action="store_true", help="enable the Krita plug-in in kritarc (Krita must be closed)")
    install.add_argument(
        "--kritarc", type=Path, default=None, help="the kritarc to edit with --enable (default: the one of the Krita installed into)"
    )

    package = commands.add_parser(
        "package-plugins", help="write the plug-ins as zips: Krita's for Tools > Scripts > Import Python Plugin from File, GIMP's"
    )
    package.add_argument("--dest", type=Path, default=Path("."), help="the folder to write them into (default: this one)")

    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("serve", "run"):
        try:
            args.token = read_token(args.token, args.token_file)
        except OSError as exc:
            print(f"could not read the token file: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if args.command == "serve":
        return _serve(args)
    if args.command == "run":
        return _run(args)
    if args.command == "package-plugins":
        return _package(args)
    return _install(args)


def _token_arguments(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--token", default=None, help=f"{what}; visible in the process list: prefer --token-file or ${TOKEN_ENV}")
    command.add_argument("--token-file", type=Path, default=None, help="read the token from this file (its first line)")


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from --token, else --token-file, else the environment; None when none is set."""
    if token:
        return token
    if token_file is not None:
        lines = token_file.read_text(encoding="utf-8").splitlines()
        return (lines[0].strip() if lines else "") or None
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from . import logs
    from .listening import bind
    from .models import DEFAULT_MODEL, ModelError, ModelSpec, pick_device, resolve, scan_models_dir
    from .recipes import RecipeError, parse_flags
    from .server import ServerConfig, create_app, is_loopback

    _raise_file_limit()
    if not is_loopback(args.host) and not args.token:
        print(f"refusing to listen on {args.host} without --token: anyone on the network could use it", file=sys.stderr)
        return 2
    for folder in args.models_dir:
        if not folder.is_dir():
            print(f"--models-dir {folder}: no such folder", file=sys.stderr)
            return 2
    if args.log_file is not None and not args.log_file.parent.is_dir():
        print(f"--log-file {args.log_file}: the folder {args.log_file.parent} does not exist", file=sys.stderr)
        return 2
    try:
        # bound before anything is loaded: a taken port is one line, not a model load and then a traceback
        sockets = bind(args.host, args.port)
    except OSError as exc:
        print(
            f"could not listen on {args.host}:{args.port}: {exc.strerror or exc} (is another bridge running? try --port)", file=sys.stderr
        )
        return 1
    logs.configure(args.log_level, args.log_file)
    try:
        device = pick_device(args.device)
    except ModelError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    model = args.model or DEFAULT_MODEL
    try:
        recipe = parse_flags(args.recipe)
        found: list[ModelSpec] = []
        for folder in args.models_dir:
            specs = scan_models_dir(folder, allow_pickle=args.allow_pickle)
            if not specs:
                print(f"note: --models-dir {folder} holds no model this bridge can load", file=sys.stderr)
            found.extend(specs)
        catalog = tuple(found)
        resolve(model, list(catalog), allow_pickle=args.allow_pickle)
    except (ModelError, RecipeError) as exc:
        print(exc.message, file=sys.stderr)
        return 2
    limits = p.Limits(max_pixels=args.max_pixels, max_side=args.max_side)
    outbox = args.outbox_mb << 20 if args.outbox_mb is not None else max(ServerBounds().outbox_bytes, limits.max_message_bytes)
    bounds = ServerBounds(
        max_connections=args.max_connections,
        handshake_timeout=args.handshake_timeout,
        hello_timeout=args.hello_timeout,
        frame_timeout=args.frame_timeout,
        ping_interval=args.ping_interval,
        client_queued_bytes=args.client_queue_mb << 20,
        total_queued_bytes=args.queue_mb << 20,
        outbox_bytes=outbox,
    )
    try:
        bounds.check(limits.max_message_bytes)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    # the address the bridge listens on is a name its clients use (a LAN address with --token)
    hosts = (*args.allow_host, *(() if is_loopback(args.host) or args.host in ("0.0.0.0", "::") else (args.host,)))
    config = ServerConfig(
        model=model,
        device=device,
        token=args.token,
        limits=limits,
        catalog=catalog,
        allowed_origins=tuple(args.allow_origin),
        allowed_hosts=tuple(h.lower().rstrip(".") for h in hosts),
        allow_hub=args.allow_hub,
        bounds=bounds,
        cuda_graphs=args.cuda_graphs,
        live_size=args.live_size,
        recipe=recipe,
        allow_pickle=args.allow_pickle,
        shared_memory=args.shared_memory,
        shm_folder=args.shm_folder,
    )
    web_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"ws://{web_host}:{args.port}{p.WS_PATH}"
    print(f"img2img-bridge {__version__} on {url}  (status page: http://{web_host}:{args.port}/)", flush=True)
    print(f"device: {device}; model: {model} (loading; /health shows when it is ready)", flush=True)
    if model == "tiny":
        print("the tiny model is a built-in test model with random weights: its output is noise", flush=True)
    if catalog:
        print(f"{len(catalog)} more models found in {', '.join(str(d) for d in args.models_dir)}", flush=True)
    web.run_app(create_app(config), sock=sockets, print=None, handle_signals=True)
    return 0


def _raise_file_limit() -> None:
    """Take the hard limit on open files as the soft one: the connection cap, not the OS, turns clients away."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # Windows has no resource module; some systems refuse
        pass


def _run(args: argparse.Namespace) -> int:
    from PIL import Image as PILImage

    from .image_files import ImageFileError, check_limits, output_format, read_image, read_mask, save_image

    try:
        output_format(args.out)  # before the job: a result that cannot be written would be lost
        rgba = read_image(args.input)
        mask_data = read_mask(args.mask, rgba.size) if args.mask is not None else None
    except ImageFileError as exc:
        print(exc.message, file=sys.stderr)
        return 2

    if args.previews is not None:
        try:
            args.previews.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"--previews {args.previews}: {exc.strerror or exc}", file=sys.stderr)
            return 2

    def on_event(event: p.Message | Disconnected) -> None:
        if isinstance(event, p.Queued) and event.position:
            print(f"queued behind {event.position} job(s)", flush=True)
        elif isinstance(event, p.Progress):
            image = f"image {event.index + 1} of {args.count}: " if args.count > 1 else ""
            print(f"\r{image}step {event.step}/{event.steps}", end="", flush=True)
        elif isinstance(event, p.Preview) and args.previews is not None:
            path = args.previews / f"preview-{event.index:02d}-{event.step:03d}.png"
            PILImage.frombytes("RGBA", (event.image.width, event.image.height), event.image.raw_rgba()).save(path)

    job_id = new_job_id()
    models = _ModelWatch()
    try:
        with BridgeClient(args.url, token=args.token, name="img2img-bridge run", keepalive=args.keepalive, on_event=models) as client:
            welcome = client.welcome
            assert welcome is not None
            refusal = check_limits(rgba.width, rgba.height, welcome.limits)
            if refusal is not None:
                print(refusal, file=sys.stderr)
                return 2
            state = welcome.model if args.model is None else _load_model(client, welcome, args.model, models)
            if state is None:
                return 1
            if state.status in (p.ModelStatus.NO_MODEL, p.ModelStatus.ERROR):
                print(f"the bridge has no model: {state.message}", file=sys.stderr)
                return 1
            if state.test_model:
                print(f"note: {state.name} is a test model; its output is noise", flush=True)
            if state.recipe is not None:
                print(f"{state.name}: {_describe(state.recipe)}", flush=True)
            request = p.Generate(
                job_id=job_id,
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
            try:
                outcome = client.run(request, on_event)
            except KeyboardInterrupt:
                _cancel(client, job_id)
                print("\ncancelled", file=sys.stderr)
                return 130
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
        try:
            save_image(full, out)
        except ImageFileError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        total = result.timings.get("total_ms", 0.0)
        print(f"wrote {out} (seed {result.seed}, {_ran(result)}, {total:.0f} ms)")
    if args.previews is not None:
        print(f"{outcome.previews} previews in {args.previews}")
    return 0


def _cancel(client: BridgeClient, job_id: str) -> None:
    """Ctrl-C: tell the bridge to stop the job (closing the connection would too, a moment later)."""
    try:
        client.cancel(job_id)
    except ClientError:
        pass


class _ModelWatch:
    """The model states the bridge announces, in order (the client's reader thread puts, the command takes)."""

    def __init__(self) -> None:
        self.states: queue.Queue[p.ModelState | None] = queue.Queue()

    def __call__(self, event: p.Message | Disconnected) -> None:
        if isinstance(event, p.ModelStatusEvent):
            self.states.put(event.model)
        elif isinstance(event, Disconnected):
            self.states.put(None)


def _load_model(client: BridgeClient, welcome: p.Welcome, name: str, watch: _ModelWatch) -> p.ModelState | None:
    """Have the bridge serve ``name``: its state once loaded, or None after saying why not."""
    if welcome.model.name == name and welcome.model.status is p.ModelStatus.READY:
        return welcome.model
    offered = [m.name for m in welcome.models]
    if name not in offered:
        print(f"the bridge does not offer {name!r}; it offers: {', '.join(offered) or 'nothing'}", file=sys.stderr)
        return None
    client.load_model(name)
    print(f"loading {name}…", flush=True)
    while True:
        state = watch.states.get()
        if state is None:
            print(f"the bridge closed the connection while loading {name}", file=sys.stderr)
            return None
        if state.name != name:
            if state.status is p.ModelStatus.READY and f"could not load {name}" in state.message:
                print(f"the bridge could not load {name}: {state.message}", file=sys.stderr)  # it still serves the old one
                return None
            continue
        if state.status is p.ModelStatus.READY:
            return state
        if state.status in (p.ModelStatus.ERROR, p.ModelStatus.NO_MODEL):
            print(f"the bridge could not load {name}: {state.message}", file=sys.stderr)
            return None


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
            print(f"  enabled in {item.kritarc}; restart Krita and show the docker: Settings > Dockers > Img2Img Bridge")
        else:
            print("  restart Krita, enable it in Settings > Configure Krita > Python Plugin Manager, restart again")
    return 0


def _package(args: argparse.Namespace) -> int:
    from .install import InstallError, package_plugins

    try:
        written = package_plugins(args.dest)
    except (InstallError, OSError) as exc:
        print(f"packaging failed: {exc}", file=sys.stderr)
        return 1
    krita, gimp = written
    print(f"wrote {krita}: in Krita, Tools > Scripts > Import Python Plugin from File…, then restart Krita")
    print(f"wrote {gimp}: unpack it into GIMP's plug-ins folder (Edit > Preferences > Folders > Plug-ins), then restart GIMP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
