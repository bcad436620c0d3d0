#!/bin/sh
# Stand-in for the real image's ./generate_admin_key.sh: prints "<instance_name>|<key>".
# The lookup (INSTANCE_NAME / INSTANCE_SECRET from the environment, else the files under
# /convex/data/credentials) lives in backend.py, so the key always matches what the
# running server accepts.
set -eu
exec python3 "$(dirname "$0")/backend.py" --generate-admin-key
