"""Configuration: TOML file, environment overrides, and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings

GOOD = """
database_url = "sqlite+aiosqlite:///./x.db"
port = 9000

[tokens]
access_ttl_seconds = 300

[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:9001"
strip_prefix = true
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_file_is_decoded_into_frozen_typed_settings(tmp_path: Path) -> None:
    """Values from the file land in typed fields; unspecified ones keep their defaults."""
    settings = load_settings(_write(tmp_path, GOOD), environ={})
    assert settings.port == 9000
    assert settings.tokens.access_ttl_seconds == 300
    assert settings.routes[0].strip_prefix is True
    assert settings.routes[0].public is False
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """GATEWAY_* variables win over the file, nested keys with a double underscore."""
    env = {
        "GATEWAY_PORT": "9100",
        "GATEWAY_TOKENS__ACCESS_TTL_SECONDS": "60",
        "GATEWAY_DATABASE_URL": "postgresql+asyncpg://u@h/db",
    }
    settings = load_settings(_write(tmp_path, GOOD), environ=env)
    assert (settings.port, settings.tokens.access_ttl_seconds) == (9100, 60)
    assert settings.database_url == "postgresql+asyncpg://u@h/db"


def test_config_path_from_environment(tmp_path: Path) -> None:
    """GATEWAY_CONFIG names the file when --config is absent; a named missing file is an error."""
    path = _write(tmp_path, GOOD)
    assert load_settings(environ={"GATEWAY_CONFIG": str(path)}).port == 9000
    with pytest.raises(ConfigError, match="not found"):
        load_settings(environ={"GATEWAY_CONFIG": str(tmp_path / "missing.toml")})


BAD = [
    ('port = "high"', "port"),
    ("[[routes]]\nprefix = 1\nupstream = 'http://x'", "routes[0].prefix"),
    ("[[routes]]\nprefix = '/api'\nupstream = 'ftp://x'", "routes[0].upstream"),
    ("[[routes]]\nprefix = '/api/'\nupstream = 'http://x'", "routes[0].prefix"),
    ("[[routes]]\nprefix = '/auth'\nupstream = 'http://x'", "routes[0].prefix"),
    ("[[routes]]\nprefix = '/admin/x'\nupstream = 'http://x'", "routes[0].prefix"),
    (
        "[[routes]]\nprefix = '/a'\nupstream = 'http://x'\n[[routes]]\nprefix = '/a'\nupstream = 'http://y'",
        "routes[1].prefix",
    ),
    ("[[routes]]\nprefix = '/a'\nupstream = 'http://x'\nstrip = true", "strip"),
    ("databse_url = 'x'", "databse_url"),
    ("database_url = 'mysql://x'", "database_url"),
    ("[tokens]\naccess_ttl_seconds = 0", "tokens.access_ttl_seconds"),
    ("port = [", "not valid TOML"),
    ("[audit]\nretention_days = 0", "audit.retention_days"),
    ("[audit]\nwebhook_timeout = 60", "audit.webhook_timeout"),
    ("[audit]\nwebhook_url = 'ftp://siem.example'\nwebhook_secret = '" + "s" * 32 + "'", "audit.webhook_url"),
    ("[audit]\nwebhook_url = 'https://siem.example'", "audit.webhook_secret"),
    ("[audit]\nwebhook_secert = 'x'", "webhook_secert"),
    (
        "[[routes]]\nprefix = '/a'\nupstream = 'http://x'\n"
        "[routes.cors]\nallow_origins = ['*']\nallow_credentials = true",
        "routes[0].cors.allow_origins",
    ),
    ("[tracing]\nsample_ratio = 1.5", "tracing.sample_ratio"),
    ("[tracing]\nendpoint = '127.0.0.1:4318'", "tracing.endpoint"),
    ("[tracing]\ntrust_incoming = 'everyone'", "tracing.trust_incoming"),
    ("[tracing]\nbatch_delay_seconds = 0", "tracing.batch_delay_seconds"),
    ("[tracing]\nheaders = ['x']", "tracing.headers"),
]


@pytest.mark.parametrize(("text", "key"), BAD)
def test_bad_config_fails_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Wrong types, unknown keys, overlapping or duplicate prefixes fail at load with the key in the message."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ={})
    assert key in str(info.value)


def test_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    """A non-numeric GATEWAY_PORT is reported as `port`."""
    with pytest.raises(ConfigError, match="port"):
        load_settings(_write(tmp_path, GOOD), environ={"GATEWAY_PORT": "eighty"})


def test_the_readme_configuration_example_is_valid() -> None:
    """The README's annotated gateway.toml loads as it is shown (every key exists, every value validates)."""
    import re
    import tomllib

    from gateway.settings import settings_from_mapping

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"```toml\n(.*?)```", readme, flags=re.DOTALL)
    assert example is not None
    settings = settings_from_mapping(tomllib.loads(example.group(1)))
    assert settings.passwords.niceness == 10
    assert settings.login.free_failures == 5


AUDIT = '[audit]\nwebhook_url = "https://siem.example/gateway"\n'
SECRET = "0123456789abcdef" * 4


def test_a_webhook_without_a_secret_stops_the_start_saying_how_to_give_one(tmp_path: Path) -> None:
    """`audit.webhook_url` alone is a configuration error that names the secret and both ways to set it."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, AUDIT), environ={})
    message = str(info.value)
    assert "audit.webhook_secret: required with audit.webhook_url" in message
    assert "GATEWAY_AUDIT__WEBHOOK_SECRET" in message
    assert "audit.webhook_secret_file" in message


def test_a_short_secret_is_refused_naming_its_variable_and_never_showing_it(tmp_path: Path) -> None:
    """A secret under 32 characters is refused; the message names the environment variable it came from, says
    how long it must be and never repeats the secret."""
    short = "hunter2-is-not-enough"
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, AUDIT), environ={"GATEWAY_AUDIT__WEBHOOK_SECRET": short})
    message = str(info.value)
    assert message.startswith("GATEWAY_AUDIT__WEBHOOK_SECRET: ")
    assert "at least 32" in message
    assert short not in message


def test_the_secret_comes_from_the_environment_and_never_prints(tmp_path: Path) -> None:
    """GATEWAY_AUDIT__WEBHOOK_SECRET fills the secret; the settings' repr (what a log line or a traceback would
    show) hides it."""
    settings = load_settings(_write(tmp_path, AUDIT), environ={"GATEWAY_AUDIT__WEBHOOK_SECRET": SECRET})
    assert settings.audit.webhook_key() == SECRET.encode()
    assert settings.audit.webhook_timeout == 10.0
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.audit)
    assert "webhook_secret=<hidden>" in repr(settings.audit)


def test_the_secret_file_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`webhook_secret_file` written in the file is read from the file's folder, whatever the working directory,
    with its trailing newline dropped; a missing file or one set next to `webhook_secret` is an error."""
    (tmp_path / "webhook.secret").write_text(SECRET + "\n")
    monkeypatch.chdir("/")
    config = _write(tmp_path, AUDIT + 'webhook_secret_file = "webhook.secret"\nretention_days = 90\n')
    settings = load_settings(config, environ={})
    assert settings.audit.webhook_key() == SECRET.encode()
    assert settings.audit.retention_days == 90
    with pytest.raises(ConfigError, match=r"audit.webhook_secret_file: cannot be read: No such file"):
        load_settings(_write(tmp_path, AUDIT + 'webhook_secret_file = "gone.secret"\n'), environ={})
    both = AUDIT + f'webhook_secret_file = "webhook.secret"\nwebhook_secret = "{SECRET}"\n'
    with pytest.raises(ConfigError, match="not both"):
        load_settings(_write(tmp_path, both), environ={})


def test_without_an_audit_section_every_event_is_kept_and_nothing_is_delivered() -> None:
    """The defaults: no retention, no webhook."""
    from gateway.settings import Settings

    audit = Settings().audit
    assert (audit.retention_days, audit.webhook_url) == (None, None)


def test_the_readme_audit_example_is_valid(tmp_path: Path) -> None:
    """The README's `[audit]` example loads as shown, its secret file put where the test can write one."""
    import re
    import tomllib

    from gateway.settings import settings_from_mapping

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [
        block for block in re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL) if "[audit]\nretention" in block
    ]
    raw = tomllib.loads(example)
    assert raw["audit"]["webhook_secret_file"] == "/run/secrets/audit-webhook"
    (tmp_path / "audit-webhook").write_text(SECRET + "\n")
    raw["audit"]["webhook_secret_file"] = str(tmp_path / "audit-webhook")
    audit = settings_from_mapping(raw).audit
    assert (audit.retention_days, audit.webhook_timeout) == (365, 10.0)
    assert audit.webhook_key() == SECRET.encode()


def test_tracing_is_off_by_default_and_set_from_file_or_environment(tmp_path: Path) -> None:
    """`[tracing]` is off unless enabled; the environment sets any key, collector headers included (as
    GATEWAY_TRACING__HEADERS__<NAME>, lower-cased like every key)."""
    assert load_settings(_write(tmp_path, GOOD), environ={}).tracing.enabled is False
    text = GOOD + '[tracing]\nenabled = true\nendpoint = "http://otel:4318/v1/traces"\n'
    text += '[tracing.headers]\nx-team = "a"\n'
    env = {"GATEWAY_TRACING__SAMPLE_RATIO": "0.25", "GATEWAY_TRACING__HEADERS__AUTHORIZATION": "Bearer t"}
    tracing = load_settings(_write(tmp_path, text), environ=env).tracing
    assert (tracing.enabled, tracing.endpoint, tracing.sample_ratio) == (True, "http://otel:4318/v1/traces", 0.25)
    assert tracing.headers == {"x-team": "a", "authorization": "Bearer t"}
    assert (tracing.service_name, tracing.trust_incoming) == ("casbin-gateway", "trusted_proxies")


UP = "http://127.0.0.1:9"
BAD_ROUTES = [
    pytest.param({"hosts": ["*.*.example.com"]}, "routes[0].hosts[0]", id="wildcard-two-labels"),
    pytest.param({"hosts": ["api.*.example.com"]}, "routes[0].hosts[0]", id="wildcard-not-leading"),
    pytest.param({"hosts": ["api.example.com:8443"]}, "routes[0].hosts[0]", id="host-with-port"),
    pytest.param({"hosts": ["a.example.com", "A.example.com."]}, "routes[0].hosts[1]", id="host-listed-twice"),
    pytest.param({"org_from": "host"}, "routes[0].org_host", id="host-needs-org-host"),
    pytest.param({"org_from": "default"}, "routes[0].org", id="default-needs-org"),
    pytest.param({"org_from": "default", "org": "Acme"}, "routes[0].org", id="org-not-a-slug"),
    pytest.param({"org": "acme"}, "routes[0].org", id="org-without-default"),
    pytest.param({"org_host": "{org}.example.com"}, "routes[0].org_host", id="org-host-without-host"),
    pytest.param({"org_path": "/orgs/{org}"}, "routes[0].org_path", id="org-path-without-path"),
    pytest.param({"org_from": "host", "org_host": "example.com"}, "routes[0].org_host", id="org-host-no-org"),
    pytest.param({"org_from": "host", "org_host": "{org}"}, "routes[0].org_host", id="org-host-alone"),
    pytest.param({"org_from": "host", "org_host": "x{org}.example.com"}, "routes[0].org_host", id="org-host-part"),
    pytest.param(
        {"org_from": "host", "org_host": "{org}.apps.example.com", "hosts": ["*.example.com"]},
        "routes[0].org_host",
        id="org-host-cannot-fit-hosts",
    ),
    pytest.param(
        {"org_from": "host", "org_host": "{org}.apps.example.com", "hosts": ["api.example.com"]},
        "routes[0].org_host",
        id="org-host-cannot-fit-exact-host",
    ),
    pytest.param({"org_from": "path", "org_path": "/orgs"}, "routes[0].org_path", id="org-path-no-org"),
    pytest.param({"org_from": "path", "org_path": "orgs/{org}"}, "routes[0].org_path", id="org-path-relative"),
    pytest.param({"org_from": "path", "org_path": "/../{org}"}, "routes[0].org_path", id="org-path-dot-segment"),
    pytest.param({"org_from": "path", "org_path": "/{org}/{org}"}, "routes[0].org_path", id="org-path-twice"),
    pytest.param({"org_from": "host", "org_host": "{org}.x.com", "public": True}, "routes[0].org_from", id="public"),
]


@pytest.mark.parametrize(("options", "key"), BAD_ROUTES)
def test_bad_route_host_and_org_options_fail_naming_the_key(options: dict[str, object], key: str) -> None:
    """Hosts and the org options are checked at load: each error names the route's key."""
    from gateway.settings import settings_from_mapping

    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"routes": [{"prefix": "/", "upstream": UP, **options}]})
    assert str(info.value).startswith(f"settings: {key}: "), info.value


def test_a_prefix_may_repeat_on_other_hosts_but_not_on_the_same_host() -> None:
    """(host, prefix) is what must be unique: one prefix with no hosts and on each host is fine, twice on one
    host (as spelled in any case) is refused."""
    from gateway.settings import settings_from_mapping

    fine = [
        {"prefix": "/api", "upstream": UP},
        {"prefix": "/api", "upstream": UP, "hosts": ["a.example.com"]},
        {"prefix": "/api", "upstream": UP, "hosts": ["*.example.com"]},
    ]
    assert len(settings_from_mapping({"routes": fine}).routes) == 3
    twice = [*fine, {"prefix": "/api", "upstream": UP, "hosts": ["b.example.com", "A.example.com"]}]
    with pytest.raises(ConfigError, match=r"routes\[3\]\.prefix: '/api' is configured twice for host 'a.example.com'"):
        settings_from_mapping({"routes": twice})
    with pytest.raises(ConfigError, match=r"routes\[1\]\.prefix: '/api' is configured twice$"):
        settings_from_mapping({"routes": [fine[0], fine[0]]})


PROVIDER = """
[[identity_providers]]
name = "corp"
issuer = "https://sso.corp.example"
client_id = "gateway"
"""
PROVIDER_SECRET = "provider-client-secret-value"


def test_an_identity_providers_secret_comes_from_env_or_file_and_never_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`client_secret_env` names the variable, `client_secret_file` a file (relative to the config file); the
    settings' repr hides the secret, and an error names the key without it."""
    monkeypatch.setenv("CORP_SECRET", PROVIDER_SECRET)
    settings = load_settings(_write(tmp_path, PROVIDER + 'client_secret_env = "CORP_SECRET"\n'), environ={})
    (provider,) = settings.identity_providers
    assert provider.secret() == PROVIDER_SECRET
    assert PROVIDER_SECRET not in repr(settings)
    (tmp_path / "corp.secret").write_text(PROVIDER_SECRET + "\n")
    settings = load_settings(_write(tmp_path, PROVIDER + 'client_secret_file = "corp.secret"\n'), environ={})
    assert settings.identity_providers[0].secret() == PROVIDER_SECRET
    inline = load_settings(_write(tmp_path, PROVIDER + f'client_secret = "{PROVIDER_SECRET}"\n'), environ={})
    assert PROVIDER_SECRET not in repr(inline) and "client_secret=<hidden>" in repr(inline.identity_providers[0])
    monkeypatch.delenv("CORP_SECRET")
    with pytest.raises(ConfigError, match=r"identity_providers\[0\].client_secret_env: CORP_SECRET is not set"):
        load_settings(_write(tmp_path, PROVIDER + 'client_secret_env = "CORP_SECRET"\n'), environ={})


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("", ".client_secret_env: set exactly one"),
        ('client_secret = "s"\nclient_secret_env = "X"\n', ".client_secret_env: set exactly one"),
        ('client_secret = "s"\nalgorithms = ["none"]\n', ".algorithms: 'none'"),
        ('client_secret = "s"\nalgorithms = ["HS256"]\n', ".algorithms: 'HS256'"),
        ('client_secret = "s"\nhosted_domains = ["corp.example"]\n', ".hosted_domains: only for kind = google"),
        ('client_secret = "s"\nname = "Bad Name"\n', ".name: lower-case"),
        ('client_secret = "s"\nemail_domains = ["a@b.example"]\n', ": 'a@b.example' is not a lower-case domain"),
    ],
)
def test_bad_identity_providers_fail_naming_the_key(tmp_path: Path, extra: str, key: str) -> None:
    """A provider needs exactly one secret source; `none` and HS* are refused as ID token algorithms (REQ-B15);
    preset-only keys are refused elsewhere; names are URL-safe; email domains are domains (REQ-B19)."""
    text = PROVIDER.replace('name = "corp"\n', "") if "name =" in extra else PROVIDER
    with pytest.raises(ConfigError, match=re.escape("identity_providers[0]" + key)):
        load_settings(_write(tmp_path, text + extra), environ={})


def test_entra_needs_a_tenant_and_a_multi_tenant_one_an_allow_list(tmp_path: Path) -> None:
    """`kind = "entra"` needs `tenant`; `organizations` or `common` need `allowed_tenants` (REQ-B16)."""
    entra = '[[identity_providers]]\nname = "ms"\nkind = "entra"\nclient_id = "c"\nclient_secret = "s"\n'
    with pytest.raises(ConfigError, match=r"identity_providers\[0\].tenant: required"):
        load_settings(_write(tmp_path, entra), environ={})
    with pytest.raises(ConfigError, match=r"identity_providers\[0\].allowed_tenants: required"):
        load_settings(_write(tmp_path, entra + 'tenant = "organizations"\n'), environ={})
    load_settings(_write(tmp_path, entra + 'tenant = "organizations"\nallowed_tenants = ["t"]\n'), environ={})


def test_the_readme_identity_provider_examples_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `[[identity_providers]]` example of the README (any OIDC, Google, Entra, GitHub) loads as shown, from a
    config file beside its secret file, with the environment variables it names set."""
    import tomllib

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [
        block
        for block in re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL)
        if "[[identity_providers]]" in block
    ]
    assert len(blocks) == 4
    for variable in ("CORP_OIDC_SECRET", "GOOGLE_CLIENT_SECRET", "GITHUB_CLIENT_SECRET"):
        monkeypatch.setenv(variable, "a-client-secret")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "entra-client-secret").write_text("a-client-secret\n")
    loaded = load_settings(_write(tmp_path, "\n".join(blocks)), environ={})
    kinds = [(provider.name, provider.kind, len(provider.memberships)) for provider in loaded.identity_providers]
    assert kinds == [("corp", "oidc", 1), ("google", "google", 1), ("entra", "entra", 1), ("github", "github", 1)]
    assert all(provider.secret() == "a-client-secret" for provider in loaded.identity_providers)
    assert tomllib.loads(blocks[0])["identity_providers"][0]["issuer"] == loaded.identity_providers[0].issuer


ISSUER = """
[[trusted_issuers]]
name = "corp"
issuer = "https://login.corp.example"
audiences = ["api://gateway"]
algorithms = ["RS256"]
"""


def test_a_trusted_issuer_loads_with_its_defaults(tmp_path: Path) -> None:
    """A minimal `[[trusted_issuers]]` table: subject from `sub`, no org claim, no linking, 30 s refetch."""
    settings = load_settings(_write(tmp_path, ISSUER), environ={})
    (trusted,) = settings.trusted_issuers
    assert (trusted.name, trusted.issuer, trusted.audiences, trusted.algorithms) == (
        "corp",
        "https://login.corp.example",
        ("api://gateway",),
        ("RS256",),
    )
    assert (trusted.subject_claim, trusted.org_claim, trusted.link_provider) == ("sub", None, None)
    assert (trusted.leeway_seconds, trusted.min_refetch_seconds, trusted.jwks_url) == (30, 30.0, None)


def _issuer(**changes: object) -> str:
    lines = {
        "name": '"corp"',
        "issuer": '"https://login.corp.example"',
        "audiences": '["api://gateway"]',
        "algorithms": '["RS256"]',
    }
    for name, value in changes.items():
        if value is None:
            del lines[name]
        else:
            lines[name] = str(value)
    return "[[trusted_issuers]]\n" + "\n".join(f"{name} = {value}" for name, value in lines.items())


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param(_issuer(audiences=None), "`audiences`", id="audiences-missing"),
        pytest.param(_issuer(audiences="[]"), "trusted_issuers[0].audiences", id="audiences-empty"),
        pytest.param(_issuer(algorithms=None), "`algorithms`", id="algorithms-missing"),
        pytest.param(_issuer(algorithms="[]"), "trusted_issuers[0].algorithms", id="algorithms-empty"),
        pytest.param(_issuer(algorithms='["none"]'), "trusted_issuers[0].algorithms", id="alg-none"),
        pytest.param(_issuer(algorithms='["RS256", "HS256"]'), "trusted_issuers[0].algorithms", id="alg-hs256"),
        pytest.param(_issuer(name='"Corp:x"'), "trusted_issuers[0].name", id="name-colon"),
        pytest.param(_issuer(issuer='"http://login.corp.example"'), "trusted_issuers[0].issuer", id="http-issuer"),
        pytest.param(_issuer(issuer='"casbin-gateway"', jwks_url='"https://k.example/jwks"'), "issuer", id="own"),
        pytest.param(_issuer(jwks_url='"http://k.example/jwks"'), "trusted_issuers[0].jwks_url", id="http-jwks"),
        pytest.param(_issuer(leeway_seconds=120), "trusted_issuers[0].leeway_seconds", id="leeway"),
        pytest.param(_issuer(min_refetch_seconds=0), "trusted_issuers[0].min_refetch_seconds", id="refetch"),
        pytest.param(_issuer(audience='"x"'), "audience", id="unknown-key"),
        pytest.param(_issuer() + "\n" + _issuer(issuer='"https://b.example"'), "trusted_issuers[1].name", id="twice"),
        pytest.param(_issuer() + "\n" + _issuer(name='"b"'), "trusted_issuers[1].issuer", id="issuer-twice"),
    ],
)
def test_a_bad_trusted_issuer_fails_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Each trusted issuer needs audiences and an asymmetric algorithm list (REQ-B20); errors name the key."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ={})
    assert key in str(info.value)


def test_trusted_issuers_are_not_set_from_the_environment(tmp_path: Path) -> None:
    """Like routes, trusted issuers come from the file only."""
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_ISSUERS"):
        load_settings(_write(tmp_path, GOOD), environ={"GATEWAY_TRUSTED_ISSUERS": "x"})


def test_the_readme_trusted_issuer_example_is_valid() -> None:
    """The README's `[[trusted_issuers]]` example loads as shown."""
    import re
    import tomllib

    from gateway.settings import settings_from_mapping

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"```toml\n(\[\[trusted_issuers\]\].*?)```", readme, flags=re.DOTALL)
    assert example is not None
    (trusted,) = settings_from_mapping(tomllib.loads(example.group(1))).trusted_issuers
    assert (trusted.name, trusted.audiences, trusted.algorithms) == ("corp", ("api://gateway",), ("RS256", "ES256"))
