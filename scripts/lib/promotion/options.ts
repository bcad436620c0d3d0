// The command line of all.ts --promote: which two hosts, which candidate images, and the
// operator's go-ahead. Everything that can be refused before connecting is refused here.
import { createInterface } from 'node:readline/promises';
import type { Host, Inventory } from '../inventory.ts';
import { isPinnedImage } from '../inventory/validate.ts';
import type { Args } from '../cli.ts';
import { fail, loadHosts } from '../cli.ts';
import type { Role } from '../steps/promotion.ts';
import { ROLES } from '../steps/promotion.ts';

export interface PromotionOptions {
  inventory: Inventory;
  source: Host;
  target: Host;
  candidate: Record<Role, string>;
  /** The backup inside the window, with the backend stopped (exact); false: --no-backup-window. */
  backupWindow: boolean;
}

export function promotionOptions(args: Args): PromotionOptions {
  const spec = String(args.promote);
  if (!/^[^:,\s]+(:[^:,\s]+)?$/.test(spec)) fail(`--promote "${spec}": use --promote SOURCE:TARGET (e.g. dev:prod), or --promote TARGET when the target has promote_from.`);
  const { inventory } = loadHosts({ ...args, host: spec.split(':').pop() });
  const { source, target } = promotionPair(inventory, spec);
  // What can be checked before connecting (identity files, password variables), for both hosts.
  loadHosts({ ...args, host: `${source.name},${target.name}` });
  const candidate = candidateImages(source, args);
  if (args.check) fail('--promote has no dry run: the candidate must really run on dev before prod is touched. Use all.ts --host HOST --check to see what a run would change.');
  if (!args.yes && !process.stdin.isTTY) {
    fail(`--promote ${source.name}:${target.name} changes production, and this run is not interactive, so it cannot ask. Add --yes to go ahead without confirmation. Nothing was changed.`);
  }
  // minimist reads --no-backup-window as backup-window = false.
  return { inventory, source, target, candidate, backupWindow: args['backup-window'] !== false };
}

/** dev and prod from "--promote dev:prod" or "--promote prod" (prod's promote_from). */
function promotionPair(inventory: Inventory, spec: string): { source: Host; target: Host } {
  const parts = spec.split(':');
  const known = `Known hosts: ${[...inventory.hosts.keys()].join(', ')}.`;
  const targetName = parts[parts.length - 1]!;
  const target = inventory.hosts.get(targetName);
  if (!target) fail(`--promote: "${targetName}" is not a host in ${inventory.path}. ${known}`);
  const sourceName = parts.length === 2 ? parts[0]! : target.promote_from;
  if (!sourceName) fail(`--promote ${targetName}: hosts.${targetName} has no promote_from. Add promote_from = "dev" to [hosts.${targetName}], or use --promote dev:${targetName}.`);
  const source = inventory.hosts.get(sourceName);
  if (!source) fail(`--promote: "${sourceName}" is not a host in ${inventory.path}. ${known}`);
  if (source.name === target.name) fail('--promote: a host cannot be promoted from itself.');
  if (source.address === target.address && source.port === target.port) fail(`--promote: ${source.name} and ${target.name} are the same droplet (${source.address}); promotion needs two.`);
  return { source, target };
}

function candidateImages(source: Host, args: Args): Record<Role, string> {
  const candidate = { backend: String(args['backend-image'] ?? source.backend_image), dashboard: String(args['dashboard-image'] ?? source.dashboard_image) };
  for (const role of ROLES) {
    const ref = candidate[role];
    if (!isPinnedImage(ref)) {
      fail(`--${role}-image "${ref}" must name an image with a tag or digest, e.g. ghcr.io/get-convex/convex-${role}:<git sha>.`);
    }
  }
  return candidate;
}

export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}
