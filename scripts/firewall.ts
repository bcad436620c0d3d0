#!/usr/bin/env zx
// The firewall of a host with firewall = true: SSH, 80 and 443 in, the rest denied (ufw, else iptables).
import { play } from './lib/play.ts';
import { firewall } from './lib/steps/firewall.ts';

await play({
  script: 'firewall',
  summary: 'Allows the SSH port, 80 and 443 (SSH first) and denies other incoming connections, with ufw or plain iptables.',
  steps: () => [firewall],
});
