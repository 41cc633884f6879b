"""Settings: flags over ``SSE_JOBS_*`` environment over defaults, and values checked early."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sse_jobs.config import Settings, load_settings, parse_duration


def test_defaults() -> None:
    settings = load_settings([], {})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.db == Path("sse-jobs.db")
    assert settings.workers >= 1
    assert settings.jobs == ()
    assert settings.insecure is False
    assert settings.debug is False
    assert settings.heartbeat == 15.0
    assert settings.progress_rate == 10.0
    assert settings.retention == 7 * 86400.0
    assert settings.loopback_only


def test_environment_wins_over_defaults() -> None:
    settings = load_settings([], {
        "SSE_JOBS_PORT": "9000", "SSE_JOBS_HOST": "::1", "SSE_JOBS_DB": "/data/jobs.db",
        "SSE_JOBS_WORKERS": "3", "SSE_JOBS_HEARTBEAT": "5s", "SSE_JOBS_RETENTION": "2d",
        "SSE_JOBS_MAX_BODY": "2048", "SSE_JOBS_RESULTS_DIR": "/data/results",
        "SSE_JOBS_PROGRESS_RATE": "2.5", "SSE_JOBS_LOG_LEVEL": "debug",
    })
    assert settings.port == 9000
    assert settings.host == "::1"
    assert settings.db == Path("/data/jobs.db")
    assert settings.workers == 3
    assert settings.heartbeat == 5.0
    assert settings.retention == 2 * 86400.0
    assert settings.max_body == 2048
    assert settings.results_path == Path("/data/results")
    assert settings.progress_rate == 2.5
    assert settings.log_level == "debug"


def test_flags_win_over_environment() -> None:
    env = {"SSE_JOBS_PORT": "9000", "SSE_JOBS_WORKERS": "3", "SSE_JOBS_HEARTBEAT": "5",
           "SSE_JOBS_DB": "env.db", "SSE_JOBS_JOBS": "from_env"}
    settings = load_settings(["--port", "9100", "--workers", "5", "--heartbeat", "1m",
                              "--db", "flag.db", "--jobs", "from_flag"], env)
    assert settings.port == 9100
    assert settings.workers == 5
    assert settings.heartbeat == 60.0
    assert settings.db == Path("flag.db")
    assert settings.jobs == ("from_flag",)
    # A flag given for one setting leaves the others to the environment.
    settings = load_settings(["--port", "9100"], env)
    assert settings.workers == 3
    assert settings.jobs == ("from_env",)


def test_empty_environment_value_means_unset() -> None:
    assert load_settings([], {"SSE_JOBS_PORT": "", "SSE_JOBS_JOBS": ""}) == Settings()


def test_unrelated_environment_is_ignored() -> None:
    assert load_settings([], {"PORT": "1", "SSE_JOBS_NOPE": "x", "sse_jobs_port": "1"}) \
        == Settings()


def test_jobs_flag_is_repeatable() -> None:
    settings = load_settings(["--jobs", "one", "--jobs", "two.module", "--jobs", "three"], {})
    assert settings.jobs == ("one", "two.module", "three")


def test_jobs_environment_is_comma_separated() -> None:
    settings = load_settings([], {"SSE_JOBS_JOBS": "one, two.module,,three ,"})
    assert settings.jobs == ("one", "two.module", "three")


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("1", True), ("yes", True), ("on", True), ("TRUE", True),
    ("false", False), ("0", False), ("no", False), ("off", False),
])
def test_switches_from_environment(value: str, expected: bool) -> None:
    settings = load_settings([], {"SSE_JOBS_INSECURE": value, "SSE_JOBS_DEBUG": value})
    assert settings.insecure is expected
    assert settings.debug is expected


def test_switch_flag_wins_over_environment() -> None:
    settings = load_settings(["--insecure", "--debug"], {"SSE_JOBS_INSECURE": "false",
                                                          "SSE_JOBS_DEBUG": "no"})
    assert settings.insecure is True
    assert settings.debug is True


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86400.0), ("15m", 900.0), ("30s", 30.0), ("12h", 43200.0), ("90", 90.0),
    ("1.5", 1.5), ("0.25s", 0.25), ("2.5m", 150.0), (" 10s ", 10.0), ("0", 0.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", "s", "7 days", "1w", "-1s", "1e3", "ten", "1.5.2s", "7D", "1h30m", "nan", "inf", "1ms",
])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


def test_durations_from_flags_and_environment() -> None:
    settings = load_settings(["--retention", "7d", "--cancel-grace", "30s"],
                             {"SSE_JOBS_SHUTDOWN_GRACE": "15m", "SSE_JOBS_SEND_TIMEOUT": "45"})
    assert settings.retention == 604800.0
    assert settings.cancel_grace == 30.0
    assert settings.shutdown_grace == 900.0
    assert settings.send_timeout == 45.0


def test_public_url_is_kept_without_its_trailing_slash() -> None:
    assert load_settings(["--public-url", "https://jobs.example.com/"], {}).public_url == \
        "https://jobs.example.com"
    assert load_settings([], {"SSE_JOBS_PUBLIC_URL": "http://10.0.0.5:8080/jobs"}
                         ).public_url == "http://10.0.0.5:8080/jobs"


def test_the_connection_cap_defaults_to_the_streams_and_room_for_requests() -> None:
    assert load_settings([], {}).connection_limit == 16384 + 1024
    assert load_settings(["--max-streams", "100"], {}).connection_limit == 1124
    assert load_settings(["--max-connections", "50"], {}).connection_limit == 50


def test_port_zero_is_allowed() -> None:
    assert load_settings(["--port", "0"], {}).port == 0
    assert load_settings([], {"SSE_JOBS_PORT": "0"}).port == 0
    assert load_settings(["--port", "65535"], {}).port == 65535


@pytest.mark.parametrize(("argv", "words"), [
    (["--port", "abc"], ["--port", "abc"]),
    (["--port", "70000"], ["--port", "70000"]),
    (["--port", "-1"], ["--port"]),
    (["--workers", "0"], ["--workers", "0"]),
    (["--workers", "many"], ["--workers", "many"]),
    (["--retention", "7 days"], ["--retention", "7 days"]),
    (["--heartbeat", "soon"], ["--heartbeat", "soon"]),
    (["--progress-rate", "-1"], ["--progress-rate", "-1"]),
    (["--max-body", "0"], ["--max-body", "0"]),
    (["--log-level", "loud"], ["--log-level", "loud"]),
    (["--public-url", "jobs.example.com"], ["--public-url", "jobs.example.com"]),
    (["--public-url", "ftp://jobs.example.com"], ["--public-url", "ftp://"]),
    (["--public-url", "https://jobs.example.com/?x=1"], ["--public-url", "no query"]),
    (["--max-connections", "0"], ["--max-connections", "0"]),
    (["--header-timeout", "0"], ["--header-timeout", "0"]),
    (["--bogus-flag"], ["--bogus-flag"]),
])
def test_bad_flag_exits_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings(argv, {})
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "error" in message
    for word in words:
        assert word in message, message
    assert "Traceback" not in message


@pytest.mark.parametrize(("name", "value"), [
    ("SSE_JOBS_PORT", "abc"), ("SSE_JOBS_PORT", "70000"), ("SSE_JOBS_WORKERS", "0"),
    ("SSE_JOBS_RETENTION", "a week"), ("SSE_JOBS_HEARTBEAT", "-5s"), ("SSE_JOBS_INSECURE", "maybe"),
    ("SSE_JOBS_MAX_QUEUED", "1.5"), ("SSE_JOBS_LOG_LEVEL", "loud"),
])
def test_bad_environment_value_exits_with_a_clear_message(name: str, value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings([], {name: value})
    message = str(exit_info.value.code)
    assert name in message
    assert value in message


def test_bad_environment_value_is_not_read_when_a_flag_is_given() -> None:
    assert load_settings(["--port", "9000"], {"SSE_JOBS_PORT": "abc"}).port == 9000


@pytest.mark.parametrize(("argv", "env"), [
    (["--heartbeat", "0"], {}), ([], {"SSE_JOBS_HEARTBEAT": "0s"}),
])
def test_zero_heartbeat_is_refused(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(argv, env)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_progress_rate_must_be_a_finite_number(value: str) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--progress-rate", value], {})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert load_settings(["--host", host], {}).loopback_only


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1",
                                  "example.com", "localhost.example.com", "", "::ffff:1.2.3.4"])
def test_non_loopback_hosts(host: str) -> None:
    assert not Settings(host=host).loopback_only


def test_results_directory_defaults_beside_the_database() -> None:
    assert load_settings(["--db", "/data/jobs.db"], {}).results_path == Path(
        "/data/jobs-results")
    assert load_settings(["--db", "/data/jobs.db", "--results-dir", "/srv/out"],
                         {}).results_path == Path("/srv/out")


def test_metrics_token_from_flag_or_environment_and_never_in_repr() -> None:
    token = "scrape-token-0123456789"
    assert load_settings(["--metrics-token", token], {}).metrics_token == token
    from_env = load_settings([], {"SSE_JOBS_METRICS_TOKEN": token})
    assert from_env.metrics_token == token
    assert token not in repr(from_env)
    assert Settings().metrics_token is None


def test_a_short_metrics_token_is_refused_without_repeating_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as from_env:
        load_settings([], {"SSE_JOBS_METRICS_TOKEN": "short-secret"})
    with pytest.raises(SystemExit) as from_flag:
        load_settings(["--metrics-token", "short-secret"], {})

    assert str(from_env.value.code) == ("sse-jobs: SSE_JOBS_METRICS_TOKEN=<hidden> is not "
                                        "valid: must be at least 16 characters")
    assert from_flag.value.code == 2
    message = capsys.readouterr().err
    assert "--metrics-token: must be at least 16 characters" in message
    assert "short-secret" not in message
