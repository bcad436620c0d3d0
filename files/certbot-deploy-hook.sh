#!/bin/sh
# {{managed}} from files/certbot-deploy-hook.sh.
# certbot runs this after it renewed a certificate: nginx keeps serving the old one until it is
# reloaded, and the hook ends once the new workers, with the new certificate, serve. A
# configuration nginx rejects is not reloaded (the old one keeps running).
nginx -t -q || exit 1
{{reload_nginx}}
