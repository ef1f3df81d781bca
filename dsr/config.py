"""Settings read from the environment once, at start-up, into an immutable object.

Nothing here is read at import time: ``Settings.from_env()`` is called by the app factory, the
worker command and the CLI, so tests build settings explicitly instead of patching globals.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_DATAMAP = PACKAGE_DIR / "datamap" / "default.yaml"


def _intervals(raw: str | None) -> tuple[int, ...]:
    if raw is None:
        return (10, 60, 300)
    if raw.lower() == "none":
        return ()
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"DSR_JOB_RETRY_INTERVALS must be seconds separated by commas, got {raw!r}") from None
    if any(v < 0 for v in values):
        raise ConfigError("DSR_JOB_RETRY_INTERVALS must not be negative")
    return values


def _base_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError("DSR_BASE_URL must be the absolute http(s) address people and processors reach dsr "
                          f"at, without query or fragment, such as https://dsr.example.com, got {raw!r}")
    return raw.rstrip("/")


def _smtp_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    from dsr.mail import SmtpServer  # the mailer parses it the same way when it sends

    try:
        SmtpServer.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"DSR_SMTP_URL {exc}") from None
    return raw


def _mail_from(raw: str | None) -> str | None:
    if raw is None:
        return None
    from dsr.mail import check_address

    try:
        return check_address(raw)
    except ValueError as exc:
        raise ConfigError(f"DSR_MAIL_FROM {exc}") from None


def project_folder(name: str) -> Path:
    """A top-level folder of the project (``migrations``, ``templates``): next to the package in a
    source checkout or editable install, else in the working directory (the container's /app)."""
    for candidate in (PACKAGE_DIR.parent / name, Path.cwd() / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder was found neither next to the dsr package nor in {Path.cwd()}")


class ConfigError(RuntimeError):
    """The configuration cannot run: the message names the variable and what to do."""


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    instance_dir: Path = field(default_factory=lambda: Path("instance").resolve())
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None
    datamap_path: Path = DEFAULT_DATAMAP
    storage_dir: Path | None = None
    queue_name: str = "dsr"
    timezone: str = "Europe/Berlin"
    holiday_regions: tuple[str, ...] = ("DE", "DE-NW")
    target_buffer_days: int = 5
    artifact_ttl_days: int = 30
    download_link_ttl_seconds: int = 7 * 24 * 3600
    download_limit: int = 5
    password_protect_packages: bool = False
    report_preview_rows: int = 10
    embedded_worker: bool = True
    retry_intervals: tuple[int, ...] = (10, 60, 300)
    processor_deadline_days: int = 10
    outbox_grace_seconds: int = 30
    base_url: str | None = None  # DSR_BASE_URL; None: processors get no callback address
    # The address `dsr web` / `dsr demo` serve on in development, for links when DSR_BASE_URL is not set.
    server_url: str | None = None
    task_lease_seconds: int = 30
    worker_maintenance_seconds: int = 30
    sweep_seconds: float = 15.0
    # Erasure (Art. 17): the DPO approves each preview unless this is on; no store may lose or change more
    # records for one subject than the bound without the DPO's say (0: no bound); backups are overwritten
    # within backup_days (the confirmation letter says so; None: it says nothing about backups).
    erasure_auto_approve: bool = False
    erasure_bound: int = 100_000
    backup_days: int | None = None
    # Art. 19 notices by e-mail go through this SMTP server (``dsr.mail``); unset: each mail is written as
    # an .eml file to instance/mail (development and the demo only). Its password never appears in a repr.
    smtp_url: str | None = field(default=None, repr=False)
    mail_from: str | None = None  # the notices' sender; unset: the data map's DPO address

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def public_url(self) -> str:
        """The root of every absolute link dsr hands out (download links): never a request's Host
        header, which whoever sends the request chooses. Production requires DSR_BASE_URL."""
        return self.base_url or self.server_url or "http://localhost"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.instance_dir / 'dsr.sqlite'}"

    @property
    def artifact_dir(self) -> Path:
        return self.storage_dir or self.instance_dir / "artifacts"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def integer(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None

        def boolean(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")

        mode = get("DSR_ENV") or "development"
        if mode not in ("development", "production"):
            raise ConfigError(f"DSR_ENV must be 'development' or 'production', got {mode!r}")
        settings = cls(
            env=mode,
            instance_dir=Path(get("DSR_INSTANCE_DIR") or "instance").resolve(),
            database_url=get("DSR_DATABASE_URL"),
            redis_url=get("DSR_REDIS_URL"),
            secret_key=get("DSR_SECRET_KEY"),
            datamap_path=Path(get("DSR_DATAMAP") or DEFAULT_DATAMAP),
            storage_dir=Path(s) if (s := get("DSR_STORAGE_DIR")) else None,
            queue_name=get("DSR_QUEUE") or "dsr",
            timezone=get("DSR_TIMEZONE") or "Europe/Berlin",
            holiday_regions=tuple(
                r.strip() for r in (get("DSR_HOLIDAY_REGIONS") or "DE,DE-NW").split(",") if r.strip()
            ),
            target_buffer_days=integer("DSR_TARGET_BUFFER_DAYS", 5),
            artifact_ttl_days=integer("DSR_ARTIFACT_TTL_DAYS", 30),
            download_link_ttl_seconds=integer("DSR_DOWNLOAD_LINK_TTL", 7 * 24 * 3600),
            download_limit=integer("DSR_DOWNLOAD_LIMIT", 5),
            password_protect_packages=boolean("DSR_PASSWORD_PROTECT_PACKAGES", False),
            report_preview_rows=integer("DSR_REPORT_PREVIEW_ROWS", 10),
            embedded_worker=(get("DSR_EMBEDDED_WORKER") or "1").lower() not in ("0", "false", "no", "off"),
            retry_intervals=_intervals(get("DSR_JOB_RETRY_INTERVALS")),
            processor_deadline_days=integer("DSR_PROCESSOR_DEADLINE_DAYS", 10),
            base_url=_base_url(get("DSR_BASE_URL")),
            task_lease_seconds=integer("DSR_TASK_LEASE_SECONDS", 30),
            worker_maintenance_seconds=integer("DSR_WORKER_MAINTENANCE_SECONDS", 30),
            sweep_seconds=integer("DSR_SWEEP_SECONDS", 15),
            outbox_grace_seconds=integer("DSR_JOB_GRACE_SECONDS", 30),
            erasure_auto_approve=boolean("DSR_ERASURE_AUTO_APPROVE", False),
            erasure_bound=integer("DSR_ERASURE_BOUND", 100_000),
            backup_days=integer("DSR_BACKUP_DAYS", 0) or None,
            smtp_url=_smtp_url(get("DSR_SMTP_URL")),
            mail_from=_mail_from(get("DSR_MAIL_FROM")),
        )
        if settings.task_lease_seconds < 3:
            raise ConfigError(f"DSR_TASK_LEASE_SECONDS must be at least 3, got {settings.task_lease_seconds}")
        if settings.outbox_grace_seconds < 0:
            raise ConfigError(f"DSR_JOB_GRACE_SECONDS must not be negative, got {settings.outbox_grace_seconds}")
        if settings.sweep_seconds < 1:
            raise ConfigError(f"DSR_SWEEP_SECONDS must be at least 1, got {settings.sweep_seconds:g}")
        if settings.worker_maintenance_seconds < 1:
            raise ConfigError("DSR_WORKER_MAINTENANCE_SECONDS must be at least 1, "
                              f"got {settings.worker_maintenance_seconds}")
        if settings.erasure_bound < 0:
            raise ConfigError(f"DSR_ERASURE_BOUND must not be negative (0: no bound), got {settings.erasure_bound}")
        if settings.backup_days is not None and settings.backup_days < 0:
            raise ConfigError(f"DSR_BACKUP_DAYS must not be negative, got {settings.backup_days}")
        if not 0 <= settings.report_preview_rows <= 100:
            raise ConfigError(f"DSR_REPORT_PREVIEW_ROWS must be between 0 and 100, got {settings.report_preview_rows}")
        return replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]

    def checked(self) -> Settings:
        """Fail at start-up, not at the first request, when production lacks what it needs."""
        if self.production:
            missing = [
                name
                for name, value in (
                    ("DSR_SECRET_KEY", self.secret_key),
                    ("DSR_DATABASE_URL", self.database_url),
                    ("DSR_REDIS_URL", self.redis_url),
                    ("DSR_BASE_URL", self.base_url),  # download links are built from it
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    "production mode (DSR_ENV=production) needs " + ", ".join(missing)
                    + ": set them in the environment; there are no defaults for these"
                )
            if self.secret_key is not None and len(self.secret_key) < 32:
                raise ConfigError("DSR_SECRET_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return self

    def resolved_secret_key(self) -> str:
        """The configured secret, or in development one kept in the instance folder across restarts."""
        if self.secret_key:
            return self.secret_key
        if self.production:
            raise ConfigError("DSR_SECRET_KEY is required in production")
        path = self.instance_dir / "secret_key"
        if not path.exists():
            self.instance_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()
