"""Django settings for Serika Web.

Everything a deployment changes is read from the environment (or an optional `.env` file beside
manage.py) through django-environ; README.md lists each variable with its default.
"""

import re
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from limits import parse_many

from accounts.config import issuer_origin, openid_connect_providers
from serika_web.secret_key import load_or_create_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
# templates/ and static/ are at the top of a checkout; the wheel carries them in
# serika_web/assets/ (see pyproject.toml), which exists only in an installed package.
INSTALLED_ASSETS = Path(__file__).resolve().parent / "assets"
ASSETS_DIR = INSTALLED_ASSETS if INSTALLED_ASSETS.is_dir() else BASE_DIR
# A checkout keeps .env and data/ beside manage.py; an installed package (`pip install .`) has
# no folder of its own for them, so it uses the working directory's.
INSTANCE_DIR = Path.cwd() if INSTALLED_ASSETS.is_dir() else BASE_DIR

env = environ.Env()
environ.Env.read_env(INSTANCE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

# Where the embedded SQLite database, uploads, collected static files and the generated signing
# key live by default.
DATA_DIR = Path(env.str("DATA_DIR", default=str(INSTANCE_DIR / "data")))

# An explicit key wins; without one, a random key is made once in DATA_DIR and reused, so a
# first run (and every management command) works with no secret to invent.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    try:
        SECRET_KEY = load_or_create_secret_key(DATA_DIR)
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"Set SECRET_KEY, or let the app keep a generated one in DATA_DIR: {exc}"
        ) from exc

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "csp",
    "axes",
    # Single sign-on (accounts/): allauth's OpenID Connect provider only; the password login
    # stays Django's own, behind django-axes.
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "accounts",
    "characters",
    "chat",
    # Token usage per member, quotas and rate limits (usage/).
    "usage",
    # Management commands of the site itself (import_starter_character).
    "serika_web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # /healthz and /readyz, answered before Host validation and sessions (serika_web/health.py).
    "serika_web.health.HealthCheckMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    # An id per request for the log lines it causes (serika_web/log_context.py).
    "serika_web.log_context.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # allauth's request context for its sign-in views (single sign-on).
    "allauth.account.middleware.AccountMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "serika_web.urls"
ASGI_APPLICATION = "serika_web.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [ASSETS_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.context_processors.serika",
                "accounts.context_processors.accounts",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'serika.sqlite3'}"),
}
if "DATABASE_URL" not in env:
    # The default SQLite file's folder, so that a first `migrate` needs no `mkdir data`.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Streaming flushes write while pages read: WAL lets readers go on during a write, the busy
    # timeout waits for the lock instead of failing, and IMMEDIATE transactions take the write lock
    # up front so two writers never deadlock upgrading a read lock ("database is locked").
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Keep the connection: every ORM call from async code would otherwise open (and run the
    # PRAGMAs on) a fresh one, which cost a quarter of the relay's CPU under load.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    # One writer at a time: the chat's database work stays on Channels' one shared thread.
    DATABASE_THREADS = 0
else:
    # A bounded pool of connections per process (Django's psycopg pool). Without it every
    # concurrent request has a thread, and every thread its own connection: a burst of page
    # loads opened more than PostgreSQL's max_connections (100 by default) and failed. With it,
    # a request borrows a connection and gives it back when it ends, as does each ORM call of a
    # websocket; when all are busy it waits up to DATABASE_POOL_TIMEOUT, then gets a 503 page.
    # 20 per process lets four processes (80) fit the default 100, with room for admin work.
    DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=20)
    # Long enough for a burst to drain: 500 members opening chats at once on two processes
    # (2 cores) took 30 s, and a 5 s wait turned a fifth of them into 503s (bench/open_chats.py).
    DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=30.0)
    # The chat's database calls run on this many threads per process (`chat.database_threads`):
    # each mostly waits for PostgreSQL, and on one thread a burst of sends queued behind those
    # waits. Each thread borrows a pooled connection per call; the rest of the pool serves pages
    # (by default at least half of it).
    DATABASE_THREADS = env.int("DATABASE_THREADS", default=min(4, DATABASE_POOL_MAX_SIZE // 2))
    if not 0 <= DATABASE_THREADS < DATABASE_POOL_MAX_SIZE:
        raise ImproperlyConfigured(
            "DATABASE_THREADS must be at least 0 and less than DATABASE_POOL_MAX_SIZE "
            f"({DATABASE_POOL_MAX_SIZE}), so that pages still get connections."
        )
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "pool": {
            "min_size": min(2, DATABASE_POOL_MAX_SIZE),
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT,
        },
    }
    # Pooling requires it: connections go back to the pool, not kept per thread.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool checks a connection before lending it: one dropped by a database restart is
    # replaced instead of failing the request that drew it.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer delivers each event as Redis publishes it. The list-based core
            # layer makes every socket of a process race for one blocking pop, and an event
            # could wait up to that pop's 5 s timeout (seen as late "done" and Stop frames).
            # Delivery is at most once either way: a dropped delta is repaired by a resync from
            # the generating process, so the layer never has to be lossless.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_connect_timeout": 5}],
                "prefix": env.str("CHANNEL_PREFIX", default="asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            # Channels' own: events reach this process's sockets without any layer
            # (chat.events), so only control messages and session ends pass through it.
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000, "expiry": 30},
        }
    }

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling (our login page and the admin's): after this many failed logins for one
# username, or from one client address, that username or address is refused for the cool-off,
# even with the right password. Attempts are database rows, so every process sees them.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Our page (HTTP 429 with Retry-After) says when to try again and whom to ask.
AXES_LOCKOUT_CALLABLE = "serika_web.security.lockout_response"
# A successful login forgets that account's earlier failures.
AXES_RESET_ON_SUCCESS = True
# The client address is REMOTE_ADDR: behind a proxy, daphne's --proxy-headers puts the client's
# own address there (from X-Forwarded-For), so nothing spoofable is read here.
AXES_CLIENT_IP_CALLABLE = "serika_web.security.client_ip"
# Failed logins are logged with their username and address (axes masks both by default) so an
# admin can tell who was targeted from where; passwords are never part of axes' log lines.
AXES_SENSITIVE_PARAMETERS: list[str] = []
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Bringing people in (accounts/; README "Bringing people in") ---------------------------
# Who may make an account by themselves: `invite` (only with an invitation link from the Members
# page), `open` (anyone, at /signup/), `approval` (anyone, but the account stays pending until
# staff approve it) or `closed` (nobody: staff add members in the admin; links refused too).
# Single sign-on's first logins follow the same rule (accounts/signup.py).
SIGNUP = env.str("SIGNUP", default="invite")
if SIGNUP not in {"closed", "invite", "open", "approval"}:
    raise ImproperlyConfigured(f"SIGNUP must be closed, invite, open or approval, not {SIGNUP!r}")
# Days an invitation link stays valid unless staff choose otherwise when making it.
INVITATION_DAYS = env.int("INVITATION_DAYS", default=7)
if not 1 <= INVITATION_DAYS <= 365:
    raise ImproperlyConfigured(f"INVITATION_DAYS must be 1 to 365, not {INVITATION_DAYS}")
# How mail leaves (password reset links): smtp://user:pass@host:587, smtp+tls://…, smtp+ssl://…
# (django-environ's email URL). Empty: no e-mail, and so no password reset.
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    # EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and
    # EMAIL_USE_TLS/SSL from the URL (django-environ's documented idiom); a wrong scheme stops
    # the start with ImproperlyConfigured.
    vars().update(env.email_url("EMAIL_URL"))
    # Django's default is to wait for a silent mail server forever; the reset page would hang.
    EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Serika Web <webmaster@localhost>")

# --- Single sign-on (OpenID Connect; accounts/, README "Single sign-on") --------------------
# Off while OIDC_ISSUER_URL is empty. The issuer's /.well-known/openid-configuration gives the
# endpoints. A member is bound to the provider's `sub` (under OIDC_PROVIDER_ID), never to an
# email address.
OIDC_ISSUER_URL = env.str("OIDC_ISSUER_URL", default="")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
# This site is a confidential client: the provider gives it a secret.
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
# Separated by commas or spaces.
OIDC_SCOPES = [
    scope
    for item in env.list("OIDC_SCOPES", default=["openid", "profile", "email"])
    for scope in item.split()
]
OIDC_PKCE = env.bool("OIDC_PKCE", default=True)
# The button reads "Sign in with <OIDC_NAME>".
OIDC_NAME = env.str("OIDC_NAME", default="SSO")
# Part of the callback URL and of each SSO member's identity: give a new one when switching to
# another provider, whose `sub`s could otherwise match the old provider's members.
OIDC_PROVIDER_ID = env.str("OIDC_PROVIDER_ID", default="sso")
# The claim listing the member's groups ("groups", or a dotted path: "realm_access.roles").
# Empty: no group mapping.
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="")
# Provider groups whose members may sign in (empty: anyone the provider signs in); members of
# OIDC_ADMIN_GROUPS always may. (Both comma-separated; spaces around a name are dropped.)
OIDC_ALLOWED_GROUPS = [g.strip() for g in env.list("OIDC_ALLOWED_GROUPS", default=[]) if g.strip()]
# Provider groups whose members are staff; an SSO member outside them loses staff at sign-in.
OIDC_ADMIN_GROUPS = [g.strip() for g in env.list("OIDC_ADMIN_GROUPS", default=[]) if g.strip()]
# Single sign-on only: the login page shows just its button and password logins are refused
# (the admin's too).
OIDC_ONLY = env.bool("OIDC_ONLY", default=False)
if OIDC_ISSUER_URL and not (OIDC_CLIENT_ID and OIDC_CLIENT_SECRET):
    raise ImproperlyConfigured("OIDC_ISSUER_URL is set: set OIDC_CLIENT_ID and OIDC_CLIENT_SECRET")
if OIDC_ISSUER_URL and "openid" not in OIDC_SCOPES:
    raise ImproperlyConfigured(f"OIDC_SCOPES must include openid, not {OIDC_SCOPES!r}")
if not re.fullmatch(r"[A-Za-z0-9_-]+", OIDC_PROVIDER_ID):
    raise ImproperlyConfigured("OIDC_PROVIDER_ID may hold only letters, digits, - and _")
if (OIDC_ALLOWED_GROUPS or OIDC_ADMIN_GROUPS) and not OIDC_GROUPS_CLAIM:
    raise ImproperlyConfigured("OIDC_ALLOWED_GROUPS and OIDC_ADMIN_GROUPS need OIDC_GROUPS_CLAIM")
if OIDC_ONLY and not OIDC_ISSUER_URL:
    raise ImproperlyConfigured("OIDC_ONLY needs OIDC_ISSUER_URL: nobody could log in")
SOCIALACCOUNT_PROVIDERS = openid_connect_providers(
    issuer_url=OIDC_ISSUER_URL,
    provider_id=OIDC_PROVIDER_ID,
    name=OIDC_NAME,
    client_id=OIDC_CLIENT_ID,
    secret=OIDC_CLIENT_SECRET,
    scopes=OIDC_SCOPES,
    pkce=OIDC_PKCE,
)
# Sign-in rules (groups, staff, refusals) and the session's backend: accounts/adapter.py.
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
# Never log into an existing account because the provider reports its email address (an
# account is its `sub`'s), and never ask for an email: e-mail addresses identify nobody here.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
ACCOUNT_UNIQUE_EMAIL = False
ACCOUNT_EMAIL_VERIFICATION = "none"
SOCIALACCOUNT_EMAIL_VERIFICATION = "none"
# A first sign-in makes the member at once (no allauth sign-up form, which is not served).
SOCIALACCOUNT_AUTO_SIGNUP = True
# The provider's tokens are used once, at sign-in, and not kept.
SOCIALACCOUNT_STORE_TOKENS = False
# The SSO button's POST is redirected to the provider: the CSP's form-action names it.
SSO_FORM_ACTION = [issuer_origin(OIDC_ISSUER_URL)] if OIDC_ISSUER_URL else []

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static files and uploads ----------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [ASSETS_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed files with far-future caching in production; plain files while
        # developing so a changed script shows on reload without collectstatic.
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "servestatic.storage.CompressedManifestStaticFilesStorage",
    },
}
# Request bodies larger than this are refused (413) while they arrive, before daphne buffers
# them (serika_web/body_limit.py, installed by serika_web.serve); above the largest card upload.
HTTP_MAX_BODY_BYTES = env.int("HTTP_MAX_BODY_BYTES", default=32 * 1024 * 1024)
# Uploaded avatars and cards are read into memory; bound them.
# Error pages (DEBUG) and error e-mails hide settings that may hold a password.
DEFAULT_EXCEPTION_REPORTER_FILTER = "serika_web.security.ExceptionReporterFilter"
DATA_UPLOAD_MAX_MEMORY_SIZE = 25 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 25 * 1024 * 1024
# The lorebook editor posts up to 14 fields per entry, and a card may have 1,000 entries
# (Django's default of 1,000 fields would refuse a book of ~70).
DATA_UPLOAD_MAX_NUMBER_FIELDS = 15_000

# --- Security -------------------------------------------------------------------------------
# Served over HTTPS (directly or behind a TLS proxy): secure cookies, HSTS and a redirect.
SECURE_HTTPS = env.bool("SECURE_HTTPS", default=not DEBUG)
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = SECURE_HTTPS
# The SSO callback URL given to the provider is https then, even if a proxy header is missing.
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if SECURE_HTTPS else "http"
# Probes may use plain HTTP to a process behind the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if SECURE_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
# The header only consents to preloading; nothing is submitted to browsers' lists by itself.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=SECURE_HSTS_SECONDS > 0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True

# Scripts come only from our static files (no inline script, no eval); model text can never run.
# Images only from ourselves or data: URLs, so a model's remote image cannot leak the prompt.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF, *SSO_FORM_ACTION],
        "frame-ancestors": [NONE],
    },
}

# --- The Serika API -------------------------------------------------------------------------
SERIKA_API_KEY = env.str("SERIKA_API_KEY", default="")
SERIKA_BASE_URL = env.str("SERIKA_BASE_URL", default="https://api.serika.dev/api/openai/v1")
SERIKA_DEFAULT_MODEL = env.str("SERIKA_DEFAULT_MODEL", default="openai/gpt-4o-mini")
# The models the chat settings offer: empty = what the upstream's /models lists (cached for
# SERIKA_MODELS_TTL seconds); set, only these (in this order), also when /models fails.
SERIKA_MODELS = env.list("SERIKA_MODELS", default=[])
SERIKA_MODELS_TTL = env.float("SERIKA_MODELS_TTL", default=300.0)
# After a conversation's first reply, one short request writes its title (chat/titles.py), with
# SERIKA_TITLE_MODEL or, when empty, the conversation's own model.
SERIKA_AUTO_TITLES = env.bool("SERIKA_AUTO_TITLES", default=True)
SERIKA_TITLE_MODEL = env.str("SERIKA_TITLE_MODEL", default="")
SERIKA_CONNECT_TIMEOUT = env.float("SERIKA_CONNECT_TIMEOUT", default=10.0)
# No byte at all (keep-alive comments count) for this long ends the reply as stalled.
SERIKA_STREAM_IDLE_TIMEOUT = env.float("SERIKA_STREAM_IDLE_TIMEOUT", default=60.0)
# Hard caps that stop a runaway stream, keeping what arrived.
SERIKA_STREAM_MAX_SECONDS = env.float("SERIKA_STREAM_MAX_SECONDS", default=600.0)
SERIKA_STREAM_MAX_CHARS = env.int("SERIKA_STREAM_MAX_CHARS", default=200_000)
# How many tokens of prompt a model takes: older turns are left out (and the user told) beyond it.
SERIKA_CONTEXT_TOKENS = env.int("SERIKA_CONTEXT_TOKENS", default=16_000)
# Per-model budgets, e.g. "openai/gpt-4o-mini=128000,mistral/small=32000".
SERIKA_MODEL_CONTEXT_TOKENS = {
    model: int(tokens)
    for model, tokens in env.dict("SERIKA_MODEL_CONTEXT_TOKENS", default={}).items()
}

# --- Chat -----------------------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=32_000)
# Websocket frames larger than this are refused before JSON parsing.
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=256 * 1024)
# A streaming reply's partial text reaches the database at most this often.
CHAT_FLUSH_INTERVAL = env.float("CHAT_FLUSH_INTERVAL", default=1.0)
# Each process marks its live replies this often; a streaming reply not marked for three
# intervals belongs to a dead process and is swept to "interrupted".
CHAT_HEARTBEAT_INTERVAL = env.float("CHAT_HEARTBEAT_INTERVAL", default=5.0)
# While the database is unreachable a generation keeps its reply's text in memory and retries
# its saves for this long; a reply still unsaved then is lost after its last flush.
CHAT_SAVE_RETRY_SECONDS = env.float("CHAT_SAVE_RETRY_SECONDS", default=300.0)
# On SIGTERM, how long streaming replies may go on before they are saved as interrupted.
SHUTDOWN_GRACE_SECONDS = env.float("SHUTDOWN_GRACE_SECONDS", default=20.0)
# Replies one member may have streaming at once, across all their conversations and processes.
CHAT_MAX_CONCURRENT_PER_USER = env.int("CHAT_MAX_CONCURRENT_PER_USER", default=3)
# Seconds all lorebook key searches of one send may take together. A card's regex keys can
# backtrack for their whole 50 ms cap each; with thousands of entries that was minutes per send.
# Entries not checked in time do not fire, and the reply says the lorebook was partly scanned.
CHAT_LOREBOOK_BUDGET_SECONDS = env.float("CHAT_LOREBOOK_BUDGET_SECONDS", default=0.5)
# How many of the latest messages lorebook keys are looked for in, when a card's lorebook sets no
# `scan_depth` of its own: SillyTavern's "Scan Depth" (`world_info_depth`) is 2.
CHAT_LOREBOOK_SCAN_DEPTH = env.int("CHAT_LOREBOOK_SCAN_DEPTH", default=2)
if CHAT_LOREBOOK_SCAN_DEPTH < 0:
    raise ImproperlyConfigured(
        f"CHAT_LOREBOOK_SCAN_DEPTH must be 0 or more, not {CHAT_LOREBOOK_SCAN_DEPTH}"
    )

# --- Quotas and rate limits (usage/; README "Usage and quotas") ------------------------------
# Default quotas of every member, in tokens (prompt + reply) per UTC day and calendar month, and
# replies started per minute; 0: no limit. Staff set per-member and per-group quotas in the
# admin (the lowest that applies to a member wins; these hold where none is set).
QUOTA_TOKENS_PER_DAY = env.int("QUOTA_TOKENS_PER_DAY", default=0)
QUOTA_TOKENS_PER_MONTH = env.int("QUOTA_TOKENS_PER_MONTH", default=0)
QUOTA_REQUESTS_PER_MINUTE = env.int("QUOTA_REQUESTS_PER_MINUTE", default=0)
# Staff are held to no quota (their usage is still counted).
QUOTA_EXEMPT_STAFF = env.bool("QUOTA_EXEMPT_STAFF", default=True)
# Tokens reserved for the reply of a chat that sets no maximum reply length, until the real
# figure replaces them at its end.
QUOTA_REPLY_TOKENS = env.int("QUOTA_REPLY_TOKENS", default=1024)
# Flood guards per member ("limits" notation: "30/minute", "10/minute;100/hour"; empty: none),
# shared by all processes through Redis when REDIS_URL is set: frames that may start a reply
# (refused with `rate_limited`), and card files imported (HTTP 429).
RATE_LIMIT_SENDS = env.str("RATE_LIMIT_SENDS", default="30/minute")
RATE_LIMIT_CARD_IMPORTS = env.str("RATE_LIMIT_CARD_IMPORTS", default="100/hour")
# Per client address: account sign-ups (/signup/) and password-reset requests, each of which
# makes an account or sends an e-mail (HTTP 429).
RATE_LIMIT_ACCOUNT_REQUESTS = env.str("RATE_LIMIT_ACCOUNT_REQUESTS", default="10/hour")
for _name, _spec in (
    ("RATE_LIMIT_SENDS", RATE_LIMIT_SENDS),
    ("RATE_LIMIT_CARD_IMPORTS", RATE_LIMIT_CARD_IMPORTS),
    ("RATE_LIMIT_ACCOUNT_REQUESTS", RATE_LIMIT_ACCOUNT_REQUESTS),
):
    try:
        if _spec.strip():
            parse_many(_spec)
    except ValueError:
        raise ImproperlyConfigured(
            f"{_name} must read like 30/minute or 10/minute;100/hour, not {_spec!r}"
        ) from None

# Prometheus metrics at /metrics for requests with `Authorization: Bearer <token>`; unset: 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# `text` (the default) or `json`: one JSON object per line, with the request, member,
# conversation and reply ids where known (serika_web/log_context.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "serika_web.log_context.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user_id)s "
            "%(conversation_id)s %(reply_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # httpx logs every request line at INFO; ours say what matters.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# --- Characters -----------------------------------------------------------------------------
# Members may import cards and create characters of their own (always private to them) and edit
# them; false leaves characters to staff (members keep, export and delete what they have).
CHARACTERS_MEMBERS_MAY_IMPORT = env.bool("CHARACTERS_MEMBERS_MAY_IMPORT", default=True)
