#!/usr/bin/env zx
// The runbook. `--host X`: install, then nginx and letsencrypt when X has domains, the firewall
// when X has firewall = true, then every check, on one SSH connection per host.
// `--promote dev:prod`: the images proven on dev go to prod by digest, with a backup first and a
// rollback if prod fails (scripts/lib/promotion/runbook.ts).
import { commandLine, EXIT, runScript } from './lib/cli.ts';
import { allSteps } from './lib/runbooks.ts';
import { promote } from './lib/promotion/runbook.ts';
import { promotionGuard } from './lib/steps/promotion.ts';
import { allChecks } from '../checks/index.ts';

const spec = {
  script: 'all',
  summary:
    'Converges hosts: install, nginx and letsencrypt (with domains), the firewall (firewall = true), then every check.\n' +
    'With --promote: proves images on one host and promotes the very same digests to another, with a backup and a rollback.',
  extraHelp: `
Promotion (instead of --host):
  --promote SRC:DST     e.g. dev:prod: converge SRC to the candidate, check it, back up DST,
                        converge DST to SRC's digests, check it; on failure put DST's previous
                        images back (its data is never restored automatically)
  --promote DST         the same, with SRC from DST's promote_from
  --backend-image REF   the candidate backend (default: SRC's backend_image)
  --dashboard-image REF the candidate dashboard (default: SRC's dashboard_image)
  --yes                 do not ask for confirmation (required when not interactive)
  --keep-inventory      do not pin DST's images in the inventory after a promotion
  --allow-rollback      let a run put back the images a promotion replaced
  --show                print the admin key
`,
  booleans: ['show', 'yes', 'keep-inventory', 'allow-rollback'],
  strings: ['promote', 'backend-image', 'dashboard-image'],
};

const args = commandLine(spec);
if (args.promote !== undefined) {
  if (args.host) {
    process.stderr.write('error: give either --host (converge) or --promote (promotion), not both.\n');
    process.exit(EXIT.failed);
  }
  process.exit(await promote(args));
}

await runScript({
  ...spec,
  steps: (host, run) => [promotionGuard(Boolean(run.args['allow-rollback'])), ...allSteps(host, run)],
  checks: () => allChecks,
});
