"""One Settings object (VARSLING_ prefix), checked before the service starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from varsling.crypto import (
    ARGON2_MAX_MEMORY_KIB,
    ARGON2_MAX_PARALLELISM,
    ARGON2_MAX_TIME_COST,
    Argon2Params,
    signing_public_key,
    signing_seed,
)

DEFAULT_SECRETS_FILE = Path("var/secrets.env")

# Each installation secret, with what it protects. Losing the pepper or the
# salt makes every case code stop working, so they are generated once.
SECRET_SETTINGS = {
    "code_pepper": "keys every case code with HMAC before Argon2id",
    "code_salt": "the installation-wide Argon2id salt for case codes",
    "web_secret": "signs the reporter pages' form (CSRF) tokens",
    "signing_key": "is the installation's Ed25519 signing key: it certifies staff public keys "
    "and signs audit checkpoints and reporters' receipts",
    "password_pepper": "keys every staff password with HMAC before Argon2id",
}
_PLACEHOLDERS = {"", "change-me", "changeme", "secret", "placeholder", "xxx", "todo"}
_MIN_SECRET_CHARS = 32
# OWASP's floor for Argon2id (19 MiB); the shipped default is 64 MiB.
MIN_ARGON2_MEMORY_KIB = 19456


class ConfigError(Exception):
    """The settings are not safe to run with; the message says how to fix them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VARSLING_",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production"] = "production"
    database_url: str = "sqlite:///var/varsling.db"
    # PostgreSQL: `varsling migrate` runs as this owner role and grants the role in
    # database_url only what the service needs (audit tables: SELECT and INSERT).
    migration_database_url: SecretStr | None = None
    secrets_file: Path = DEFAULT_SECRETS_FILE

    code_pepper: SecretStr | None = None
    code_salt: SecretStr | None = None
    web_secret: SecretStr | None = None
    signing_key: SecretStr | None = None
    password_pepper: SecretStr | None = None

    # Argon2id cost for passwords and case codes (docs/design.md: 64 MiB, 3 passes, 1 lane).
    # The ceilings are the ones crypto.Argon2Params.decode holds stored strings to.
    argon2_time_cost: int = Field(default=3, ge=1, le=ARGON2_MAX_TIME_COST)
    argon2_memory_kib: int = Field(default=65536, ge=8, le=ARGON2_MAX_MEMORY_KIB)
    argon2_parallelism: int = Field(default=1, ge=1, le=ARGON2_MAX_PARALLELISM)
    # At most this many Argon2id runs at once in a process, each with a reused buffer of
    # argon2_memory_kib (argon2_memory.py); unset: one per usable CPU.
    argon2_concurrency: int | None = Field(default=None, ge=1, le=256)

    max_body_bytes: int = Field(default=1_000_000, ge=1024)

    # A staff session ends this long after login however busy it is (absolute),
    # and after this long without a request (idle).
    session_minutes: int = Field(default=120, ge=1)
    session_idle_minutes: int = Field(default=20, ge=1)
    # Staff with any of these roles must log in with a second factor (TOTP or a
    # recovery code); others may turn it on for themselves.
    two_factor_roles: tuple[Literal["handler", "custodian", "auditor", "admin"], ...] = (
        "custodian",
        "admin",
    )
    reporter_session_minutes: int = Field(default=30, ge=1)

    # Failed case-code logins above this many a minute, across all reporters,
    # slow every further attempt (never per IP: onion users share one).
    code_failures_per_minute: int = Field(default=30, ge=1)
    code_failure_delay_seconds: float = Field(default=2.0, ge=0)

    # Anonymous reports (API and form) and reporters' file uploads a minute, across
    # the whole installation and every replica (never per address): a flood is
    # refused with 429 past these, so it can delay real reports but not bury them.
    submissions_per_minute: int = Field(default=30, ge=1)
    uploads_per_minute: int = Field(default=60, ge=1)

    max_file_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_files_per_report: int = Field(default=10, ge=0)
    # Reprisal protection and retention (docs/design.md).
    # A retaliation case must be acknowledged within this many days, and answered
    # within this many months of the acknowledgement.
    retaliation_acknowledgement_days: int = Field(default=2, ge=1, le=7)
    retaliation_feedback_months: int = Field(default=1, ge=1, le=3)
    # Check-ins ask the reporter about negative consequences this many months
    # after the case was concluded.
    checkin_months: tuple[Annotated[int, Field(ge=1, le=120)], ...] = Field(
        default=(1, 3, 6, 12), max_length=12
    )
    # Closed cases are deleted this many months after closing, unless on hold.
    retention_months: int = Field(default=2, ge=1, le=120)

    # Statistics and compliance figures for auditors hide every count under this
    # (statistics.py), and whatever would let a hidden count be worked back.
    statistics_min_cell: int = Field(default=5, ge=1, le=1000)

    # Unset: on in production (Secure `__Host-` cookie and HSTS), off in development.
    secure_cookies: bool | None = None

    # Notifications to staff by email (notifications/): on when smtp_host is set.
    # `varsling jobs run` delivers them; a mail names only a unit and a kind.
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)  # unset: 587, 465 for tls
    smtp_from: str | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # starttls: upgrade a plain connection; tls: TLS from the first byte; none: in the clear,
    # refused in production unless smtp_allow_plaintext is set too.
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_allow_plaintext: bool = False
    smtp_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    # The address staff log in at (e.g. https://varsling.example.org); mails link to its
    # staff login page. Unset: mails carry no link.
    public_base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")

    @property
    def secure_transport(self) -> bool:
        """Whether the pages are served over TLS only: a Secure `__Host-` cookie and HSTS.

        On unless turned off explicitly (VARSLING_SECURE_COOKIES=false) or in development.
        """
        if self.secure_cookies is not None:
            return self.secure_cookies
        return self.environment == "production"

    @property
    def notifications_enabled(self) -> bool:
        return bool(self.smtp_host)

    @property
    def smtp_port_or_default(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return 465 if self.smtp_tls == "tls" else 587

    @property
    def argon2(self) -> Argon2Params:
        return Argon2Params(
            time_cost=self.argon2_time_cost,
            memory_kib=self.argon2_memory_kib,
            parallelism=self.argon2_parallelism,
        )

    def secret(self, name: str) -> bytes:
        value = getattr(self, name)
        if value is None:
            raise ConfigError(_missing_message(name, self.secrets_file))
        return bytes(value.get_secret_value().encode())

    @property
    def signing_seed(self) -> bytes:
        """The Ed25519 seed behind VARSLING_SIGNING_KEY."""
        return signing_seed(self.secret("signing_key"))

    @property
    def signing_public_key(self) -> bytes:
        return signing_public_key(self.signing_seed)

    def check(self) -> None:
        """Refuse unsafe settings: Argon2id that cannot run, or that is too cheap
        outside development; a missing or placeholder secret outside development."""
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ConfigError(
                "VARSLING_ARGON2_MEMORY_KIB must be at least 8 x VARSLING_ARGON2_PARALLELISM."
            )
        if self.environment != "development" and (
            self.argon2_memory_kib < MIN_ARGON2_MEMORY_KIB or self.argon2_time_cost < 2
        ):
            raise ConfigError(
                f"Argon2id is set too cheap for production: use VARSLING_ARGON2_MEMORY_KIB >= "
                f"{MIN_ARGON2_MEMORY_KIB} and VARSLING_ARGON2_TIME_COST >= 2 (defaults: 65536, 3)."
            )
        self._check_smtp()
        if self.environment == "development":
            for name in SECRET_SETTINGS:
                if getattr(self, name) is None:
                    raise ConfigError(_missing_message(name, self.secrets_file))
            return
        for name in SECRET_SETTINGS:
            value = getattr(self, name)
            if value is None:
                raise ConfigError(_missing_message(name, self.secrets_file))
            text = value.get_secret_value()
            if text.strip().lower() in _PLACEHOLDERS or len(text) < _MIN_SECRET_CHARS:
                raise ConfigError(
                    f"VARSLING_{name.upper()} is a placeholder or shorter than "
                    f"{_MIN_SECRET_CHARS} characters; it {SECRET_SETTINGS[name]}. "
                    f"Make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )

    def _check_smtp(self) -> None:
        if not self.notifications_enabled:
            return
        if not self.smtp_from or "@" not in self.smtp_from:
            raise ConfigError(
                "VARSLING_SMTP_HOST is set (notifications are on), so VARSLING_SMTP_FROM must "
                "be the address mails are sent from, e.g. varsling@example.org."
            )
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ConfigError(
                "Set both VARSLING_SMTP_USERNAME and VARSLING_SMTP_PASSWORD, or neither."
            )
        if (
            self.smtp_tls == "none"
            and self.environment != "development"
            and not self.smtp_allow_plaintext
        ):
            raise ConfigError(
                "VARSLING_SMTP_TLS=none sends mail (and any SMTP password) unencrypted; outside "
                "development it also needs VARSLING_SMTP_ALLOW_PLAINTEXT=true, e.g. for a relay "
                "on the same machine. Otherwise use starttls (the default) or tls."
            )


def _missing_message(name: str, secrets_file: Path) -> str:
    return (
        f"VARSLING_{name.upper()} is not set; it {SECRET_SETTINGS[name]}. "
        f"Set it in the environment or in {secrets_file} (`varsling secrets` generates "
        f"the ones a new database may get), or make one with: "
        f"python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    )


def secrets_file_path() -> Path:
    return Path(os.environ.get("VARSLING_SECRETS_FILE", str(DEFAULT_SECRETS_FILE)))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the secrets file (if it exists)."""
    path = secrets_file_path()
    env_file = path if path.exists() else None
    return Settings(_env_file=env_file, **overrides)
