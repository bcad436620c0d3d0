#!/usr/bin/env zx
// The firewall of a host with firewall = true: SSH, 80 and 443 in, the rest denied (ufw, else iptables).
import { runScript } from './lib/cli.ts';
import { firewall } from './lib/steps/firewall.ts';

await runScript({
  script: 'firewall',
  summary: 'Allows the SSH port, 80 and 443 (SSH first) and denies other incoming connections, with ufw or plain iptables.',
  steps: () => [firewall],
});
