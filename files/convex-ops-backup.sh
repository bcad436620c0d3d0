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
#   convex-ops-backup list       print the good backups, oldest first
#   convex-ops-backup restore-database ID
#                                replace the database with the backup's, in one transaction
#                                (restore.ts runs it with the backend stopped, after verify)
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

BACKUPS="$ROOT/backups"
LOCK=/var/lib/convex-ops/backup.lock
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

run() {
  [ "$KEEP" -ge 1 ] || KEEP=1
  mkdir -p "$BACKUPS" "${LOCK%/*}"
  exec 8>>"$LOCK"
  flock -w 3600 8 || fail "another backup has held $LOCK for an hour"
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
  [ "${1:-}" = --no-rotate ] || rotate "$id"
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
  list) good_backups ;;
  restore-database) [ -n "${2:-}" ] || fail "usage: $0 restore-database ID"; restore_database "$2" ;;
  *) fail "unknown command \"$1\" (run [--no-rotate], estimate, verify ID, list, restore-database ID)" ;;
esac
