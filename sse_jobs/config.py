"""Settings: the one place that reads command-line flags and ``SSE_JOBS_*`` variables.

Every flag ``--some-flag`` also reads ``SSE_JOBS_SOME_FLAG``; a flag given on the command
line wins over the environment, and the environment wins over the default.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "SSE_JOBS_"
# Connections beyond --max-streams that the default --max-connections leaves for requests.
STREAMLESS_CONNECTIONS = 1024


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How one sse-jobs server runs. Every field has a safe default for local use."""

    host: str = "127.0.0.1"
    port: int = 8080
    # A SQLite file (the default), or a postgresql:// URL: a database many nodes share.
    db: Path | str = Path("sse-jobs.db")
    # Where job result files live; defaults to ``<db name>-results`` beside the database.
    results_dir: Path | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # 0: runs no jobs
    prefetch: int = 1  # attempts held ready per worker, so that none waits between jobs
    jobs: tuple[str, ...] = ()
    insecure: bool = False
    debug: bool = False
    log_level: str = "info"
    log_format: str = "text"
    # Streams
    heartbeat: float = 15.0
    send_timeout: float = 30.0
    retry_ms: int = 3000
    progress_rate: float = 10.0
    subscriber_queue: int = 1024
    fan_out_rate: float = 20.0
    # Jobs
    cancel_grace: float = 5.0
    # Scale-out (a shared store): how often a node renews its attempts' leases, and how
    # long after its last renewal another node ends them as crashed.
    lease_renew: float = 5.0
    lease_timeout: float = 30.0
    retry_base: float = 1.0
    retry_max: float = 300.0
    shutdown_grace: float = 10.0
    retention: float = 7 * 86400.0
    max_queued: int = 10_000
    max_body: int = 1024 * 1024
    # Connections: at most this many open (None: --max-streams plus room for requests),
    # and a new one must send its request headers within header_timeout seconds.
    max_connections: int | None = None
    header_timeout: float = 10.0
    # The address clients reach this service at (e.g. behind a proxy), for absolute links.
    public_url: str | None = None
    # Access
    api_tokens_file: Path | None = None
    api_tokens: str | None = field(default=None, repr=False)  # name:token,name:token
    # A Bearer token for /metrics alone; unset with API tokens on, any API token will do.
    metrics_token: str | None = field(default=None, repr=False)
    stream_token_ttl: float = 86400.0
    max_active_per_principal: int = 1000
    submissions_per_minute: int = 600
    max_streams: int = 16384
    max_streams_per_principal: int = 1024
    cors_origin: tuple[str, ...] = ()
    # Webhooks
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_allow_private: bool = False
    webhook_max_attempts: int = 8
    webhook_timeout: float = 10.0
    webhook_concurrency: int = 8
    webhook_concurrency_per_host: int = 4
    webhook_retry_base: float = 2.0
    webhook_retry_max: float = 3600.0

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL database, when ``db`` names one."""
        return self.db if isinstance(self.db, str) else None

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file, when ``db`` is not a PostgreSQL URL."""
        assert isinstance(self.db, Path), "db is a PostgreSQL URL"
        return self.db

    @property
    def results_path(self) -> Path:
        if self.results_dir is not None:
            return self.results_dir
        if isinstance(self.db, str):
            return Path("sse-jobs-results")
        return self.db.with_name(self.db.stem + "-results")

    def problems(self) -> list[tuple[str, str]]:
        """What makes these settings unusable together: (the flag at fault, why)."""
        found = []
        if self.postgres_url is None and self.workers == 0:
            found.append(("workers", "0 runs no jobs, and a SQLite database has no other "
                          "node to run them: API-only nodes need --db postgresql://..."))
        if self.lease_timeout <= self.lease_renew:
            found.append(("lease-timeout", f"{self.lease_timeout:g}s must be longer than "
                          f"--lease-renew ({self.lease_renew:g}s), or leases run out "
                          "between renewals"))
        return found

    @property
    def connection_limit(self) -> int:
        """Open connections allowed: --max-connections, or room for every stream and
        for requests besides them."""
        if self.max_connections is not None:
            return self.max_connections
        return self.max_streams + STREAMLESS_CONNECTIONS

    @property
    def loopback_only(self) -> bool:
        return _is_loopback(self.host)


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"1.5"``, ``"30s"``, ``"15m"``, ``"12h"`` or ``"7d"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 15m, 12h, 7d)")
    number, unit = match.groups()
    return float(number) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _database(text: str) -> Path | str:
    """``--db``: a ``postgresql://`` (or ``postgres://``) URL as given, else a file path."""
    if text.startswith(("postgresql://", "postgres://")):
        return text
    if "://" in text:
        raise argparse.ArgumentTypeError(f"not a SQLite file or a postgresql:// URL: {text!r}")
    return Path(text)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _workers(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no jobs on this node) or more: {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number, not negative: {text}")
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than zero: {text}")
    return value


def _token(text: str) -> str:
    if len(text.strip()) < 16:  # the message never repeats the token
        raise argparse.ArgumentTypeError("must be at least 16 characters")
    return text.strip()


def _public_url(text: str) -> str:
    """``--public-url``: an http(s) address with a host and no query, kept without a
    trailing slash so that links are joined to it as ``URL + /api/v1/...``."""
    parsed = urlsplit(text.strip())
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL with a host: {text!r}")
    if parsed.query or parsed.fragment:
        raise argparse.ArgumentTypeError(f"must have no query or fragment: {text!r}")
    return text.strip().rstrip("/")


def _log_level(text: str) -> str:
    if text.lower() not in {"debug", "info", "warning", "error"}:
        raise argparse.ArgumentTypeError(f"not a log level: {text!r}")
    return text.lower()


def _log_format(text: str) -> str:
    if text.lower() not in {"text", "json"}:
        raise argparse.ArgumentTypeError(f"not a log format: {text!r} (text or json)")
    return text.lower()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# flag name -> (type, help). Booleans are switches; "jobs" is repeatable.
_FLAGS: dict[str, tuple[Callable[[str], Any] | None, str]] = {
    "host": (str, "address to listen on"),
    "port": (_port, "port to listen on; 0 picks a free one"),
    "db": (_database, "SQLite database file, or a postgresql:// URL shared by many nodes"),
    "results-dir": (Path, "directory for job result files (default: <db>-results)"),
    "workers": (_workers, "worker processes in the pool (default: CPU count); 0: an API "
                          "node that runs no jobs (PostgreSQL only)"),
    "prefetch": (_non_negative_int, "jobs held ready per worker, to start the moment it is "
                                    "free (0: take one when one is free)"),
    "jobs": (str, "import MODULE to register its job types (repeatable)"),
    "insecure": (None, "allow a non-loopback host without API tokens"),
    "debug": (None, "include tracebacks in job errors"),
    "log-level": (_log_level, "debug, info, warning or error"),
    "log-format": (_log_format, "text or json (one JSON object per line)"),
    "heartbeat": (_positive_duration, "seconds between ': ping' comments on idle streams"),
    "send-timeout": (_positive_duration, "drop a stream whose write stalls this long"),
    "retry-ms": (_positive_int, "the 'retry:' reconnection delay sent to SSE clients"),
    "progress-rate": (_non_negative, "progress events stored per job per second; 0 = all"),
    "subscriber-queue": (_positive_int, "events buffered per stream before it is dropped"),
    "fan-out-rate": (_non_negative, "writes a second to each stream at most, under load; "
                                    "0 = one per commit"),
    "cancel-grace": (parse_duration, "seconds a running job has to stop before it is killed"),
    "lease-renew": (_positive_duration, "PostgreSQL: seconds between renewals of a node's "
                                        "attempt leases"),
    "lease-timeout": (_positive_duration, "PostgreSQL: seconds after a node's last renewal "
                                          "before other nodes end its attempts as crashed"),
    "retry-base": (parse_duration, "first retry backoff ceiling in seconds"),
    "retry-max": (parse_duration, "largest retry backoff in seconds"),
    "shutdown-grace": (parse_duration, "seconds running jobs get on shutdown"),
    "retention": (parse_duration, "keep finished jobs this long (e.g. 7d)"),
    "max-queued": (_positive_int, "queued jobs before submissions get 503"),
    "max-body": (_positive_int, "largest request body in bytes"),
    "max-connections": (_positive_int, "open HTTP connections in total; more are answered "
                                       "503 (default: --max-streams + 1024)"),
    "header-timeout": (_positive_duration, "seconds a new connection has to send its request "
                                           "headers (408)"),
    "public-url": (_public_url, "the address clients reach this service at, e.g. "
                                "https://jobs.example.com; webhook links are made absolute"),
    "api-tokens-file": (Path, "file of name:token lines; with tokens every /api call needs one"),
    "api-tokens": (str, "name:token,name:token (prefer the file: env is visible to others)"),
    "metrics-token": (_token, "Bearer token /metrics requires (default: open without API "
                              "tokens, any API token with them)"),
    "stream-token-ttl": (_positive_duration, "lifetime of the stream tokens in job links"),
    "max-active-per-principal": (_positive_int, "queued+processing jobs per token (429)"),
    "submissions-per-minute": (_positive_int, "submissions per token per minute (429)"),
    "max-streams": (_positive_int, "open SSE streams in total (503)"),
    "max-streams-per-principal": (_positive_int, "open SSE streams per token (429)"),
    "cors-origin": (str, "allow this browser origin (repeatable)"),
    "webhook-secret": (str, "Standard Webhooks secret (whsec_...); default: made once, kept"),
    "webhook-allow-private": (None, "allow callback URLs on loopback/private addresses"),
    "webhook-max-attempts": (_positive_int, "attempts before a delivery is dead-lettered"),
    "webhook-timeout": (_positive_duration, "seconds one delivery attempt may take"),
    "webhook-concurrency": (_positive_int, "deliveries in flight at once"),
    "webhook-concurrency-per-host": (_positive_int, "deliveries in flight at once to one "
                                                    "receiver host"),
    "webhook-retry-base": (_positive_duration, "first webhook retry backoff ceiling"),
    "webhook-retry-max": (_positive_duration, "largest webhook retry backoff"),
}

# Flags that may be given more than once; the environment lists them comma separated.
_REPEATABLE = {"jobs", "cors-origin"}
# Flags whose values are secrets: an error about one does not repeat it.
_SECRETS = {"api-tokens", "metrics-token", "webhook-secret"}


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``serve`` flags to ``parser``; defaults are left unset so env can fill them."""
    for name, (kind, help_text) in _FLAGS.items():
        env = ENV_PREFIX + name.upper().replace("-", "_")
        if kind is None:
            parser.add_argument(f"--{name}", action="store_true", default=None,
                                help=f"{help_text} [{env}]")
        elif name in _REPEATABLE:
            parser.add_argument(f"--{name}", action="append",
                                help=f"{help_text} [{env}, comma separated]")
        else:
            parser.add_argument(f"--{name}", type=kind, help=f"{help_text} [{env}]")
    return parser


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Merge parsed flags over ``SSE_JOBS_*`` environment values over the defaults."""
    values: dict[str, Any] = {}
    for name, (kind, _help) in _FLAGS.items():
        attr = name.replace("-", "_")
        given = getattr(args, attr, None)
        if given is not None:
            values[attr] = tuple(given) if name in _REPEATABLE else given
            continue
        raw = environ.get(ENV_PREFIX + attr.upper())
        if raw is None or raw == "":
            continue
        values[attr] = _from_env(name, kind, raw)
    known = {f.name for f in fields(Settings)}
    settings = Settings(**{k: v for k, v in values.items() if k in known})
    for flag, why in settings.problems():
        attr = flag.replace("-", "_")
        if getattr(args, attr, None) is None and attr in values:  # it came from the environment
            env = ENV_PREFIX + attr.upper()
            raise SystemExit(f"sse-jobs: {env}={environ[env]!r} is not valid: {why}")
        print(f"sse-jobs: error: argument --{flag}: {why}", file=sys.stderr)
        raise SystemExit(2)
    return settings


def _from_env(name: str, kind: Callable[[str], Any] | None, raw: str) -> Any:
    env = ENV_PREFIX + name.upper().replace("-", "_")
    if kind is None:
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise SystemExit(f"sse-jobs: {env} must be true or false, not {raw!r}")
    if name in _REPEATABLE:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        return kind(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        shown = "<hidden>" if name in _SECRETS else repr(raw)  # secrets are never written out
        raise SystemExit(f"sse-jobs: {env}={shown} is not valid: {exc}") from None


def load_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for ``sse-jobs serve ARGV`` in the given (default: this process's) environment."""
    parser = build_parser(argparse.ArgumentParser(prog="sse-jobs serve"))
    return settings_from(parser.parse_args(argv), os.environ if environ is None else environ)
