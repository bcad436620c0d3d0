#!/usr/bin/env zx
// Why is a deployment broken? Reads the backend's logs, the containers and the host in one
// remote command per host, and prints one finding per line: the cause and the fix.
// Read-only: no run lock is taken (doctor must work while a run hangs), nothing is written or
// restarted on the droplet. Exit 0 when every host is healthy, 1 when a problem was found or a
// host could not be examined.
import { chalk } from 'zx';
import { EXIT, forEachHost, loadHosts, localDir, makeReporter, parseArgs } from './lib/cli.ts';
import { examine } from './lib/doctor.ts';
import type { DoctorResult } from './lib/doctor.ts';

const spec = { script: 'doctor' };
const HELP = `Usage: npx zx scripts/doctor.ts --host NAME [options]

Reads the backend's logs, the containers' state and the host's state (ports, disk, PostgreSQL, DNS,
certificate, admin key) in one SSH command per host, and prints one line per finding: its cause
and its fix. Read-only: it changes nothing and takes no run lock, so it also works while a run hangs.

Options:
  --host NAME[,NAME…]   hosts or groups from the inventory (required)
  --inventory FILE      inventory file (default ./inventory.toml, or $CONVEX_OPS_INVENTORY)
  --json                print the findings as one JSON document on stdout (the lines go to stderr)
  --accept-new          record the host key of a host not yet in known_hosts (trust on first use)
  --parallel N          hosts examined at once (default 10)
  --help                this text

Exit codes: 0 every host is healthy (warnings allowed), 1 a problem was found or a host could not
be examined.
`;
const args = parseArgs({});
if (args.help) {
  process.stdout.write(HELP);
  process.exit(EXIT.ok);
}
const { inventory, hosts } = loadHosts(args);
const reporter = makeReporter(args, inventory, hosts, spec.script);
const width = Math.max(...hosts.map(h => h.name.length), 4);
const prefix = (host: string) => chalk.bold(host.padEnd(width));

const print = (result: DoctorResult) => {
  if (result.error) {
    reporter.say(`${prefix(result.host)}  ${chalk.red('error  ')}  could not examine the host: ${result.error}`);
    return;
  }
  for (const f of result.findings) {
    const label = f.severity === 'problem' ? chalk.red('problem') : chalk.yellow('warning');
    reporter.say(`${prefix(result.host)}  ${label}  ${f.cause}. ${chalk.bold('Fix:')} ${f.fix}.`);
  }
  if (result.healthy) reporter.say(`${prefix(result.host)}  ${chalk.green('healthy')}  ${result.summary ?? ''} ${chalk.dim(`(${result.seconds.toFixed(1)}s)`)}`);
};

// Each host's findings print together as soon as that host is done, so several hosts stay readable.
const results = await forEachHost(hosts, Number(args.parallel ?? 10), async host => {
  const result = await examine(host, { acceptNew: Boolean(args['accept-new']), local: (...parts) => localDir(inventory, ...parts) });
  print(result);
  return result;
});
const code = results.every(r => r.healthy) ? EXIT.ok : EXIT.failed;
const problems = results.reduce((n, r) => n + r.findings.filter(f => f.severity === 'problem').length, 0);
const commands = results.reduce((n, r) => n + r.commands, 0);
reporter.say(chalk.dim(`${results.filter(r => r.healthy).length}/${results.length} healthy, ${problems} problem(s), ${commands} remote command(s) in all; log: ${reporter.logPath}`));
if (args.json) reporter.document({ script: spec.script, exit: code, hosts: results, log: reporter.logPath });
process.exit(code);
