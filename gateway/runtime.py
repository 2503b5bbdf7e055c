"""The long-lived objects of one gateway process, built at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.access.audit import AuditSink
from gateway.access.peer import TrustedProxies
from gateway.counters import Counters
from gateway.db.engine import create_engine, session_factory
from gateway.db.listen import Listener
from gateway.db.models import ApiKey, Session, utcnow
from gateway.identity.federation import Federation
from gateway.identity.mail import Mailer
from gateway.identity.outside import OutsideTokens
from gateway.identity.passwords import PasswordHasher, usable_cpus
from gateway.identity.sealing import Sealer
from gateway.identity.throttle import LoginThrottle
from gateway.identity.tokens import TokenService, load_or_create_keys
from gateway.manage.audit import Pruned, destinations, prune_events
from gateway.manage.audit_chain import checkpoint_trail, write_checkpoint
from gateway.manage.audit_otlp import otlp_logs_transport
from gateway.manage.audit_webhook import AuditWebhook, webhook_transport
from gateway.metrics import DeliveryStats, Metrics
from gateway.policy import HotState, StateRows
from gateway.policy.files import PolicyFiles
from gateway.policy.store import PolicyStore, write_tally
from gateway.proxy.browsers import Browsers, route_access
from gateway.proxy.forward import upstream_session
from gateway.proxy.forward_auth import ForwardAuthAnswers
from gateway.proxy.identity import Directory, needs_directory
from gateway.proxy.limit import RateLimiter
from gateway.proxy.match import RouteTable
from gateway.proxy.pipeline import Pipeline
from gateway.settings import Settings
from gateway.tracing import Tracing, build_tracing

log = logging.getLogger("gateway")
KEY_USAGE_SECONDS = 10.0
AUDIT_PRUNE_SECONDS = 3600.0
"""With `[audit] retention_days`: how often old audit events are deleted (and once at start)."""


@dataclass(slots=True)
class Services:
    """The process's services, every one built by `Runtime.start()` and closed by `Runtime.stop()`. The control
    plane hands them to handlers as Litestar dependencies (`gateway.api.deps`); the data plane holds the
    pipeline."""

    settings: Settings
    state: HotState
    hasher: PasswordHasher
    sealer: Sealer
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: PolicyStore
    tokens: TokenService
    http: aiohttp.ClientSession
    pools: dict[str, aiohttp.ClientSession]
    audit: AuditSink
    metrics: Metrics
    counters: Counters
    throttle: LoginThrottle
    mailer: Mailer
    pipeline: Pipeline
    listener: Listener | None
    """PostgreSQL only: LISTEN for committed changes."""
    federation: Federation
    """The outside identity providers people sign in with (`[[identity_providers]]`)."""
    webhook: AuditWebhook | None = None
    """With `[audit] webhook_url`: delivers the audit trail (the runtime runs it)."""
    otlp_logs: AuditWebhook | None = None
    """With `[audit] otlp_logs_endpoint`: sends the audit trail as OpenTelemetry logs."""
    tracing: Tracing | None = None
    """Spans for both planes when `[tracing]` is on."""
    outside: OutsideTokens | None = None
    """With `[[trusted_issuers]]`: their key sets and verified tokens."""

    async def close(self) -> None:
        """Flush the audit sink and the spans, then close the counters' store, the upstream pools and the
        database."""
        await self.audit.close()
        if self.tracing is not None:
            await self.tracing.close()
        await self.counters.close()
        await self.federation.close()
        if self.outside is not None:
            await self.outside.close()
        await self.http.close()
        for pool in self.pools.values():
            await pool.close()
        await self.db.dispose()


@dataclass(slots=True)
class Runtime:
    """One gateway process in two steps: `configure` (settings, routes, the policy snapshot: everything that can
    fail on bad configuration) and `start` (connections and `services`), undone by `stop`."""

    settings: Settings
    routes: RouteTable
    state: HotState
    hasher: PasswordHasher
    sealer: Sealer
    files: PolicyFiles | None = None
    _services: Services | None = None
    _watcher: asyncio.Task[None] | None = None
    _usage_writer: asyncio.Task[None] | None = None
    _mail_sender: asyncio.Task[None] | None = None
    _audit_pruner: asyncio.Task[None] | None = None
    _audit_sender: asyncio.Task[None] | None = None
    _checkpointer: asyncio.Task[None] | None = None
    _audit_logger: asyncio.Task[None] | None = None
    _listening: asyncio.Task[None] | None = None
    last_sync: float = 0.0
    """When the watcher last reached the database (`/readyz` shows it as `policy_synced_at`)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _resync: bool = False

    @classmethod
    def configure(cls, settings: Settings) -> Runtime:
        """Everything that can fail on bad configuration fails here, before any connection is opened."""
        return cls(
            settings=settings,
            routes=RouteTable(settings.routes, settings.upstream),
            state=HotState(settings.model_path),
            hasher=PasswordHasher(settings.passwords),
            sealer=Sealer(settings.encryption_key),
            files=PolicyFiles(Path(settings.model_path), Path(settings.policy_dir)) if settings.watch_files else None,
        )

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the gateway's services exist only between Runtime.start() and stop()")
        return self._services

    def assemble(
        self, db: AsyncEngine, store: PolicyStore, tokens: TokenService, listener: Listener | None
    ) -> Services:
        """Every service, from the connections and keys `start` made (the tests assemble a data plane that never
        touches its database the same way)."""
        settings = self.settings
        http = upstream_session(settings.upstream.pool_size)
        pools = {route.name: upstream_session(route.pool_size) for route in self.routes.routes if route.pool_size}
        limits = settings.rate_limits
        counters = Counters(limits.redis_url)
        limiter = RateLimiter(
            counters,
            per_user=limits.per_user_per_minute,
            per_org=limits.per_org_per_minute,
            per_key=limits.per_key_per_minute,
        )
        metrics = Metrics(
            lambda: self.state.version, lambda: self.state.rule_count, self.hasher.gate, lambda: self.state.tally
        )
        audit = AuditSink(settings.audit_log, chained=settings.audit.chain_decisions)
        audit.start()
        trusted = TrustedProxies(settings.trusted_proxies)
        tracing = build_tracing(settings.tracing, trusted)
        # Key sets are fetched through the process's one outbound session (`start` fetches them).
        outside = OutsideTokens(settings.trusted_issuers, http) if settings.trusted_issuers else None
        pipeline = Pipeline(
            routes=self.routes,
            tokens=tokens,
            state=self.state,
            http=http,
            audit=audit,
            metrics=metrics,
            limiter=limiter,
            pools=pools,
            allow_underscore_headers=settings.allow_underscore_headers,
            max_header_bytes=settings.upstream.max_header_bytes,
            trusted_proxies=trusted,
            tracing=tracing,
            access=route_access(settings),
            browsers=Browsers.from_settings(settings) if settings.browser.enabled else None,
            directory=Directory(store.sessions) if _needs_directory(settings) else None,
            forward_answers=ForwardAuthAnswers.from_settings(settings),
            outside=outside,
        )
        webhook = None
        if settings.audit.webhook_url is not None:
            metrics.webhook = DeliveryStats()
            webhook = AuditWebhook(webhook_transport(settings.audit), store.sessions, metrics.webhook)
        otlp_logs = None
        if settings.audit.otlp_logs_endpoint is not None:
            otlp_logs = AuditWebhook(otlp_logs_transport(settings.audit), store.sessions, DeliveryStats())
        return Services(
            settings=settings,
            state=self.state,
            hasher=self.hasher,
            sealer=self.sealer,
            db=db,
            sessions=store.sessions,
            store=store,
            tokens=tokens,
            http=http,
            pools=pools,
            audit=audit,
            metrics=metrics,
            counters=counters,
            throttle=LoginThrottle(counters, settings.login),
            mailer=Mailer(settings.mail, store.sessions),
            pipeline=pipeline,
            listener=listener,
            federation=Federation(settings),
            webhook=webhook,
            otlp_logs=otlp_logs,
            tracing=tracing,
            outside=outside,
        )

    async def start(self) -> None:
        settings = self.settings
        db = create_engine(settings.database_url)
        sessions = session_factory(db)
        store = PolicyStore(sessions)
        tokens = TokenService(settings.tokens, await load_or_create_keys(sessions))
        await self.state.reload(store.version, lambda: self._rows(store), force=True)
        # Read the keys again after the snapshot's version: a key another process stored before that version is
        # in this ring, and one stored after it moves the version, so the next poll reloads the ring. (Read only
        # before, a replica starting beside another could miss that one's first key for good.)
        tokens.replace_ring(await load_or_create_keys(sessions))
        listener = (
            Listener(settings.database_url, self._changed) if settings.database_url.startswith("postgresql") else None
        )
        self._services = self.assemble(db, store, tokens, listener)
        if self._services.outside is not None:
            # At most 5 s, and never fatal: an issuer that is down is logged and fetched again later.
            await self._services.outside.start()
        gate = self.hasher.gate
        log.info(
            "password hashing: at most %d at once (of %d CPUs), on average %.2f CPUs while proxied traffic keeps "
            "the event loop busy and up to %d while it is idle; %d may wait, then 503",
            gate.concurrency,
            usable_cpus(),
            gate.budget.busy,
            gate.concurrency,
            gate.queue,
        )
        self._watcher = asyncio.create_task(self._watch(), name="gateway-policy-watch")
        if listener is not None:
            self._listening = asyncio.create_task(listener.run(), name="gateway-listen")
        self._usage_writer = asyncio.create_task(self._write_usage(), name="gateway-key-usage")
        self._mail_sender = asyncio.create_task(self.services.mailer.run(), name="gateway-mail")
        if self.services.webhook is not None:
            self._audit_sender = asyncio.create_task(self.services.webhook.run(), name="gateway-audit-webhook")
        if self.services.otlp_logs is not None:
            self._audit_logger = asyncio.create_task(self.services.otlp_logs.run(), name="gateway-audit-otlp-logs")
        if settings.audit.retention_days is not None:
            self._audit_pruner = asyncio.create_task(self._prune_audit(), name="gateway-audit-retention")
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="gateway-audit-checkpoints")
        # Everything built so far lives as long as the process. Freezing it keeps the collector's full passes
        # from rescanning the framework, ORM and casbin objects (bench/proxy.py: gateway p99 82 ms -> 28 ms).
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        tasks = (
            self._listening,
            self._watcher,
            self._usage_writer,
            self._mail_sender,
            self._audit_pruner,
            self._audit_sender,
            self._checkpointer,
            self._audit_logger,
        )
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self.flush_key_usage()
        with contextlib.suppress(Exception):
            await self.flush_session_usage()
        with contextlib.suppress(Exception):
            await self.flush_shadow()
        with contextlib.suppress(Exception):
            await self.checkpoint()
        for deliverer in (self.services.webhook, self.services.otlp_logs):
            if deliverer is not None:
                with contextlib.suppress(Exception):
                    await deliverer.release()
        await self.services.close()
        self.hasher.gate.close()

    async def refresh(self, *, force: bool = False) -> None:
        """Catch up now if anything changed (called after this process writes): the changes since the snapshot's
        version as deltas when the change log holds them all, else a full reload; a full reload unconditionally
        with `force` (after the listener reconnects: notices may have been missed). Never on the request path.
        With file watching every reload is full (the files' lines are not in the change log)."""
        files_changed = self.files is not None and self.files.changed()
        services = self.services
        if await self.state.reload(
            services.store.version,
            lambda: self._rows(services.store),
            force=force or files_changed,
            fetch_changes=services.store.changes if self.files is None else None,
        ):
            services.tokens.replace_ring(await load_or_create_keys(services.sessions))

    async def _rows(self, store: PolicyStore) -> StateRows:
        """The database's lines, plus the watched files' lines and model when file watching is on."""
        state = await store.state()
        if self.files is None:
            return state
        model_text, file_rules = await asyncio.to_thread(self.files.load)
        return StateRows(
            rules=state.rules + file_rules,
            orgs=state.orgs,
            version=state.version,
            keys=state.keys,
            revoked_sessions=state.revoked_sessions,
            model_text=model_text,
            shadow=state.shadow,
        )

    async def flush_key_usage(self) -> None:
        """Write API keys' last-use times in one transaction (not per request); no version bump: the
        hot path does not read them."""
        pipeline = self.services.pipeline
        usage, pipeline.key_usage = pipeline.key_usage, {}
        if not usage:
            return
        async with self.services.sessions() as session:
            for key_id, used in usage.items():
                await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(last_used_at=dt.datetime.fromtimestamp(used, dt.UTC))
                )
            await session.commit()

    async def flush_session_usage(self) -> None:
        """Write browser sessions' last-use times (by their cookie) in one transaction, like API keys': the
        portal reads them, the hot path never does."""
        pipeline = self.services.pipeline
        usage, pipeline.session_usage = pipeline.session_usage, {}
        if not usage:
            return
        async with self.services.sessions() as session:
            for session_id, used in usage.items():
                when = dt.datetime.fromtimestamp(used, dt.UTC)
                later = (Session.id == session_id) & (Session.last_used_at < when)
                await session.execute(update(Session).where(later).values(last_used_at=when))
            await session.commit()

    async def flush_shadow(self) -> None:
        """Add this process's shadow-policy counts to the database (batched like key use, never per request)."""
        tally = self.state.tally
        if tally is not None:
            await write_tally(self.services.sessions, tally)

    async def _write_usage(self) -> None:
        while True:
            await asyncio.sleep(KEY_USAGE_SECONDS)
            try:
                await self.flush_key_usage()
            except Exception:
                log.exception("writing API key last-use times failed; they will be retried")
            try:
                await self.flush_session_usage()
            except Exception:
                log.exception("writing sessions' last-use times failed; later uses will be written")
            try:
                await self.flush_shadow()
            except Exception:
                log.exception("writing shadow-policy counts failed; those counts are lost")

    async def prune_audit(self) -> Pruned:
        """Delete audit events older than `[audit] retention_days`; with a webhook, only those it delivered."""
        audit = self.settings.audit
        if audit.retention_days is None:
            return Pruned(removed=0, kept=0)
        older_than = utcnow() - dt.timedelta(days=audit.retention_days)
        deliveries = destinations(audit)
        return await prune_events(
            self.services.sessions,
            older_than=older_than,
            keep_undelivered=bool(deliveries),
            deliveries=deliveries,
            ring=self.services.tokens.ring,
        )

    async def checkpoint(self) -> None:
        """Sign and store the heads of the trail of changes and of this process's decision log (when chained),
        if they moved since the last checkpoint."""
        services = self.services
        ring = services.tokens.ring
        await checkpoint_trail(services.sessions, ring)
        sink = services.audit
        if not sink.chained:
            return
        sink.flush()
        seq, head = sink.head
        if seq > sink.checkpointed:
            async with services.sessions() as session:
                write_checkpoint(session, ring, sink.stream_id, seq, head)
                await session.commit()
            sink.checkpointed = seq

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit.checkpoint_seconds)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("writing audit checkpoints failed; the next run retries")

    async def _prune_audit(self) -> None:
        """At start, then every AUDIT_PRUNE_SECONDS (each replica; deleting what another already deleted is a
        no-op)."""
        while True:
            try:
                pruned = await self.prune_audit()
                if pruned.removed:
                    log.info(
                        "audit retention: removed %d events older than %d days",
                        pruned.removed,
                        self.settings.audit.retention_days,
                    )
            except Exception:
                log.exception("audit retention: pruning failed; the next run retries")
            await asyncio.sleep(AUDIT_PRUNE_SECONDS)

    def _changed(self, resync: bool) -> None:
        """The listener heard of a change (or reconnected: then reload unconditionally)."""
        self._resync = self._resync or resync
        self._wake.set()

    async def _watch(self) -> None:
        """Reload when another process (CLI, replica) changed something: at once when PostgreSQL notifies,
        and in any case at every poll, which also covers SQLite and a listener that is down."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.policy_poll_seconds)
            self._wake.clear()
            resync, self._resync = self._resync, False
            try:
                await self.refresh(force=resync)
                self.last_sync = time.time()
            except Exception:
                # The old snapshot keeps serving; the next poll tries again.
                self._resync = self._resync or resync
                log.exception("policy reload failed; keeping the previous policy")


def _needs_directory(settings: Settings) -> bool:
    """Whether any configured identity header is an email or a name (only then are users looked up)."""
    wanted = [settings.identity_headers, settings.forward_auth.identity_headers or ()]
    wanted.extend(route.identity_headers or () for route in settings.routes)
    return any(needs_directory(kinds) for kinds in wanted)
