#!/bin/sh
# {{managed}} from files/firewall-iptables.sh: the firewall of hosts.{{host}} on a droplet
# where ufw is not available. It (re)builds the chains convex-ops-input in one atomic
# iptables-restore each, and puts a jump to them first in INPUT. Other chains and rules are
# left alone. Connections already established (this SSH session) are never cut, and the SSH
# port is accepted before anything is dropped. Run again at boot ({{boot}}), which convex-ops
# installs only once a new SSH connection got in through these rules.
set -e
iptables-restore --noflush <<'RULES'
*filter
:convex-ops-input - [0:0]
-A convex-ops-input -i lo -j ACCEPT
-A convex-ops-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A convex-ops-input -p tcp --dport {{ssh_port}} -j ACCEPT
-A convex-ops-input {{ipv4_accept}} -j ACCEPT
-A convex-ops-input -p icmp -j ACCEPT
-A convex-ops-input -j DROP
COMMIT
RULES
iptables -C INPUT -j convex-ops-input 2>/dev/null || iptables -I INPUT 1 -j convex-ops-input
if command -v ip6tables-restore >/dev/null && [ -f /proc/net/if_inet6 ]; then
ip6tables-restore --noflush <<'RULES'
*filter
:convex-ops-input - [0:0]
-A convex-ops-input -i lo -j ACCEPT
-A convex-ops-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A convex-ops-input -p tcp --dport {{ssh_port}} -j ACCEPT
-A convex-ops-input {{ipv6_accept}} -j ACCEPT
-A convex-ops-input -p ipv6-icmp -j ACCEPT
-A convex-ops-input -j DROP
COMMIT
RULES
ip6tables -C INPUT -j convex-ops-input 2>/dev/null || ip6tables -I INPUT 1 -j convex-ops-input
fi
