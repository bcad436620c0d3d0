#!/bin/sh
# {{managed}} from files/certbot-deploy-hook.sh.
# certbot runs this after it renewed a certificate: nginx keeps serving the old one until it is
# reloaded. A configuration nginx rejects is not reloaded (the old one keeps running).
nginx -t -q || exit 1
if [ "$(cat /proc/1/comm)" = systemd ]; then systemctl reload nginx; else service nginx reload; fi
