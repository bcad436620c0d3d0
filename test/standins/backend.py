#!/usr/bin/env python3
"""Stand-in for ghcr.io/get-convex/convex-backend, for convex-ops' tests.

The real image cannot be pulled on the test machines, so this small server follows the
parts of its documented contract that convex-ops configures or depends on (see
/work/shared/reference/convex-self-hosting-facts.md):

  * instance name and secret: environment, then /convex/data/credentials/instance_{name,secret},
    then a default; whichever is used is written back to that file;
  * POSTGRES_URL handling, with the real backend's exact error messages and TLS rules
    (verify the server certificate unless DO_NOT_REQUIRE_SSL), else SQLite;
  * port 3210: /version, /instance_name, /instance_version, /, the sync websocket,
    HTTP actions under /http/, and a tiny document API guarded by the admin key;
  * port 3211: a proxy to 3210's /http/ with at most 4 requests in flight;
  * test-only, not part of Convex's contract: an HTTP action asked to ?hold=NAME waits until
    POST /__standin/holds/NAME/release, and GET /__standin/holds/NAME tells how many such
    actions are held now and at most at once, and how many requests wait for a site proxy slot,
    so a test counts concurrency where it happens instead of timing it;
  * file storage: with AWS_REGION and the five S3_STORAGE_*_BUCKET variables all set, files go
    to S3 (SigV4, S3_ENDPOINT_URL, AWS_S3_FORCE_PATH_STYLE, credentials from the AWS variables);
    with only some of them set, a warning naming the missing ones and local storage, as the real
    image does; POST /api/storage/upload (admin key) stores a file and answers its storageId,
    GET /api/storage/<storageId> serves it; S3 failures are logged with the AWS error code;
  * fatal configuration errors exit non-zero (compose's restart policy restarts it);
  * SIGINT/SIGTERM stop it promptly with exit code 0.

Only the Python stdlib and Debian's python3-psycopg2 are used (no pip on the droplets).

Behaviour is fixed at image build time through environment variables baked by the
Dockerfile: CONVEX_STANDIN_VERSION (what /version reports) and CONVEX_STANDIN_BEHAVIOUR:
  v1       database schema version 1;
  v2       database schema version 2 (running it on a v1 database performs "Migration 1/1");
  broken      like v2, but /version always answers 500, so the compose health check fails;
  fragile     like v2, but /version answers 500 while /convex/data/FAIL_HERE exists;
  fragile-v1  like v1 (no migration from a v1 database), failing as fragile does.

On start it migrates the database's metadata version forward as the real model::migrations
does, in its words: "Migrating to N", "Migrated N", then "db metadata version up to date at N";
an older binary on a newer database logs the real warning and keeps running.

Usage:
  backend.py                       run the backend
  backend.py --generate-admin-key  print <instance_name>|<hex> (what generate_admin_key.sh runs)
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("CONVEX_STANDIN_VERSION", "unknown")
BEHAVIOUR = os.environ.get("CONVEX_STANDIN_BEHAVIOUR", "v2")
# The schema ("database version") this binary writes; only v1 and fragile-v1 are behind.
DATABASE_VERSION = 1 if BEHAVIOUR in ("v1", "fragile-v1") else 2

# Overridable only so the script can be exercised outside a container; the image uses defaults.
DATA_DIR = os.environ.get("CONVEX_STANDIN_DATA_DIR", "/convex/data")
API_PORT = int(os.environ.get("CONVEX_STANDIN_API_PORT", "3210"))
SITE_PROXY_PORT = int(os.environ.get("CONVEX_STANDIN_SITE_PROXY_PORT", "3211"))
CREDENTIALS_DIR = os.path.join(DATA_DIR, "credentials")
STORAGE_DIR = os.path.join(DATA_DIR, "storage")
SQLITE_PATH = os.path.join(DATA_DIR, "db.sqlite3")
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_INSTANCE_NAME = "convex-self-hosted"

# The real site proxy allows at most 4 requests in flight; more wait for a slot.
SITE_PROXY_MAX_IN_FLIGHT = 4

# A held HTTP action gives up after this long, so a test that dies never leaves threads behind.
HOLD_LIMIT_SECONDS = 60

DOCUMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SECRET_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Fatal(Exception):
    """A configuration or start-up error: logged as one ERROR line, then exit 1."""


# --------------------------------------------------------------------------- logging


def log(level, message):
    # Same shape as the real backend's lines ("<RFC 3339 UTC> INFO ..."), so that operators'
    # greps (and convex-ops' checks) work on both. Errors go to stderr, the rest to stdout.
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    stream = sys.stderr if level in ("ERROR", "WARN") else sys.stdout
    print(f"{stamp} {level} {message}", file=stream, flush=True)


# --------------------------------------------------------------------------- instance name and secret


def _read_credential(kind):
    try:
        with open(os.path.join(CREDENTIALS_DIR, f"instance_{kind}"), encoding="utf-8") as f:
            value = f.read().strip()
        return value or None
    except FileNotFoundError:
        return None


def _write_credential(kind, value):
    # Written back on every start, as the real backend does, so that a later start without
    # the environment variable (or generate_admin_key.sh) finds the same value.
    os.makedirs(CREDENTIALS_DIR, exist_ok=True)
    path = os.path.join(CREDENTIALS_DIR, f"instance_{kind}")
    if _read_credential(kind) == value:
        return
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    os.replace(tmp, path)


def lookup_instance_name():
    return os.environ.get("INSTANCE_NAME") or _read_credential("name")


def lookup_instance_secret():
    return os.environ.get("INSTANCE_SECRET") or _read_credential("secret")


def check_secret(secret):
    # The real secret is 32 bytes given as hex (`openssl rand -hex 32`); a quoted or truncated
    # value from a badly written .env must fail loudly rather than silently change every key.
    if not SECRET_HEX.match(secret):
        raise Fatal("INSTANCE_SECRET must be 32 bytes of hex (64 hex digits), as `openssl rand -hex 32` prints")


def resolve_credentials():
    name = lookup_instance_name() or DEFAULT_INSTANCE_NAME
    secret = lookup_instance_secret() or secrets.token_hex(32)
    check_secret(secret)
    _write_credential("name", name)
    _write_credential("secret", secret)
    return name, secret


def admin_key(name, secret):
    # The real key is an encrypted token; an HMAC of the name under the secret has the
    # properties the tests need: another secret or another name gives another key.
    digest = hmac.new(bytes.fromhex(secret), name.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{name}|{digest}"


def generate_admin_key_main():
    """What ./generate_admin_key.sh runs: same lookup as the server, but never writes."""
    name = lookup_instance_name() or DEFAULT_INSTANCE_NAME
    secret = lookup_instance_secret()
    if not secret:
        print(
            "error: no INSTANCE_SECRET in the environment and no "
            f"{CREDENTIALS_DIR}/instance_secret yet (start the backend once first)",
            file=sys.stderr,
        )
        return 1
    try:
        check_secret(secret)
    except Fatal as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(admin_key(name, secret))
    return 0


# --------------------------------------------------------------------------- configuration


def check_origins():
    for var in ("CONVEX_CLOUD_ORIGIN", "CONVEX_SITE_ORIGIN"):
        value = os.environ.get(var)
        if value is not None and not (value.startswith("http://") or value.startswith("https://")):
            raise Fatal(f"{var} must start with http:// or https://, got {value!r}")


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def postgres_args(cluster_url, instance_name):
    """Mirror of persistence_args_from_cluster_url(): checks and database name.

    Returns (connection kwargs without sslmode, sslmode requested by the URL or None).
    """
    try:
        url = urllib.parse.urlsplit(cluster_url)
        port = url.port or 5432
    except ValueError as e:
        raise Fatal(f"invalid POSTGRES_URL: {e}") from None
    if url.scheme not in ("postgres", "postgresql"):
        raise Fatal(f"invalid POSTGRES_URL: scheme must be postgres:// or postgresql://, got {url.scheme!r}")
    # Same order and wording as the real backend. The URL itself is never printed: it has a password.
    if not url.username:
        raise Fatal("cluster url username must be set")
    if url.path not in ("", "/"):
        raise Fatal(f"cluster url already contains db name: {url.path}")
    query = urllib.parse.parse_qs(url.query)
    sslmode = query.get("sslmode", [None])[-1]
    kwargs = {
        "host": url.hostname or "localhost",
        "port": port,
        "user": urllib.parse.unquote(url.username),
        "password": urllib.parse.unquote(url.password or ""),
        "dbname": instance_name.replace("-", "_"),
        "connect_timeout": 10,
        "application_name": "convex-backend-standin",
        # libpq would otherwise try GSSAPI first; the real backend never does.
        "gssencmode": "disable",
    }
    return kwargs, sslmode


def ca_bundle():
    """System roots plus PG_CA_FILE, as one PEM file for libpq's sslrootcert.

    The real backend verifies with rustls against the system roots plus PG_CA_FILE. libpq 15
    (bookworm) has no `sslrootcert=system`, so both are concatenated into a temporary bundle.
    """
    parts = []
    for path in (SYSTEM_CA_BUNDLE, os.environ.get("PG_CA_FILE")):
        if not path:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
        except OSError as e:
            raise Fatal(f"cannot read CA file {path}: {e}") from None
    fd, bundle = tempfile.mkstemp(prefix="convex-pg-ca-", suffix=".pem")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return bundle


def describe_pg_error(error):
    """One line in the words the real backend uses for the failures operators hit."""
    text = " ".join(str(error).split())
    lowered = text.lower()
    if "certificate verify failed" in lowered:
        return f"error performing TLS handshake: invalid peer certificate: UnknownIssuer ({text})"
    if "does not match host name" in lowered:
        return f"error performing TLS handshake: invalid peer certificate: NotValidForName ({text})"
    return text


class Postgres:
    """PostgreSQL persistence with the real backend's TLS semantics.

    tokio-postgres + rustls verify every TLS connection they make. So:
      sslmode=disable           plain TCP;
      prefer (the default)      TLS with verification if the server offers it, plain if not.
                                A snakeoil certificate therefore still fails, which is why the
                                guide needs both DO_NOT_REQUIRE_SSL and ?sslmode=disable;
      require/verify-*          TLS with verification, or fail.
    Without DO_NOT_REQUIRE_SSL the backend appends sslmode=require, overriding the URL's own.
    """

    placeholder = "%s"

    def __init__(self, cluster_url, instance_name):
        self.kwargs, url_sslmode = postgres_args(cluster_url, instance_name)
        import psycopg2  # Debian's python3-psycopg2; imported here so SQLite mode needs nothing.

        self._psycopg2 = psycopg2
        self.db_name = self.kwargs["dbname"]
        if env_flag("DO_NOT_REQUIRE_SSL"):
            self.sslmode = url_sslmode or "prefer"
        else:
            self.sslmode = "require"
        self._bundle = None if self.sslmode == "disable" else ca_bundle()
        self._plain_fallback_ok = self.sslmode in ("prefer", "allow")
        self._use_plain = self.sslmode == "disable"

    def connect(self):
        if self._use_plain:
            return self._psycopg2.connect(sslmode="disable", **self.kwargs)
        try:
            return self._psycopg2.connect(sslmode="verify-full", sslrootcert=self._bundle, **self.kwargs)
        except self._psycopg2.OperationalError as e:
            if self._plain_fallback_ok and "server does not support SSL" in str(e):
                # "prefer": the server offers no TLS, so plain TCP it is (and stays).
                self._use_plain = True
                return self._psycopg2.connect(sslmode="disable", **self.kwargs)
            raise

    def open_checked(self):
        try:
            conn = self.connect()
        except self._psycopg2.Error as e:
            raise Fatal(f"Failed to connect to Postgres database {self.db_name}: {describe_pg_error(e)}") from None
        conn.autocommit = True
        return conn

    def describe(self):
        return f"Postgres database: {self.db_name}"


class Sqlite:
    placeholder = "?"

    def __init__(self):
        os.makedirs(DATA_DIR, exist_ok=True)
        self.db_name = SQLITE_PATH

    def open_checked(self):
        try:
            conn = sqlite3.connect(SQLITE_PATH, timeout=10, isolation_level=None)
        except sqlite3.Error as e:
            raise Fatal(f"cannot open SQLite database {SQLITE_PATH}: {e}") from None
        return conn

    def describe(self):
        return f"SQLite database: {SQLITE_PATH}"


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents (id TEXT PRIMARY KEY, ts BIGINT NOT NULL, json_value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS indexes (index_id TEXT NOT NULL, key TEXT NOT NULL, ts BIGINT NOT NULL, "
    "document_id TEXT, PRIMARY KEY (index_id, key))",
    "CREATE TABLE IF NOT EXISTS persistence_globals (key TEXT PRIMARY KEY, json_value TEXT NOT NULL)",
)
VERSION_KEY = "database_version"


class Store:
    """Documents in the database (the source of truth) and copies under /convex/data/storage.

    A connection per operation: the load is tiny, and it means a database restored or
    restarted underneath a running backend is simply picked up by the next request.
    """

    def __init__(self, backend):
        self.backend = backend
        self.sql_param = backend.placeholder

    def _run(self, sql, params=(), fetch=False):
        conn = self.backend.open_checked()
        try:
            cur = conn.cursor()
            cur.execute(sql.replace("%s", self.sql_param), params)
            return cur.fetchall() if fetch else None
        finally:
            conn.close()

    def initialise(self):
        """Create the tables and run "migrations", as the real backend does on start."""
        conn = self.backend.open_checked()
        try:
            cur = conn.cursor()
            for statement in SCHEMA:
                cur.execute(statement)
            p = self.sql_param
            cur.execute(f"SELECT json_value FROM persistence_globals WHERE key = {p}", (VERSION_KEY,))
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    f"INSERT INTO persistence_globals (key, json_value) VALUES ({p}, {p})",
                    (VERSION_KEY, json.dumps(DATABASE_VERSION)),
                )
                log("INFO", f"Initialized database at version {DATABASE_VERSION}")
                return
            persisted = int(json.loads(row[0]))
            if persisted < DATABASE_VERSION:
                total = DATABASE_VERSION - persisted
                for step, to_version in enumerate(range(persisted + 1, DATABASE_VERSION + 1), start=1):
                    log("INFO", f"Migrating to {to_version}")
                    log("WARN", f"Executing Migration {step}/{total}. Wait for log line 'Migrated {to_version}'")
                    cur.execute(
                        f"UPDATE persistence_globals SET json_value = {p} WHERE key = {p}",
                        (json.dumps(to_version), VERSION_KEY),
                    )
                    log("INFO", f"Migrated {to_version}")
                log("INFO", f"db metadata version up to date at {DATABASE_VERSION}")
            elif persisted == DATABASE_VERSION:
                log("INFO", f"db metadata version up to date at {DATABASE_VERSION}")
            else:
                # The real backend warns and carries on (so a rollback starts without a restore).
                log("WARN", f"persisted db metadata version is ahead at {persisted}, this binary is at {DATABASE_VERSION}")
        finally:
            conn.close()

    def put(self, doc_id, value):
        body = json.dumps(value, separators=(",", ":"), sort_keys=True)
        ts = time.time_ns()
        self._run(
            "INSERT INTO documents (id, ts, json_value) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts, json_value = EXCLUDED.json_value",
            (doc_id, ts, body),
        )
        # The copy under the data volume is what a file-level backup sees (storage/<id>.json).
        os.makedirs(STORAGE_DIR, exist_ok=True)
        path = os.path.join(STORAGE_DIR, f"{doc_id}.json")
        with open(f"{path}.tmp", "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(f"{path}.tmp", path)
        return ts

    def get(self, doc_id):
        rows = self._run("SELECT json_value, ts FROM documents WHERE id = %s", (doc_id,), fetch=True)
        return (json.loads(rows[0][0]), rows[0][1]) if rows else None

    def delete(self, doc_id):
        rows = self._run("DELETE FROM documents WHERE id = %s RETURNING id", (doc_id,), fetch=True)
        try:
            os.remove(os.path.join(STORAGE_DIR, f"{doc_id}.json"))
        except FileNotFoundError:
            pass
        return bool(rows)


# --------------------------------------------------------------------------- file storage

S3_REQUIRED = [
    "AWS_REGION",
    "S3_STORAGE_EXPORTS_BUCKET",
    "S3_STORAGE_SNAPSHOT_IMPORTS_BUCKET",
    "S3_STORAGE_MODULES_BUCKET",
    "S3_STORAGE_FILES_BUCKET",
    "S3_STORAGE_SEARCH_BUCKET",
]
STORAGE_ID = re.compile(r"^[0-9a-f]{32}$")


class LocalFiles:
    def __init__(self):
        self.dir = os.path.join(STORAGE_DIR, "files")

    def describe(self):
        return f"local storage at {self.dir}"

    def put(self, key, body):
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, key)
        with open(f"{path}.tmp", "wb") as f:
            f.write(body)
        os.replace(f"{path}.tmp", path)

    def get(self, key):
        try:
            with open(os.path.join(self.dir, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None


class S3Files:
    """The files bucket, through the S3 REST API signed with AWS Signature Version 4."""

    def __init__(self):
        self.region = os.environ["AWS_REGION"]
        self.bucket = os.environ["S3_STORAGE_FILES_BUCKET"]
        self.access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
        self.secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        endpoint = os.environ.get("S3_ENDPOINT_URL") or f"https://s3.{self.region}.amazonaws.com"
        parts = urllib.parse.urlsplit(endpoint)
        if env_flag("AWS_S3_FORCE_PATH_STYLE"):
            self.scheme, self.host, self.prefix = parts.scheme, parts.netloc, f"/{self.bucket}"
        else:
            self.scheme, self.host, self.prefix = parts.scheme, f"{self.bucket}.{parts.netloc}", ""

    def describe(self):
        return f"S3 storage in bucket {self.bucket} at {self.scheme}://{self.host}"

    def _request(self, method, key, body=b""):
        path = f"{self.prefix}/{urllib.parse.quote(key)}"
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        headers = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key_bytes = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        connection = (http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection)(self.host, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except OSError as e:
            # What the AWS SDK reports when it cannot reach the endpoint at all.
            raise Fatal(f"S3 {method} {self.bucket}/{key} failed: dispatch failure: {e}") from e
        finally:
            connection.close()

    def _failed(self, method, key, status, body):
        code = re.search(rb"<Code>([^<]+)</Code>", body)
        return Fatal(f"S3 {method} {self.bucket}/{key} failed: service error: {code[1].decode() if code else status}")

    def put(self, key, body):
        status, answer = self._request("PUT", key, body)
        if status != 200:
            raise self._failed("PUT", key, status, answer)

    def get(self, key):
        status, answer = self._request("GET", key)
        if status == 404 and b"NoSuchKey" in answer:
            return None
        if status != 200:
            raise self._failed("GET", key, status, answer)
        return answer


def file_storage():
    """S3 with all six variables set; local otherwise, with the real image's warning when only some are."""
    given = [name for name in S3_REQUIRED if os.environ.get(name)]
    if len(given) == len(S3_REQUIRED):
        return S3Files()
    if given:
        missing = [name for name in S3_REQUIRED if name not in given]
        log("WARN", f"Some S3 storage environment variables are set but not all of them (missing: {', '.join(missing)}); using local storage")
    return LocalFiles()


# --------------------------------------------------------------------------- test-only holds


class Holds:
    """HTTP actions held open by name until a test releases them, with the counts it reads back."""

    lock = threading.Lock()
    by_name = {}  # name -> {"released": Event, "held": int, "max_held": int}
    site_proxy_waiting = 0  # requests on 3211 waiting for one of its slots

    @classmethod
    def _entry(cls, name):
        return cls.by_name.setdefault(name, {"released": threading.Event(), "held": 0, "max_held": 0})

    @classmethod
    def hold(cls, name):
        with cls.lock:
            entry = cls._entry(name)
            entry["held"] += 1
            entry["max_held"] = max(entry["max_held"], entry["held"])
        try:
            entry["released"].wait(HOLD_LIMIT_SECONDS)
        finally:
            with cls.lock:
                entry["held"] -= 1

    @classmethod
    def release(cls, name):
        with cls.lock:
            cls._entry(name)["released"].set()

    @classmethod
    def counts(cls, name):
        with cls.lock:
            entry = cls._entry(name)
            return {"held": entry["held"], "max_held": entry["max_held"], "site_proxy_waiting": cls.site_proxy_waiting}

    @classmethod
    def proxy_waiting(cls, delta):
        with cls.lock:
            cls.site_proxy_waiting += delta


# --------------------------------------------------------------------------- HTTP helpers


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 is needed for the websocket's "101 Switching Protocols" to pass through nginx;
    # every response therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "convex-backend-standin"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        # The compose health check polls /version every few seconds; per-request lines would
        # bury the lines operators look for. Failures are logged where they happen.
        pass

    def send_body(self, status, body, content_type="text/plain; charset=utf-8", headers=None):
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if not getattr(self, "body_consumed", True) and self.has_body():
            # An unread request body would be parsed as the next request on this keep-alive
            # connection; close it instead.
            self.send_header("Connection", "close")
            self.close_connection = True
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status, value):
        self.send_body(status, json.dumps(value) + "\n", "application/json")

    def has_body(self):
        return self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers

    def read_body(self):
        self.body_consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


# --------------------------------------------------------------------------- port 3210


class ApiHandler(Handler):
    store = None  # set in main()
    files = None
    instance_name = None
    instance_secret = None

    def do_GET(self):
        self.route("GET")

    def do_HEAD(self):
        self.route("HEAD")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def do_PATCH(self):
        self.route("PATCH")

    def do_OPTIONS(self):
        self.route("OPTIONS")

    def route(self, method):
        self.body_consumed = False  # the handler object is reused across keep-alive requests
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path.startswith("/http/") or path == "/http":
                return self.http_action(method)
            if path == "/api/sync" or re.fullmatch(r"/api/[^/]+/sync", path):
                return self.sync(method)
            if path.startswith("/api/documents/"):
                return self.documents(method, path[len("/api/documents/"):])
            if path == "/api/storage/upload" and method == "POST":
                return self.upload()
            if path.startswith("/api/storage/") and method == "GET":
                return self.download(path[len("/api/storage/"):])
            holds = re.fullmatch(r"/__standin/holds/([A-Za-z0-9_-]+)(/release)?", path)
            if holds and method == ("POST" if holds[2] else "GET"):
                if holds[2]:
                    Holds.release(holds[1])
                return self.send_json(200, Holds.counts(holds[1]))
            if path == "/api/check_admin_key" and method in ("GET", "POST"):
                if self.authorised():
                    self.send_json(200, {"ok": True})
                return None
            if method not in ("GET", "HEAD"):
                return self.send_json(405, {"code": "MethodNotAllowed"})
            if path == "/version":
                return self.version()
            if path == "/instance_name":
                return self.send_body(200, self.instance_name)
            if path == "/instance_version":
                return self.send_body(200, VERSION)
            if path == "/":
                return self.send_body(200, "This Convex deployment is running. See https://docs.convex.dev/.")
            return self.send_json(404, {"code": "NotFound", "message": f"no route for {path}"})
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as e:  # noqa: BLE001 - one bad request must not kill the thread silently
            # Typically the database went away under us (restore, restart): answer 500 and
            # carry on, the next request reconnects.
            message = str(e) if isinstance(e, Fatal) else f"{type(e).__name__}: {' '.join(str(e).split())}"
            log("ERROR", f"{method} {path}: {message}")
            return self.send_json(500, {"code": "InternalServerError", "message": message})

    def version(self):
        if BEHAVIOUR == "broken":
            return self.send_body(500, "this stand-in version is broken on purpose\n")
        if BEHAVIOUR.startswith("fragile") and os.path.exists(os.path.join(DATA_DIR, "FAIL_HERE")):
            return self.send_body(500, f"{DATA_DIR}/FAIL_HERE exists, so this fragile stand-in fails\n")
        return self.send_body(200, VERSION)

    def http_action(self, method):
        """An HTTP action that echoes the request, so a proxy chain can be checked end to end."""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        body = self.read_body()
        # ?hold=NAME keeps the action open until a test releases NAME (test-only, see Holds).
        hold = query.get("hold", [""])[0]
        if hold:
            Holds.hold(hold)
        self.send_json(
            200,
            {
                "action": "echo",
                "method": method,
                "path": url.path[len("/http"):] or "/",
                "query": url.query,
                "body": body.decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "site_origin": os.environ.get("CONVEX_SITE_ORIGIN"),
            },
        )

    # -- admin key

    def authorised(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Convex "):
            self.send_json(401, {"code": "BadAdminKey", "message": "missing 'Authorization: Convex <admin key>'"})
            return False
        given = header[len("Convex "):].strip()
        expected = admin_key(self.instance_name, self.instance_secret)
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            self.send_json(401, {"code": "BadAdminKey", "message": "The provided admin key was invalid for this instance"})
            return False
        return True

    # -- documents

    def documents(self, method, doc_id):
        if not self.authorised():
            return None
        if not DOCUMENT_ID.match(doc_id):
            return self.send_json(400, {"code": "BadDocumentId", "message": "ids are 1-128 of [A-Za-z0-9_-]"})
        if method == "PUT":
            try:
                value = json.loads(self.read_body() or b"null")
            except ValueError as e:
                return self.send_json(400, {"code": "BadJson", "message": str(e)})
            ts = self.store.put(doc_id, value)
            return self.send_json(200, {"id": doc_id, "ts": ts})
        if method in ("GET", "HEAD"):
            found = self.store.get(doc_id)
            if found is None:
                return self.send_json(404, {"code": "NotFound", "id": doc_id})
            return self.send_body(200, json.dumps(found[0]), "application/json", {"X-Convex-Ts": str(found[1])})
        if method == "DELETE":
            if not self.store.delete(doc_id):
                return self.send_json(404, {"code": "NotFound", "id": doc_id})
            return self.send_json(200, {"id": doc_id, "deleted": True})
        return self.send_json(405, {"code": "MethodNotAllowed"})

    # -- file storage

    def upload(self):
        if not self.authorised():
            return None
        storage_id = secrets.token_hex(16)
        self.files.put(storage_id, self.read_body())
        return self.send_json(200, {"storageId": storage_id})

    def download(self, storage_id):
        if not STORAGE_ID.match(storage_id):
            return self.send_json(400, {"code": "BadStorageId"})
        body = self.files.get(storage_id)
        if body is None:
            return self.send_json(404, {"code": "NotFound", "storageId": storage_id})
        return self.send_body(200, body, "application/octet-stream")

    # -- websocket (RFC 6455, by hand: the stdlib has no websocket server)

    def sync(self, method):
        upgrade = self.headers.get("Upgrade", "").lower()
        key = self.headers.get("Sec-WebSocket-Key")
        if method != "GET" or upgrade != "websocket" or not key:
            return self.send_json(426, {"code": "UpgradeRequired", "message": "the sync endpoint is a websocket"})
        accept = base64.b64encode(hashlib.sha1((key.strip() + WEBSOCKET_GUID).encode("ascii")).digest()).decode("ascii")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            self.echo_frames()
        except (ConnectionError, OSError, EOFError):
            pass

    def read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def send_frame(self, opcode, payload):
        # Server frames are never masked.
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([n])
        elif n < 65536:
            header += bytes([126]) + n.to_bytes(2, "big")
        else:
            header += bytes([127]) + n.to_bytes(8, "big")
        self.wfile.write(header + payload)

    def echo_frames(self):
        message, message_opcode = b"", None
        while True:
            b0, b1 = self.read_exact(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(self.read_exact(2), "big")
            elif length == 127:
                length = int.from_bytes(self.read_exact(8), "big")
            mask = self.read_exact(4) if b1 & 0x80 else None
            payload = self.read_exact(length)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if opcode == 0x8:  # close: answer with the same code, then hang up
                self.send_frame(0x8, payload[:2])
                return
            if opcode == 0x9:  # ping
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode in (0x1, 0x2):
                message, message_opcode = payload, opcode
            elif opcode == 0x0:  # continuation of a fragmented message
                message += payload
            if fin and message_opcode is not None:
                self.send_frame(message_opcode, message)
                message, message_opcode = b"", None


# --------------------------------------------------------------------------- port 3211


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class SiteProxyHandler(Handler):
    """Rewrites /X to http://127.0.0.1:3210/http/X, like the real backend's site proxy."""

    slots = threading.BoundedSemaphore(SITE_PROXY_MAX_IN_FLIGHT)

    def forward(self):
        body = self.read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
        Holds.proxy_waiting(+1)
        with self.slots:
            Holds.proxy_waiting(-1)
            try:
                upstream = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=60)
                upstream.request(self.command, "/http" + self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
            except OSError as e:
                log("ERROR", f"site proxy: upstream request failed: {e}")
                return self.send_json(502, {"code": "BadGateway", "message": str(e)})
        passthrough = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length", "content-type", "server", "date"}}
        self.send_body(response.status, data, response.getheader("Content-Type", "application/octet-stream"), passthrough)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = forward


# --------------------------------------------------------------------------- main


def serve(port, handler):
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True  # open websockets must not hold up shutdown
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    return server


def main():
    stop = threading.Event()

    def on_signal(signum, _frame):
        # compose stops the backend with SIGINT (stop_signal) and a 10 s grace period.
        log("INFO", f"Received {signal.Signals(signum).name}, shutting down")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    log("INFO", f"Starting a Convex backend (stand-in, version {VERSION})")
    try:
        check_origins()
        name, secret = resolve_credentials()
        log("INFO", f"Instance name: {name}")
        postgres_url = os.environ.get("POSTGRES_URL")
        if postgres_url:
            backend = Postgres(postgres_url, name)
        else:
            for unsupported in ("MYSQL_URL", "DATABASE_URL"):
                if os.environ.get(unsupported):
                    raise Fatal(f"{unsupported} is set, but this stand-in only implements POSTGRES_URL and SQLite")
            backend = Sqlite()
        store = Store(backend)
        store.initialise()
        log("INFO", f"Connected to {backend.describe()}")
        files = file_storage()
        log("INFO", f"File storage: {files.describe()}")
    except Fatal as e:
        log("ERROR", str(e))
        return 1

    ApiHandler.store, ApiHandler.files, ApiHandler.instance_name, ApiHandler.instance_secret = store, files, name, secret
    try:
        servers = [serve(API_PORT, ApiHandler), serve(SITE_PROXY_PORT, SiteProxyHandler)]
    except OSError as e:
        log("ERROR", f"cannot listen: {e}")
        return 1
    log("INFO", f"backend listening on 0.0.0.0:{API_PORT}")
    log("INFO", f"site proxy listening on 0.0.0.0:{SITE_PROXY_PORT}")

    while not stop.wait(0.5):
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
    log("INFO", "Shut down cleanly")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--generate-admin-key"]:
        sys.exit(generate_admin_key_main())
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
