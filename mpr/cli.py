"""The ``mpr`` command line.

Database work runs on the process's DB portal (:func:`mpr.db.run_sync`), the
same way worker threads reach the database. Any MprError ends the command
with its message and exit status 1, never a traceback. Plugins add commands
through the ``register_commands(cli)`` hook.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import click

from mpr import __version__
from mpr.errors import ConfigError, MprError, NotFound, ValidationError

log = logging.getLogger("mpr")

SAMPLE_KEY = "sample.mp4"


def _settings():
    from mpr.settings import get_settings

    return get_settings()


def _setup_logging(level: str | None = None) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=level or _settings().log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def _run(coro: Any) -> Any:
    """Run a coroutine on the DB portal. Pass coroutines only: a bare queryset built in this
    thread would miss Tortoise's context, so queries are wrapped in ``async def`` helpers."""
    from mpr.db import run_sync

    return run_sync(coro)


async def ensure_migrated(*, sync: bool = True) -> None:
    """Apply pending migrations on SQLite (PostgreSQL: ask for ``mpr migrate``), then sync presets."""
    from mpr import migrations
    from mpr.presets import sync_presets

    done = set(await migrations.applied())
    missing = [f for f in migrations.pending_files() if f not in done]
    if missing:
        if _settings().database_url.startswith("sqlite"):
            await migrations.migrate()
        else:
            raise ConfigError(f"the database is not migrated ({len(missing)} pending); run: mpr migrate")
    if sync:
        await sync_presets()


def _db_ready(sync: bool = True) -> None:
    _run(ensure_migrated(sync=sync))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mpr")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """MPR, the Media Processor: transcode, trim and remux media with ffmpeg, locally or in the cloud."""
    _setup_logging("DEBUG" if verbose else None)
    if not verbose:
        logging.getLogger("tortoise").setLevel(logging.WARNING)  # "Tortoise-ORM shutdown" after every command


# --------------------------------------------------------------------------- database


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (SQLite or PostgreSQL), then sync the presets."""
    from mpr import migrations
    from mpr.presets import sync_presets

    applied = _run(migrations.migrate())
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo("database is up to date")
    result = _run(sync_presets())
    click.echo(
        f"presets: {len(result.created)} created, {len(result.updated)} updated, {len(result.kept)} kept as edited"
    )


# --------------------------------------------------------------------------- media


@cli.command()
def scan() -> None:
    """Register new media files found under MEDIA_IN and probe them."""
    from mpr import service
    from mpr.auto import check_settings

    auto = bool(_settings().auto_preset)
    _db_ready(sync=auto)  # MPR_AUTO_PRESET may name a built-in preset: have them
    _run(check_settings())  # a bad MPR_AUTO_PRESET fails here, before anything is registered
    result = _run(service.scan())
    again = f", probed again {result.updated}" if result.updated else ""
    back = f", back {result.restored}" if result.restored else ""
    queued = f", queued {result.queued}" if auto else ""
    not_for = f", auto-skipped {result.auto_skipped}" if result.auto_skipped else ""
    click.echo(
        f"found {result.found}, registered {result.registered}, skipped {result.skipped}{again}{back}, "
        f"missing {result.missing}{queued}{not_for}"
    )
    for error in result.errors:
        click.echo(f"  error: {error}", err=True)


@cli.command()
@click.option("--force", is_flag=True, help="Write the sample even if MEDIA_IN already has media.")
@click.option("--seconds", type=click.FloatRange(1, 600), default=10.0, show_default=True)
def sample(force: bool, seconds: float) -> None:
    """Generate MEDIA_IN/sample.mp4 (test pattern + tone) when MEDIA_IN has no media yet."""
    from mpr.scan import is_media
    from mpr.storage import media_in

    storage = media_in()
    if not force and any(is_media(o.key) for o in storage.list()):
        click.echo(f"{storage.root} already has media; not generating a sample (use --force)")
        return
    make_sample(storage, seconds)
    path = storage.local_path(SAMPLE_KEY)
    click.echo(f"wrote {path or storage.root.rstrip('/') + '/' + SAMPLE_KEY}")


def make_sample(storage: Any, seconds: float = 10.0) -> None:
    """Write a ``seconds`` long 640x360 H.264/AAC test clip (keyframe every 2 s) as ``sample.mp4``."""
    settings = _settings()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / SAMPLE_KEY
        argv = [
            settings.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50",
            "-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart", str(out),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise MprError(f"ffmpeg could not generate the sample: {proc.stderr.strip()[-500:]}")
        storage.put(SAMPLE_KEY, out)


# --------------------------------------------------------------------------- presets & plugins


@cli.command()
def presets() -> None:
    """List the presets (built-in, from plugins, and your own)."""
    from mpr.models import TranscodePreset

    _db_ready()

    async def fetch() -> list[TranscodePreset]:
        return await TranscodePreset.all().order_by("name")

    rows = _run(fetch())
    click.echo(f"{'NAME':<16} {'CONTAINER':<9} {'VIDEO':<12} {'AUDIO':<11} SOURCE")
    for p in rows:
        source = p.source + (" (edited)" if p.modified else "")
        click.echo(f"{p.name:<16} {p.container:<9} {p.video_codec or '-':<12} {p.audio_codec or '-':<11} {source}")


def plugin_report() -> list[dict[str, Any]]:
    """Installed plugins and what each registers (what ``mpr plugins`` prints)."""
    import importlib.metadata

    from mpr.plugins import load_plugins, plugin_manager, plugin_name

    registry = load_plugins()
    pm = plugin_manager()
    report: dict[str, dict[str, Any]] = {}
    for plugin in pm.get_plugins():
        name = plugin_name(pm, plugin)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        version = ""
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "built-in" if name.startswith("mpr.") else ""
        report[name] = {"name": name, "version": version, "hooks": hooks, "registers": {}}
    for (kind, item), owner in registry.owners.items():
        entry = report.setdefault(owner, {"name": owner, "version": "", "hooks": [], "registers": {}})
        entry["registers"].setdefault(kind, []).append(item)
    return sorted(report.values(), key=lambda e: (not e["name"].startswith("mpr."), e["name"]))


@cli.command()
def plugins() -> None:
    """List installed plugins and what each registers."""
    labels = {"executor": "executors", "storage": "storage schemes", "preset": "presets"}
    for entry in plugin_report():
        version = f" {entry['version']}" if entry["version"] else ""
        click.echo(f"{entry['name']}{version}")
        for kind, items in sorted(entry["registers"].items()):
            click.echo(f"  {labels.get(kind, kind)}: {', '.join(items)}")
        extra = [h for h in entry["hooks"] if h in ("register_event_sinks", "register_commands", "startup")]
        if extra:
            click.echo(f"  hooks: {', '.join(extra)}")


# --------------------------------------------------------------------------- jobs


@cli.command("jobs")
@click.option("--status", type=click.Choice(["pending", "processing", "completed", "failed", "cancelled"]))
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
def jobs_command(status: str | None, limit: int) -> None:
    """List recent jobs, newest first. SIZE: a completed job's output size change against its source."""
    from mpr.models import TranscodeJob
    from mpr.service import job_summary
    from mpr.stats import size_ratio

    _db_ready(sync=False)

    async def fetch() -> list[TranscodeJob]:
        qs = TranscodeJob.all().select_related("source_asset").order_by("-created_at").limit(limit)
        if status:
            qs = qs.filter(status=status)
        return await qs

    rows = _run(fetch())
    if not rows:
        click.echo("no jobs")
        return
    click.echo(f"{'ID':<36} {'STATUS':<10} {'%':>5}  {'PRESET':<12} {'SIZE':>6} OUTPUT")
    for job in rows:
        s = _run(job_summary(job))
        ratio = size_ratio(job.status, job.output_size, job.source_asset.size if job.source_asset else None)
        change = f"{round((ratio - 1) * 100):+d}%" if ratio is not None else ""
        click.echo(f"{s['id']:<36} {s['status']:<10} {s['progress']:>5}  {s['preset']:<12} {change:>6} {s['output']}")
        if s["error"]:
            click.echo(f"{'':<36} {s['error']}")


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a pending or running job."""
    from mpr import service

    _db_ready(sync=False)
    job = _run(service.cancel_job(job_id))
    click.echo(f"job {job.id} {job.status.value}")


@cli.command()
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Run a failed or cancelled job again (chunked jobs re-run only unfinished chunks)."""
    from mpr import service

    _db_ready(sync=False)
    job = _run(service.retry_job(job_id))
    click.echo(f"job {job.id} {job.status.value}")


@cli.command()
@click.argument("job_id")
@click.option("--output", is_flag=True, help="Also delete the job's output file from MEDIA_OUT.")
def delete(job_id: str, output: bool) -> None:
    """Delete a finished job (completed, failed or cancelled); a running one must be cancelled first."""
    from mpr import service

    _db_ready(sync=False)
    _run(service.delete_job(job_id, delete_output=output))
    click.echo(f"job {job_id} deleted" + (" with its output" if output else ""))


def _media_key(file: str, copy_in: bool) -> str:
    """The MEDIA_IN key for FILE: a path under MEDIA_IN, a key relative to it, or (``--copy-in``) a copy."""
    from mpr.local_storage import LocalStorage
    from mpr.storage import media_in, safe_key

    storage = media_in()
    root = storage.base if isinstance(storage, LocalStorage) else None
    path = Path(file).expanduser()
    if path.exists():
        if not path.is_file():
            raise ValidationError(f"{file} is not a file")
        real = path.resolve()
        if root is not None:
            real_root = Path(os.path.realpath(root))
            if real.is_relative_to(real_root):
                return safe_key(real.relative_to(real_root).as_posix())
        if not copy_in:
            raise ValidationError(
                f"{file} is not under MEDIA_IN ({storage.root}). MPR only processes files in MEDIA_IN: "
                "move it there, or pass --copy-in to copy it into MEDIA_IN/imports/"
            )
        key = safe_key(f"imports/{real.name}")
        if storage.exists(key):
            raise ValidationError(f"MEDIA_IN already has {key}; remove it or use that file")
        storage.put(key, real)
        click.echo(f"copied {file} to {storage.root.rstrip('/')}/{key}", err=True)
        return key
    try:
        key = safe_key(file)
    except MprError:
        raise NotFound(f"{file} does not exist") from None
    if storage.exists(key):
        return key
    raise NotFound(f"{file} does not exist (neither as a path nor in MEDIA_IN {storage.root})")


def _output_location(key: str) -> str:
    from mpr.storage import media_out

    storage = media_out()
    local = storage.local_path(key)
    if local is not None:
        return str(local)
    return storage.url(key) or f"{storage.root.rstrip('/')}/{key}"


@cli.command()
@click.argument("file")
@click.option("-p", "--preset", "preset_name", required=True, help="Preset name (see `mpr presets`).")
@click.option("--start", type=float, default=None, help="Trim: start time in seconds.")
@click.option("--end", type=float, default=None, help="Trim: end time in seconds.")
@click.option("-o", "--output-name", default=None, help="Output file name (extension set by the preset).")
@click.option("--chunked", is_flag=True, help="Encode in parallel keyframe-aligned chunks.")
@click.option("--chunk-seconds", type=float, default=None, help="Chunk length (default MPR_CHUNK_SECONDS).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Chunk worker threads.")
@click.option("--queue", is_flag=True, help="Submit to the configured executor instead of running here.")
@click.option("--copy-in", is_flag=True, help="Copy a FILE outside MEDIA_IN into MEDIA_IN/imports/ first.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def transcode(
    file: str,
    preset_name: str,
    start: float | None,
    end: float | None,
    output_name: str | None,
    chunked: bool,
    chunk_seconds: float | None,
    workers: int | None,
    queue: bool,
    copy_in: bool,
    no_progress: bool,
) -> None:
    """Transcode (or trim) FILE with a preset, in the foreground, and print the output path.

    FILE is a path under MEDIA_IN or a key relative to MEDIA_IN. With --queue
    the job goes to the configured executor (MPR_EXECUTOR) and its id is printed.
    """
    from mpr import scan as scan_mod
    from mpr import service
    from mpr.models import AssetStatus

    if queue:
        from mpr.executors import get_executor

        get_executor(_settings().executor)  # a missing executor plugin fails here, naming the package
    _db_ready()
    key = _media_key(file, copy_in)
    asset, _created = _run(scan_mod.register(key))
    if asset.status is not AssetStatus.READY:
        raise ValidationError(f"{key} cannot be processed: {asset.error or asset.status.value}")
    kwargs = {
        "trim_start": start, "trim_end": end, "output_name": output_name, "chunked": chunked,
        "chunk_seconds": chunk_seconds, "chunk_workers": workers,
    }  # fmt: skip
    if queue:
        job = _run(service.create_job(asset.id, preset_name, **kwargs))
        click.echo(str(job.id))
        return
    job = _run(service.create_job(asset.id, preset_name, executor=service.INLINE_EXECUTOR, submit=False, **kwargs))
    job = run_foreground(job.id, label=f"{asset.filename} → {job.output_path}", progress=not no_progress)
    if job.status.value == "completed":
        click.echo(_output_location(job.output_path))
        return
    if job.status.value == "cancelled":
        raise MprError(f"job {job.id} cancelled")
    raise MprError(f"job {job.id} failed: {job.error or 'unknown error'}")


def run_foreground(job_id: Any, *, label: str = "", progress: bool = True) -> Any:
    """Run a job in this process with a progress bar; Ctrl-C cancels it. Returns the final job row."""
    from tqdm import tqdm

    from mpr import jobs
    from mpr.execute import run_job
    from mpr.models import FINAL_STATUSES

    cancel = threading.Event()
    errors: list[BaseException] = []
    if progress and logging.getLogger().level > logging.DEBUG:
        logging.getLogger("mpr.events").setLevel(logging.WARNING)  # the bar shows the job's progress

    def target() -> None:
        try:
            run_job(job_id, cancel=cancel, worker="cli")
        except BaseException as exc:  # noqa: BLE001 - surfaced below; run_job itself records job failures
            errors.append(exc)

    thread = threading.Thread(target=target, name="mpr-transcode", daemon=True)
    bar = tqdm(  # tqdm itself puts ", " before the postfix: "63%, 1.90x ETA 21s"
        total=100, desc=label[:60], unit="%", disable=not progress, bar_format="{l_bar}{bar}| {n:.0f}%{postfix}"
    )
    from mpr.chunker.display import ChunkProgress

    chunk_view = ChunkProgress.attach(job_id)  # per-chunk state of a chunked job run here
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.3)
            job = _run(jobs.get_job(job_id))
            bar.n = job.progress
            postfix = []
            if job.speed:
                postfix.append(f"{job.speed:.2f}x")
            if job.eta is not None and job.status.value == "processing":
                postfix.append(f"ETA {job.eta:.0f}s")
            if chunk_view.active:
                postfix.append(chunk_view.summary())
            bar.set_postfix_str(" ".join(postfix), refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        cancel.set()
        thread.join(5)
        chunk_view.close()
        bar.close()
        job = _run(jobs.get_job(job_id))
        if job.status not in FINAL_STATUSES:
            _run(jobs.transition(job_id, "cancelled", message="interrupted"))
        raise MprError("interrupted; job cancelled") from None
    job = _run(jobs.get_job(job_id))
    if job.status.value == "completed":
        bar.n = 100
        bar.refresh()
    chunk_view.close()
    bar.close()
    if errors:
        raise errors[0]
    return job


# --------------------------------------------------------------------------- servers


def _warn_local_bus(command: str) -> None:
    """Say once, on stderr, that live progress across processes needs MPR_REDIS_URL (when it is unset)."""
    from mpr.bus import local_bus_warning

    message = local_bus_warning(_settings(), command)
    if message:
        click.echo(message, err=True)


@cli.command()
@click.option("--host", default=None, help="Bind address (default MPR_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default MPR_PORT, 8702).")
@click.option("--no-worker", is_flag=True, help="Do not embed a local worker.")
@click.option("--no-grpc", is_flag=True, help="Do not start the native gRPC server.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without MPR_API_TOKEN.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="API processes on the same port (default MPR_API_PROCESSES, 1); more than 1 needs MPR_REDIS_URL.",
)
@click.option("--fd", type=int, default=None, hidden=True)  # internal: set for the children of --processes N
@click.option("--process-index", type=int, default=0, hidden=True)
@click.option("--parent-pid", type=int, default=None, hidden=True)
def serve(
    host: str | None,
    port: int | None,
    no_worker: bool,
    no_grpc: bool,
    insecure: bool,
    processes: int | None,
    fd: int | None,
    process_index: int,
    parent_pid: int | None,
) -> int:
    """Run everything: API, admin, UIs, the embedded worker and the gRPC event stream."""
    import asyncio

    from mpr.api.processes import check_processes, die_with_parent, supervise
    from mpr.api.server import check_bind
    from mpr.api.server import serve as run_server
    from mpr.db import close_db, init_db
    from mpr.executors import get_executor
    from mpr.storage import media_in, media_out

    if fd is not None:  # one of the N processes the parent started (below): only the first runs the singletons
        if parent_pid is not None:
            die_with_parent(parent_pid)
        first = process_index == 0
        run_server(host, port, worker=first and not no_worker, grpc=first and not no_grpc, insecure=insecure,
                   fd=fd, loops=first)  # fmt: skip
        return 0
    settings = _settings()
    processes = processes or settings.api_processes
    check_processes(processes, settings)
    if processes > 1:
        check_bind(host or settings.host, settings, insecure)
    if no_worker:
        _warn_local_bus("mpr serve --no-worker")
    # fail at start-up, naming the package to install, when a selected plugin is missing
    get_executor(settings.executor)
    media_in()
    media_out()

    async def prepare() -> None:
        from mpr.auto import check_settings

        await init_db()
        try:
            # the children of --processes N would race to create presets; MPR_AUTO_PRESET may name one
            await ensure_migrated(sync=processes > 1 or bool(settings.auto_preset))
            await check_settings(settings)  # a bad MPR_AUTO_PRESET stops mpr serve here
        finally:
            await close_db()

    asyncio.run(prepare())
    if processes > 1:
        passed = (("--no-worker", no_worker), ("--no-grpc", no_grpc), ("--insecure", insecure))
        flags = [flag for flag, on in passed if on]
        return supervise(processes, host or settings.host, port or settings.port, flags)
    run_server(host, port, worker=not no_worker, grpc=not no_grpc, insecure=insecure)
    return 0


@cli.command("grpc")
@click.option("--port", type=int, default=None, help="gRPC port (default MPR_GRPC_PORT, 50051).")
@click.option("--host", default=None, help="Address to listen on (default MPR_HOST, 127.0.0.1).")
def grpc_command(port: int | None, host: str | None) -> None:
    """Run only the native gRPC event stream (ChunkerService)."""
    from mpr.grpc.server import serve as run_grpc

    _warn_local_bus("mpr grpc")
    run_grpc(port, host)


# --------------------------------------------------------------------------- entry point

_commands_loaded = False


def load_plugin_commands() -> None:
    """Let plugins add their commands (``register_commands(cli)``), once."""
    global _commands_loaded
    if _commands_loaded:
        return
    from mpr.plugins import plugin_manager

    plugin_manager().hook.register_commands(cli=cli)
    _commands_loaded = True


def main(argv: list[str] | None = None) -> int:
    """The ``mpr`` console script."""
    from mpr.db import close_portal

    code = 0
    try:
        load_plugin_commands()
        result = cli.main(args=argv, prog_name="mpr", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except MprError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = 1
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 1
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    finally:
        try:
            close_portal()
        except Exception:  # closing must never hide the real outcome
            log.debug("closing the database failed", exc_info=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["cli", "ensure_migrated", "main", "make_sample", "plugin_report", "run_foreground"]
