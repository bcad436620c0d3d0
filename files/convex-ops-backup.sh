#!/bin/sh
# {{managed}} from files/convex-ops-backup.sh and the inventory: edit those, not this file.
# Backups of a self-hosted Convex backend: a pg_dump of its database and a tar of its data and
# storage folders, verified and checksummed, kept under <root>/backups/<id>/ with rotation.
#
# scripts/backup.ts installs this file (rendered with the host's settings) and runs it; the daily
# timer or cron job installed by `backup.ts --schedule` runs the very same file. Read-only
# subcommands (estimate, verify, list) are also run from the rendered text without installing it.
#
#   convex-ops-backup [run]      make a backup, verify it, then rotate (keep the newest KEEP)
#   convex-ops-backup run --no-rotate
#                                the same without rotation (restore.ts's safety backup: it must
#                                not rotate away the backup about to be restored)
#   convex-ops-backup estimate   print the bytes a backup needs and the bytes free for it
#   convex-ops-backup verify ID  check SHA256SUMS and that pg_restore can read the dump
#   convex-ops-backup list       print the good backups, oldest first, each with its size in bytes
#   convex-ops-backup restore-database ID
#                                replace the database with the backup's, in one transaction
#                                (restore.ts runs it with the backend stopped, after verify)
#   convex-ops-backup scheduled  what the daily job runs: run, then (with a repository) offsite
#                                and check, the password read from $SECRETS
#
# Off-host copies with restic, each reading the repository password (and any credentials) as
# sh assignments from SECRETS, a file or "-" for stdin, so that they never reach a command line:
#   convex-ops-backup offsite SECRETS         copy the backup the last run made (the folder and
#                                <root>/.env) to the repository, then forget --prune by retention
#   convex-ops-backup check SECRETS           restic check, reading a sample of the data
#   convex-ops-backup snapshots SECRETS       the instance's snapshots and their sizes (JSON)
#   convex-ops-backup fetch SECRETS SNAPSHOT [--force-replace]
#                                restore a snapshot's backup into <root>/backups/<id> and its .env
#                                into $FETCHED_ENV, after verifying it; refused where .env holds
#                                another INSTANCE_SECRET, unless --force-replace
#
# A backup is good only once it is complete and verified: it is made in a hidden folder and
# renamed to its id at the very end, so a failed or interrupted backup never looks like one.
# Rotation runs only after a good backup and never deletes the backup just made, even when the
# droplet's clock is behind and its id sorts before older ones.
set -eu

# Settings, rendered from the inventory (edit the inventory, not this file).
VOLUME={{volume}}
ROOT={{root}}
DATABASE={{database}}
PG_MODE={{pg_mode}}
PG_USER={{pg_user}}
# libpq settings of an external server (host, port, user, database, verified TLS), values quoted.
PG_CONNINFO={{pg_conninfo}}
KEEP={{keep}}
# Off-host copies (empty repository: none).
OFFSITE_REPOSITORY={{repository}}
OFFSITE_HOST={{host_name}}
INSTANCE={{instance}}
KEEP_DAILY={{keep_daily}}
KEEP_WEEKLY={{keep_weekly}}
KEEP_MONTHLY={{keep_monthly}}
# The ssh command restic runs for an sftp: repository: the droplet's own key, the pinned host key.
SFTP_COMMAND={{sftp_command}}
SECRETS={{secrets}}
FETCHED_ENV={{fetched_env}}

BACKUPS="$ROOT/backups"
LOCK=/var/lib/convex-ops/backup.lock
# The id of the backup the last run made: what `offsite` copies.
LAST=/var/lib/convex-ops/last-backup
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C PATH
umask 077
cd /

say() { printf '%s\n' "convex-ops-backup: $*" >&2; }
fail() { say "error: $*"; exit 1; }

# Percent-decoding without printf's \x (dash has none): %HH becomes an octal escape.
urldecode() {
  rest=$1
  out=''
  while [ -n "$rest" ]; do
    case $rest in
      %[0-9A-Fa-f][0-9A-Fa-f]*)
        hex=${rest#%}
        hex=${hex%"${hex#??}"}
        out="$out$(printf "\\$(printf '%03o' "0x$hex")")"
        rest=${rest#%??}
        ;;
      *)
        out="$out${rest%"${rest#?}"}"
        rest=${rest#?}
        ;;
    esac
  done
  printf '%s' "$out"
}

# External mode: the password is in POSTGRES_URL in <root>/.env (mode 0600); it reaches libpq
# through the environment, never through a command line that ps would show.
external_env() {
  url=$(sed -n 's/^POSTGRES_URL=//p' "$ROOT/.env")
  [ -n "$url" ] || fail "POSTGRES_URL is missing from $ROOT/.env"
  password=${url#*://*:}
  password=${password%%@*}
  PGPASSWORD=$(urldecode "$password")
  export PGPASSWORD
}

psql_value() {
  if [ "$PG_MODE" = local ]; then
    runuser -u postgres -- psql -XAtq -d "$DATABASE" -c "$1"
  else
    external_env
    psql -XAtq -d "$PG_CONNINFO" -c "$1"
  fi
}

dump_database() {
  if [ "$PG_MODE" = local ]; then
    runuser -u postgres -- pg_dump -Fc -d "$DATABASE" >"$1"
  else
    external_env
    pg_dump -Fc -d "$PG_CONNINFO" >"$1"
  fi
}

# Local mode: pg_restore runs as the postgres superuser but SET ROLEs to the backend's role, so
# the tables it drops and re-creates are that role's, as the backend made them. External mode:
# connected as that role, objects are re-created owned by it, without owner or grant statements
# (a managed server's role cannot run them). One transaction: a failure changes nothing.
restore_database() {
  dump="$BACKUPS/$1/database.dump"
  [ -s "$dump" ] || fail "no database dump in $BACKUPS/$1"
  if [ "$PG_MODE" = local ]; then
    runuser -u postgres -- pg_restore --clean --if-exists --single-transaction --exit-on-error \
      --role="$PG_USER" -d "$DATABASE" <"$dump"
  else
    external_env
    pg_restore --clean --if-exists --single-transaction --exit-on-error --no-owner --no-privileges \
      -d "$PG_CONNINFO" "$dump"
  fi
  echo "RESTORED $1"
}

folders() {
  for folder in data storage; do
    [ -d "$VOLUME/$folder" ] && printf '%s\n' "$folder"
  done
  return 0
}

# Bytes a backup may take: the database and the folders as they are (the dump and the tar are
# compressed, so this errs on the safe side), plus a tenth and 64 MiB of margin.
estimate() {
  database=$(psql_value "select pg_database_size(current_database())") || fail "cannot read the size of database $DATABASE"
  files=$(cd "$VOLUME" && folders | xargs -r du -sb | awk '{ s += $1 } END { print s + 0 }')
  echo $(((database + files) * 11 / 10 + 64 * 1024 * 1024))
}

available() {
  df -P -B1 "$BACKUPS" | awk 'NR == 2 { print $4 }'
}

verify_dump() {
  [ -s "$1" ] || fail "the database dump $1 is empty"
  list=$(pg_restore --list "$1") || fail "pg_restore cannot read the database dump $1"
  printf '%s\n' "$list" | grep -q ' TABLE ' || fail "the database dump $1 holds no table"
}

is_good() {
  case ${1##*/} in
    [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z) [ -f "$1/SHA256SUMS" ] ;;
    *) return 1 ;;
  esac
}

good_backups() {
  for dir in "$BACKUPS"/*; do
    if is_good "$dir"; then printf '%s\n' "${dir##*/}"; fi
  done | sort
}

verify() {
  dir="$BACKUPS/$1"
  if ! is_good "$dir"; then
    known=$(good_backups | tr '\n' ' ')
    fail "no good backup $1 in $BACKUPS (good backups: ${known:-none})"
  fi
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS) >&2 || fail "backup $1 does not match its SHA256SUMS: it is damaged"
  verify_dump "$dir/database.dump"
  tar -tzf "$dir/data.tar.gz" >/dev/null || fail "cannot read $dir/data.tar.gz"
  echo "VERIFIED $1"
}

# rotate ID: keep the newest KEEP good backups, ID (the backup just made) always among them.
# Ids are times, so oldest first is by id, except ID itself, whatever its time says.
rotate() {
  count=$(good_backups | wc -l)
  excess=$((count - KEEP))
  [ "$excess" -gt 0 ] || return 0
  good_backups | grep -vxF "$1" | head -n "$excess" | while read -r old; do
    rm -rf "${BACKUPS:?}/$old"
    echo "ROTATED $old"
  done
}

take_lock() {
  mkdir -p "$BACKUPS" "${LOCK%/*}"
  exec 8>>"$LOCK"
  flock -w 3600 8 || fail "another backup has held $LOCK for an hour"
}

run() {
  [ "$KEEP" -ge 1 ] || KEEP=1
  take_lock
  # Whatever a killed backup left behind (we hold the lock, so none is running).
  rm -rf "$BACKUPS"/.partial-*

  need=$(estimate)
  free=$(available)
  [ "$free" -ge "$need" ] || fail "not enough free space in $BACKUPS: $free bytes free, a backup needs up to $need"

  id=$(date -u +%Y%m%dT%H%M%SZ)
  while [ -e "$BACKUPS/$id" ]; do
    sleep 1
    id=$(date -u +%Y%m%dT%H%M%SZ)
  done
  partial="$BACKUPS/.partial-$id"
  mkdir "$partial"
  trap 'rm -rf "$partial"' EXIT
  trap 'exit 1' INT TERM HUP

  say "dumping database $DATABASE"
  dump_database "$partial/database.dump" || fail "pg_dump of database $DATABASE failed"
  verify_dump "$partial/database.dump"

  say "archiving $(folders | tr '\n' ' ')of $VOLUME"
  # Online backup: GNU tar exits 1 when a file changed while it was read; that is not a failure.
  status=0
  tar --numeric-owner -C "$VOLUME" -czf "$partial/data.tar.gz" $(folders) || status=$?
  [ "$status" -le 1 ] || fail "tar of $VOLUME failed (exit $status)"
  tar -tzf "$partial/data.tar.gz" >/dev/null || fail "the archive of $VOLUME cannot be read back"

  images=$(docker inspect --format '{{.Name}}={{.Config.Image}}' convex-backend convex-dashboard 2>/dev/null | sed 's,^/,,' | tr '\n' ' ' || true)
  cat >"$partial/manifest" <<EOF
id=$id
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
hostname=$(hostname)
database=$DATABASE
postgres_mode=$PG_MODE
volume=$VOLUME
images=$images
EOF
  (cd "$partial" && sha256sum database.dump data.tar.gz manifest >SHA256SUMS)
  sync
  mv "$partial" "$BACKUPS/$id"
  trap - EXIT
  echo "BACKUP $id $(du -sb "$BACKUPS/$id" | cut -f1)"
  [ "${1:-}" = --no-rotate ] || { printf '%s\n' "$id" >"$LAST"; rotate "$id"; }
}

# ----------------------------------------------------------------------------- off-host (restic)

# The password and credentials as sh assignments (values quoted by convex-ops), exported for restic
# alone: restic reads RESTIC_PASSWORD and the S3-type variables from its environment.
load_secrets() {
  [ -n "$OFFSITE_REPOSITORY" ] || fail "no [backup] repository is set for this host in the inventory"
  from=$1
  [ "$from" = - ] && from=/dev/stdin
  [ -r "$from" ] || fail "cannot read the repository password from $1"
  set -a
  . "$from"
  set +a
  [ -n "${RESTIC_PASSWORD:-}" ] || fail "no repository password in $1"
  RESTIC_REPOSITORY=$OFFSITE_REPOSITORY
  RESTIC_CACHE_DIR=/var/cache/convex-ops-restic
  export RESTIC_REPOSITORY RESTIC_CACHE_DIR
}

rs() {
  if [ -n "$SFTP_COMMAND" ]; then restic -o "sftp.command=$SFTP_COMMAND" "$@"; else restic "$@"; fi
}

# The last lines restic wrote, on one line, for an error message.
last_words() { printf '%s' "$1" | tail -n 3 | tr '\n' ' '; }

# Opens the repository, or creates it when there is none; a wrong password or an unreachable
# target is an error, never a reason to create one.
open_repository() {
  if out=$(rs cat config 2>&1 >/dev/null); then return 0; fi
  case $out in
    *"Is there a repository at the following location"* | *"repository does not exist"*) ;;
    *) fail "cannot open the restic repository $OFFSITE_REPOSITORY: $(last_words "$out")" ;;
  esac
  say "creating the restic repository $OFFSITE_REPOSITORY"
  out=$(rs init 2>&1) || fail "cannot create the restic repository $OFFSITE_REPOSITORY: $(last_words "$out")"
  echo "INITIALIZED"
}

offsite() {
  load_secrets "$1"
  take_lock
  id=$(cat "$LAST" 2>/dev/null) || fail "no backup has been made here yet ($LAST is missing)"
  is_good "$BACKUPS/$id" || fail "the last backup, $id, is not a good backup in $BACKUPS"
  open_repository
  # The real folders (<root> is a symlink to the volume), so the snapshot holds them, not the link.
  real=$(cd "$ROOT" && pwd -P)
  say "copying backup $id and $ROOT/.env to $OFFSITE_REPOSITORY"
  out=$(rs backup --host "$OFFSITE_HOST" --tag convex-ops --tag "instance:$INSTANCE" --tag "backup:$id" \
    "$real/backups/$id" "$real/.env" 2>&1) || fail "restic backup of $id failed: $(last_words "$out")"
  echo "SNAPSHOTS $(rs snapshots --json --host "$OFFSITE_HOST" --tag "backup:$id")"
  # One group per host and instance: each snapshot's paths differ (the backup's id), so restic's
  # default grouping by paths would keep every snapshot.
  out=$(rs forget --json --group-by host --host "$OFFSITE_HOST" --tag "instance:$INSTANCE" \
    --keep-daily "$KEEP_DAILY" --keep-weekly "$KEEP_WEEKLY" --keep-monthly "$KEEP_MONTHLY" 2>/dev/null) || fail "restic forget failed"
  echo "FORGET $out"
  case $out in
    *'"remove":[{'*) rs prune >&2 || fail "restic prune failed" ;;
  esac
}

check_repository() {
  load_secrets "$1"
  open_repository
  out=$(rs check --read-data-subset=10% 2>&1) || fail "restic check found a problem in $OFFSITE_REPOSITORY: $(last_words "$out")"
  echo "CHECKED"
}

snapshots() {
  load_secrets "$1"
  list=$(rs snapshots --json --tag "instance:$INSTANCE" 2>&1) || fail "cannot list the snapshots in $OFFSITE_REPOSITORY: $(last_words "$list")"
  echo "SNAPSHOTS $list"
  for short in $(printf '%s' "$list" | grep -o '"short_id":"[0-9a-f]*"' | cut -d'"' -f4); do
    echo "SIZE $short $(rs stats --json --mode restore-size "$short")"
  done
}

# A snapshot's backup into <root>/backups/<id> (unless it is there already) and its .env into
# FETCHED_ENV, both verified first; the staging folder is removed whatever happens.
fetch() {
  load_secrets "$1"
  snapshot=$2
  force=${3:-}
  staging="$VOLUME/.convex-ops-fetch"
  rm -rf "$staging"
  mkdir -m 700 "$staging"
  trap 'rm -rf "$staging"' EXIT
  if [ "$snapshot" = latest ]; then set -- latest --tag "instance:$INSTANCE"; else set -- "$snapshot"; fi
  out=$(rs restore "$@" --target "$staging" 2>&1) || fail "cannot restore snapshot $snapshot from $OFFSITE_REPOSITORY: $(last_words "$out")"
  manifest=$(find "$staging" -path '*/backups/*/manifest' -type f | head -n 1)
  env=$(find "$staging" -name .env -type f | head -n 1)
  [ -n "$manifest" ] && [ -n "$env" ] || fail "snapshot $snapshot holds no convex-ops backup with its .env"
  dir=${manifest%/manifest}
  id=${dir##*/}
  # The dump is read with pg_restore by the restore that follows, once the install has put
  # PostgreSQL on a fresh droplet; restic has authenticated every byte, the checksums say it is whole.
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS) >&2 || fail "snapshot $snapshot: backup $id does not match its SHA256SUMS: it is damaged"
  grep -q '^INSTANCE_SECRET=.' "$env" || fail "snapshot $snapshot: its .env holds no INSTANCE_SECRET"
  # Another instance's secret here: its data would be replaced. Compared in the shell, never shown.
  current=$(sed -n 's/^INSTANCE_SECRET=//p' "$ROOT/.env" 2>/dev/null || true)
  if [ -n "$current" ] && [ "$current" != "$(sed -n 's/^INSTANCE_SECRET=//p' "$env")" ] && [ "$force" != --force-replace ]; then
    fail "this droplet already runs another instance (its .env holds a different INSTANCE_SECRET): restoring the snapshot would replace its data and its secret. Add --force-replace to replace it. Nothing was changed."
  fi
  mkdir -p "$BACKUPS" "${FETCHED_ENV%/*}"
  [ -e "$BACKUPS/$id" ] || mv "$dir" "$BACKUPS/$id"
  install -m 600 -o root -g root "$env" "$FETCHED_ENV"
  echo "FETCHED $id"
}

case "${1:-run}" in
  run) run "${2:-}" ;;
  estimate)
    need=$(estimate)
    free=$(available)
    echo "NEED $need"
    echo "FREE $free"
    ;;
  verify) [ -n "${2:-}" ] || fail "usage: $0 verify ID"; verify "$2" ;;
  list) good_backups | while read -r id; do printf '%s %s\n' "$id" "$(du -sb "$BACKUPS/$id" | cut -f1)"; done ;;
  restore-database) [ -n "${2:-}" ] || fail "usage: $0 restore-database ID"; restore_database "$2" ;;
  scheduled)
    run
    if [ -n "$OFFSITE_REPOSITORY" ]; then
      offsite "$SECRETS"
      check_repository "$SECRETS"
    fi
    ;;
  offsite) offsite "${2:?usage: $0 offsite SECRETS}" ;;
  check) check_repository "${2:?usage: $0 check SECRETS}" ;;
  snapshots) snapshots "${2:?usage: $0 snapshots SECRETS}" ;;
  fetch) fetch "${2:?usage: $0 fetch SECRETS SNAPSHOT [--force-replace]}" "${3:?usage: $0 fetch SECRETS SNAPSHOT [--force-replace]}" "${4:-}" ;;
  *) fail "unknown command \"$1\" (run [--no-rotate], scheduled, estimate, verify ID, list, restore-database ID, offsite, check, snapshots, fetch)" ;;
esac
