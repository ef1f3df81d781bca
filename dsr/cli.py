"""The ``dsr`` command: web, worker, sweeper, database, demo data, tokens, audit, retention."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import click

from dsr.config import ConfigError, Settings
from dsr.datamap.model import DataMap


def _settings() -> Settings:
    try:
        return Settings.from_env().checked()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(log_level: str) -> None:
    """dsr: answer GDPR data-subject requests completely, on time, and provably."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("weasyprint", "fontTools"):  # their INFO is per page and per glyph table
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


@main.group()
def db() -> None:
    """The metadata database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations (SQLite or PostgreSQL)."""
    from dsr.migrate import upgrade

    # Only the database is needed here: no secret or Redis checks for a migration step.
    settings = Settings.from_env()
    if settings.production and not settings.database_url:
        raise click.ClickException("DSR_DATABASE_URL is required in production")
    upgrade(settings.sqlalchemy_url, revision)
    click.echo(f"database at {_redacted(settings.sqlalchemy_url)} is at revision {revision}")


@main.group()
def datamap() -> None:
    """The data map: check it, show the record of processing."""


@datamap.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--connect", is_flag=True, help="Also connect to every store and check what the map names exists.")
def datamap_check(path: Path | None, connect: bool) -> None:
    """Validate a data map (default: DSR_DATAMAP); exit 1 and name file, line and field of each problem."""
    from dsr.datamap import UnsetVariable
    from dsr.stores import ConnectorContext, NotSupported, connector_class

    settings, m = _datamap(path, exit_on_error=True)
    tables = sum(len(s.tables) for s in m.stores.values())
    click.echo(f"{settings.datamap_path}: valid, version {m.version}: {len(m.categories)} categories, "
               f"{len(m.stores)} stores, {tables} tables")
    # Variables are read where they are used: say which this process lacks, and which processes need them.
    for line in _unset_variables(m):
        click.echo(f"warning: {line}", err=True)
    if not connect:
        return
    errors = 0
    connectors: dict[str, object] = {}

    def connector_for(name: str):  # type: ignore[no-untyped-def]
        if name not in connectors:
            store = m.stores[name]
            connectors[name] = connector_class(store.connector)(store, context)
        return connectors[name]

    context = ConnectorContext(settings.instance_dir, connector_for)
    for name in m.stores:
        try:
            problems = connector_for(name).check()
        except NotSupported as exc:
            problems = [f"stores.{name}: {exc}"]
        except UnsetVariable as exc:
            problems = [f"stores.{name}.connection.{next(iter(exc.missing))}: {exc}"]
        for problem in problems:
            warning = problem.startswith("warning:")
            errors += 0 if warning else 1
            click.echo(_located(m, problem.removeprefix("warning:").strip(), warning), err=True)
        if not problems:
            click.echo(f"  {name}: reachable, everything the map names exists")
    for c in connectors.values():
        c.close()  # type: ignore[attr-defined]
    if errors:
        raise SystemExit(1)


def _unset_variables(m: DataMap) -> list[str]:
    """Per variable this process does not have: where the map names it and which processes need it
    (workers build every store's connector; the web tier checks processors' signed callbacks)."""
    import os

    lines = []
    for name, store in m.stores.items():
        for key, variables in store.variables.items():
            lines += [f"{m.where(f'stores.{name}.connection.{key}')}: {v} is not set here (needed by: worker)"
                      for v in variables if not os.environ.get(v)]
        secret = store.connection.get("secret_env") if store.connector == "processor" else None
        if isinstance(secret, str) and not os.environ.get(secret):
            lines.append(f"{m.where(f'stores.{name}.connection.secret_env')}: {secret} is not set here "
                         "(needed by: web, worker)")
    return lines


def _datamap(path: Path | None, *, exit_on_error: bool) -> tuple[Settings, DataMap]:
    """Settings (with ``path`` as the data map, if given) and the loaded, checked map."""
    from dsr.datamap import DataMapError
    from dsr.runtime import load_datamap

    settings = Settings.from_env()
    if path is not None:
        settings = replace(settings, datamap_path=path)
    try:
        return settings, load_datamap(settings)
    except DataMapError as exc:
        if not exit_on_error:
            raise click.ClickException(str(exc)) from None
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise SystemExit(1) from None


def _located(m: DataMap, problem: str, warning: bool) -> str:
    """``file:line: path: message`` for a connector's ``path: message``."""
    path, _, message = problem.partition(": ")
    return ("warning: " if warning else "") + f"{m.where(path)}: {message}"


@datamap.command("show")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "md"]), default="table", show_default=True)
@click.option("--locale", type=click.Choice(["de", "en"]), default="en", show_default=True)
def datamap_show(path: Path | None, fmt: str, locale: str) -> None:
    """Print the record of processing, one entry per data category."""
    from dsr.datamap.record import render

    _settings_used, m = _datamap(path, exit_on_error=False)
    click.echo(render(m, fmt, locale), nl=False)


@main.command("demo-data")
@click.option("--url", help="Store URL (default: the data map's portal_db store).")
@click.option("--subjects", default=50, show_default=True, type=click.IntRange(1))
@click.option("--rows", default=30, show_default=True, type=click.IntRange(3),
              help="Usage records per subject (API usage, calls, messages).")
@click.option("--subject-rows", type=click.IntRange(3), default=None,
              help="Usage records of the demo subject alone (one big subject, for benchmarks).")
@click.option("--seed", default=42, show_default=True)
def demo_data(url: str | None, subjects: int, rows: int, subject_rows: int | None, seed: int) -> None:
    """Build the make-believe portal database (always with max.mustermann@example.com)."""
    from dsr.db import make_engine
    from dsr.demo import blobs, portal
    from dsr.runtime import load_datamap

    settings = _settings()
    datamap = load_datamap(settings)
    if url is None:
        url = datamap.stores["portal_db"].resolved().connection["url"]
    started = time.perf_counter()
    engine = make_engine(url, create_folder=True)
    counts = portal.build(engine, portal.DemoSize(subjects, rows, subject_rows), seed=seed)
    click.echo(f"demo store {_redacted(url)}: {sum(counts.values())} rows in {len(counts)} tables "
               f"({time.perf_counter() - started:.1f} s)")
    if "media" in datamap.stores:
        root = Path(datamap.stores["media"].resolved().connection["root"])
        media = blobs.build(engine, root, seed=seed)
        listed = ", ".join(f"{k} {v}" for k, v in media.items())
        click.echo(f"demo media {root}: {sum(media.values())} files ({listed})")
    from dsr.demo import logs

    log_dir = settings.instance_dir / "logs"
    log_counts = logs.build(log_dir, subjects=logs.default_subjects(subjects, seed), seed=seed)
    click.echo(f"demo logs {log_dir}: {sum(log_counts.values())} lines in {len(log_counts)} files")
    if "analytics" in datamap.stores:
        from dsr.demo import analytics

        folder = _folder(settings, datamap.stores["analytics"].resolved().connection["path"])
        events = analytics.build(folder, analytics.consent_windows(engine), seed=seed)
        click.echo(f"demo analytics {folder}: {sum(events.values())} events in {len(events)} daily files")


def _folder(settings: Settings, path: str) -> Path:
    """A store's folder as its connector reads it: relative paths are inside the instance folder."""
    folder = Path(path).expanduser()
    return folder if folder.is_absolute() else settings.instance_dir / folder


@main.command("create-api-token")
@click.option("--role", type=click.Choice(["dpo", "agent"]), default="dpo", show_default=True)
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
def create_api_token(role: str, name: str) -> None:
    """Print a new API token (shown once; only its hash is stored)."""
    from dsr.domain.accounts import create_api_token as create
    from dsr.models import Role

    rt = _runtime()
    with rt.sessions.begin() as session:
        _row, secret = create(session, name=name, role=Role(role))
    click.echo(secret)


@main.command("create-user")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["dpo", "agent"]), default="agent", show_default=True)
@click.password_option()
def create_user(email: str, name: str, role: str, password: str) -> None:
    """Create a DPO-office user who can sign in to the console."""
    from dsr.domain.accounts import create_user as create
    from dsr.domain.errors import DomainError
    from dsr.models import Role

    rt = _runtime()
    try:
        with rt.sessions.begin() as session:
            create(session, email=email, name=name, role=Role(role), password=password)
    except DomainError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {email} created with role {role}")


@main.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 and name the first bad event if it was tampered with."""
    from dsr.domain.audit import verify_chain

    rt = _runtime()
    with rt.sessions() as session:
        report = verify_chain(session)
    if report.ok:
        click.echo(f"audit chain intact: {report.events} events")
        return
    click.echo(f"audit chain BROKEN at event {report.first_broken_seq}: {report.problem} "
               f"({report.events} events read)", err=True)
    sys.exit(1)


@main.group()
def erasures() -> None:
    """Carried-out erasures (Art. 17)."""


@erasures.command("replay")
@click.option("--since", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Apply every erasure carried out on or after this day (UTC) again: the day the restored "
                   "backup was taken, or earlier.")
@click.option("--dry-run", is_flag=True, help="Count what would be erased again; change nothing.")
def erasures_replay(since: datetime, dry_run: bool) -> None:
    """After restoring a backup: erase again every subject erased since --since (ER-06). Run it before
    the restored stores are used. Exit 1 when a store could not be replayed."""
    from datetime import UTC

    from dsr.domain.suppression import replay

    rt = _runtime()
    report = replay(rt.sessions, rt.datamap, rt.connector, rt.resolve, rt.suppression_key,
                    since=since.replace(tzinfo=UTC), apply=not dry_run)
    verb = "would erase" if dry_run else "erased"
    click.echo(f"{report.entries} erasure(s) since {since:%Y-%m-%d}; {report.found} subject(s) found again")
    for store, touched in sorted(report.touched.items()):
        click.echo(f"  {store}: {verb} {touched} record(s) again")
    for store, why in sorted(report.failed.items()):
        click.echo(f"  {store}: NOT replayed: {why}", err=True)
    rt.close()
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--burst", is_flag=True, help="Work until the queue is empty, then stop.")
@click.option("--simple", is_flag=True, help="Run jobs in this process instead of a forked child.")
def worker(burst: bool, simple: bool) -> None:
    """Run a worker on Redis (DSR_REDIS_URL). Start as many as you like, on any machine."""
    from dsr import runtime as runtimes
    from dsr.queue import DsrSimpleWorker, DsrWorker, RqDispatcher, connect, make_queue

    settings = _settings()
    if not settings.redis_url:
        raise click.ClickException("DSR_REDIS_URL is not set: without Redis the embedded worker runs inside "
                                   "`dsr web`; separate workers need a shared Redis")
    connection = connect(settings)
    queue = make_queue(settings, connection)
    rt = runtimes.build(settings, RqDispatcher(queue, settings.retry_intervals))
    # RQ's maintenance pass (every 10 minutes by default) is when a worker takes over the scheduler lock of
    # one that died and puts abandoned jobs right: every DSR_WORKER_MAINTENANCE_SECONDS instead.
    maintenance = settings.worker_maintenance_seconds
    if simple:
        DsrSimpleWorker([queue], connection=connection, runtime=rt, maintenance_interval=maintenance).work(
            burst=burst, with_scheduler=True)
        return
    forking = DsrWorker([queue], connection=connection, runtime=rt, maintenance_interval=maintenance)
    forking.preload()  # once, before the first fork: each work horse starts with it loaded
    forking.work(burst=burst, with_scheduler=True)


@main.command()
@click.option("--interval", type=float, default=None, help="Seconds between sweeps [default: DSR_SWEEP_SECONDS, 15].")
@click.option("--once", is_flag=True, help="Sweep once and exit (for cron or a systemd timer).")
def sweeper(interval: float | None, once: bool) -> None:
    """Send jobs that were committed but never reached the queue (it was down), hand work whose job died or
    was lost to a new job (the watchdog), delete expired exports, and once a day erase retained records whose
    deletion date has come (the retention register)."""
    from dsr import runtime as runtimes
    from dsr.queue import RqDispatcher, Sweeper, connect, make_queue

    settings = _settings()
    if not settings.redis_url:
        raise click.ClickException("DSR_REDIS_URL is not set: the embedded default sweeps inside `dsr web`")
    queue = make_queue(settings, connect(settings))
    sweep = Sweeper(runtimes.build(settings, RqDispatcher(queue, settings.retry_intervals)),
                    interval if interval is not None else settings.sweep_seconds)
    if once:
        sent, recovered = sweep.sweep_once(), sweep.recover_once()
        click.echo(f"{sent} job(s) sent, recovered: {recovered}, {sweep.purge_once()} expired export(s) purged, "
                   f"{sweep.retention_once().deleted} retained record(s) erased")
        return
    sweep.run()


@main.group()
def retention() -> None:
    """The retention register (ER-05): records erasures kept, erased when their time has come."""


@retention.command("run")
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Erase what is due by this day (YYYY-MM-DD) [default: today in DSR_TIMEZONE].")
@click.option("--dry-run", is_flag=True, help="Count what would be erased; change nothing.")
def retention_run(today: datetime | None, dry_run: bool) -> None:
    """Erase the kept records whose deletion date has come (the sweeper does this once a day); exit 1
    when a store failed (its entries stay kept for the next run)."""
    from zoneinfo import ZoneInfo

    from dsr.domain.retention_register import run_due

    rt = _runtime()
    try:
        day = today.date() if today is not None else datetime.now(ZoneInfo(rt.settings.timezone)).date()
        report = run_due(rt.sessions, rt.datamap, rt.connector, day, dry_run=dry_run)
    finally:
        rt.close()
    verb = "would erase" if dry_run else "erased"
    for done in report.erased:
        follows = " (with the records they belong to)" if done["follows"] else ""
        click.echo(f"{done['reference']} {done['store']}.{done['table']}: {verb} {done['deleted']} record(s), "
                   f"{done['entries']} due entr{'y' if done['entries'] == 1 else 'ies'}{follows}")
    for skipped in report.skipped:
        click.echo(f"{skipped['reference']} {skipped['store']}.{skipped['table']}: {skipped['records']} record(s) "
                   f"kept: {skipped['reason']}", err=True)
    for failed in report.failed:
        click.echo(f"{failed['reference']} store {failed['store']} failed, its entries stay kept: {failed['error']}",
                   err=True)
    click.echo(f"retention run for {day.isoformat()}: {report.deleted} record(s) {verb} in {len(report.erased)} "
               f"table(s), {len(report.failed)} store(s) failed")
    if report.failed:
        raise SystemExit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, envvar="PORT")
def web(host: str, port: int) -> None:
    """Serve the app. Production (DSR_ENV=production) runs gunicorn; otherwise one process with
    an embedded worker."""
    settings = _settings()
    if settings.production:
        from dsr.gunicorn import serve

        serve(f"{host}:{port}")
        return
    from dsr.web.app import create_app

    settings = replace(settings, server_url=_served_at(host, port))
    create_app(settings).run(host=host, port=port, threaded=True, use_reloader=False)


def _served_at(host: str, port: int) -> str:
    """The address a development server can be reached at (a wildcard bind is reachable on loopback)."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 (compared, not bound)
    return f"http://[{reachable}]:{port}" if ":" in reachable else f"http://{reachable}:{port}"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, envvar="PORT")
@click.option("--subjects", default=50, show_default=True)
@click.option("--rows", default=30, show_default=True)
def demo(host: str, port: int, subjects: int, rows: int) -> None:
    """Migrate, load the demo data, create a demo login and token, and serve everything."""
    import os

    from dsr.db import make_engine
    from dsr.demo import blobs, logs, portal, processor_sim
    from dsr.domain.accounts import create_api_token as create_token
    from dsr.domain.accounts import create_user as create
    from dsr.migrate import upgrade
    from dsr.models import Role, User
    from dsr.runtime import load_datamap
    from dsr.web.app import create_app

    settings = _settings()
    # Vonage's side is played by the processor simulator on loopback (labelled as such), on a free port
    # that DSR_VONAGE_URL then names for the data map.
    try:
        simulator = processor_sim.serve_for_demo(os.environ)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"the processor simulator cannot start: {exc}") from None
    settings = replace(settings, base_url=settings.base_url or _served_at(host, port))
    upgrade(settings.sqlalchemy_url)
    datamap = load_datamap(settings)
    engine = make_engine(datamap.stores["portal_db"].resolved().connection["url"], create_folder=True)
    portal.build(engine, portal.DemoSize(subjects, rows))
    if "media" in datamap.stores:
        blobs.build(engine, Path(datamap.stores["media"].resolved().connection["root"]))
    logs.build(settings.instance_dir / "logs", subjects=logs.default_subjects(subjects))
    if "analytics" in datamap.stores:
        from dsr.demo import analytics

        folder = _folder(settings, datamap.stores["analytics"].resolved().connection["path"])
        analytics.build(folder, analytics.consent_windows(engine))
    app = create_app(settings)
    rt = app.extensions["dsr"].runtime
    email, password = "dpo@example.com", "demo-password-2026"
    with rt.sessions.begin() as session:
        from sqlalchemy import select

        if session.execute(select(User).where(User.email == email)).scalar_one_or_none() is None:
            create(session, email=email, name="Demo DPO", role=Role.DPO, password=password, actor="demo")
        _row, token = create_token(session, name="demo", role=Role.DPO, actor="demo")
    base = f"http://{host}:{port}"
    click.echo(f"""
dsr demo (embedded: SQLite in {settings.instance_dir}, in-process queue and worker)
  API:            {base}/api/v1/openapi.json   (submit: POST {base}/api/v1/requests)
  Portal:         {base}/  (the subject's form follows; use the API for now)
  DPO console:    {base}/console  (follows; use the API for now)
  DPO login:      {email} / {password}
  DPO API token:  {token}
  Demo subject:   {portal.DEMO_SUBJECT}
  Processor:      {simulator.url}  ({processor_sim.LABEL}; plays Vonage B.V.)
Try it:  scripts/demo-access-request.sh {base} {token}
""")
    try:
        app.run(host=host, port=port, threaded=True, use_reloader=False)
    finally:
        simulator.shutdown()


def _runtime():  # type: ignore[no-untyped-def]
    from dsr import runtime as runtimes

    return runtimes.build(_settings())


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    main()


