"""Everything a process needs to do the work, built once from settings: database, data map,
deadline policy, storage and store connectors. No Flask and no RQ here; the web app and the
workers each hold one Runtime (the worker binds it to the job it runs, see ``current``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dsr import datamap as datamaps
from dsr.config import ConfigError, Settings
from dsr.db import make_engine, make_session_factory
from dsr.domain.deadlines import DeadlinePolicy
from dsr.domain.holidays import HolidayCalendar
from dsr.domain.packaging import ReportOptions, Storage
from dsr.exports.sealed import storage_key
from dsr.mail import Mailer
from dsr.outbox import Dispatcher, install
from dsr.stores import Connector, ConnectorContext, StoreUnavailable, Subject, connector_class, validate_store


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    datamap: datamaps.DataMap
    deadlines: DeadlinePolicy
    storage: Storage
    dispatcher: Dispatcher | None = None
    pid: int = field(default_factory=os.getpid)
    _connectors: dict[str, Connector] = field(default_factory=dict)

    @property
    def seal_key(self) -> bytes:
        """The key artifacts are encrypted with at rest (derived from DSR_SECRET_KEY)."""
        return storage_key(self.settings.resolved_secret_key())

    @property
    def suppression_key(self) -> bytes:
        """The key erased subjects' identities are hashed under (derived from DSR_SECRET_KEY)."""
        from dsr.domain.suppression import suppression_key

        return suppression_key(self.settings.resolved_secret_key())

    @property
    def artifact_ttl(self) -> timedelta:
        return timedelta(days=self.settings.artifact_ttl_days)

    @property
    def mailer(self) -> Mailer:
        """Sends mail (Art. 19 notices) as DSR_MAIL_FROM, else the data map's DPO address."""
        controller = self.datamap.controller
        return Mailer.from_settings(self.settings, controller.dpo.email or controller.email)

    @property
    def report_options(self) -> ReportOptions:
        return ReportOptions(preview_rows=self.settings.report_preview_rows, timezone=self.settings.timezone)

    def connector(self, store: str) -> Connector:
        """The store's connector, built on first use: only then are its connection's variables read,
        so a process that never talks to a store needs none of its secrets."""
        if store not in self._connectors:
            spec = self.datamap.stores[store]
            context = ConnectorContext(self.settings.instance_dir, self.connector, self.settings.base_url)
            try:
                self._connectors[store] = connector_class(spec.connector)(spec, context)
            except datamaps.UnsetVariable as exc:
                # The task fails with this message (and is retried: the variable may be set by then).
                raise StoreUnavailable(str(exc)) from exc
        return self._connectors[store]

    def resolve(self, subject: Subject, for_store: str) -> Subject:
        """The subject with every identity the stores can tell from the ones known (e-mail -> customer
        number, phone), so a log keyed by customer number finds the subject too.

        A store that cannot answer is skipped unless it might have given an identity ``for_store``
        searches by and nobody else gave: then the task fails (and is retried), rather than come
        back complete-looking but missing the subject's records.
        """
        identities = dict(subject.identities)
        unanswered: set[str] = set()
        for name, store in self.datamap.stores.items():
            connector = self.connector(name)
            if type(connector).resolve is Connector.resolve:
                continue
            try:
                more = connector.resolve(replace(subject, identities=identities))
            except StoreUnavailable:
                unanswered |= set(store.identities)
                continue
            identities.update({k: v for k, v in more.items() if k not in identities})
        needed = (unanswered - set(identities)) & set(self.datamap.stores[for_store].identities)
        if needed:
            raise StoreUnavailable(f"the subject's {', '.join(sorted(needed))} could not be looked up "
                                   f"(a store that knows it is unavailable); {for_store} is searched by it")
        return replace(subject, identities=identities)

    def after_fork(self) -> None:
        """In a forked work horse: never reuse the parent's pooled connections. Connectors that can
        drop their connections (``after_fork``) are kept with what they learnt, e.g. reflected tables."""
        if os.getpid() != self.pid:
            self.engine.dispose(close=False)
            kept = {}
            for name, connector in self._connectors.items():
                forked = getattr(connector, "after_fork", None)
                if forked is not None:
                    forked()
                    kept[name] = connector
            self._connectors = kept
            self.pid = os.getpid()

    def close(self) -> None:
        for connector in self._connectors.values():
            connector.close()
        self._connectors.clear()
        self.engine.dispose()


def load_datamap(settings: Settings) -> datamaps.DataMap:
    """The data map with every connector's settings checked: an invalid map stops the start."""
    return datamaps.load(settings.datamap_path, instance_dir=settings.instance_dir, validate_store=validate_store)


def build(settings: Settings, dispatcher: Dispatcher | None = None) -> Runtime:
    settings.checked()
    engine = make_engine(settings.sqlalchemy_url, create_folder=True)
    sessions = make_session_factory(engine)
    if dispatcher is not None:
        install(sessions, dispatcher)
    datamap = load_datamap(settings)
    emailed = sorted(r.id for r in datamap.recipients.values() if r.notify.via == "email")
    if settings.production and emailed and not settings.smtp_url:
        # Outside production such mail is written to instance/mail; in production it would not reach anyone.
        engine.dispose()
        raise ConfigError(f"the data map tells {', '.join(emailed)} by e-mail (notify: email): production needs "
                          "DSR_SMTP_URL, the SMTP server to send through")
    policy = DeadlinePolicy(
        calendar=HolidayCalendar.for_regions(settings.holiday_regions),
        tz_name=settings.timezone,
        target_buffer_days=settings.target_buffer_days,
    )
    return Runtime(settings, engine, sessions, datamap, policy, Storage(settings.artifact_dir), dispatcher)


_current: ContextVar[Runtime] = ContextVar("dsr_runtime")


@contextmanager
def bound(runtime: Runtime) -> Iterator[Runtime]:
    """Make ``runtime`` the one ``current()`` returns in this thread/context, for one job."""
    token = _current.set(runtime)
    try:
        yield runtime
    finally:
        _current.reset(token)


def current() -> Runtime:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no dsr runtime bound: jobs must run in a dsr worker (`dsr worker`)") from None
