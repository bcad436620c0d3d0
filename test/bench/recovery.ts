// npm run bench:recovery -- [--documents N] [--document-kb K] [--file-mb M] [--keep]
//
// The recovery time an operator can quote (issue 16): how long `restore.ts --from-repository`
// takes from a bare droplet to a serving, restored backend, for a stated amount of data.
//
//   1. a fleet of three droplets: "source", "vault" (the off-host restic repository over SFTP) and
//      "target" (bare: nothing installed);
//   2. the source converged with all.ts and filled through the backend's API with N documents of
//      K KiB of random text each (PostgreSQL, and a copy under the data folder); with --file-mb,
//      M MiB of random files in the data folder's storage/, as file storage would leave there (the
//      stand-in backend has no upload API, so these are written on the droplet);
//   3. an off-host backup with backup.ts, then the source destroyed (container and volume);
//   4. timed: `restore.ts --host target --from-repository --yes --json`, then every document read
//      back with the old admin key and every file's SHA-256 compared;
//   5. printed: the data's size (database dump, data folder, repository on the vault), the total
//      recovery time, each step's time from the run's JSON, and the machine's load average.
//
// Exits 1 when a script fails or a document or file is not what was written. The fleet is
// removed at the end unless --keep.
import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import os from 'node:os';
import { fleetDown, fleetUp } from '../fleet/index.ts';
import type { Fleet, RunResult } from '../fleet/index.ts';
import { volumePathFor } from '../fleet/droplets.ts';
import { adminKeyOf, backendUrl, getDocument, parseRunJson, putDocument } from '../e2e/convex-api.ts';
import { destroyDroplet, vaultBackup } from '../e2e/drill.ts';
import { round } from './stats.ts';

const { values } = parseArgs({
  options: {
    documents: { type: 'string', default: '200' },
    'document-kb': { type: 'string', default: '1' },
    'file-mb': { type: 'string', default: '0' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(
    'usage: npm run bench:recovery -- [--documents N] [--document-kb K] [--file-mb M] [--keep]\n\n' +
      '  --documents N    documents written through the API (default 200)\n' +
      '  --document-kb K  KiB of random text per document (default 1)\n' +
      '  --file-mb M      MiB of random files in the data folder\'s storage/ (default 0)\n' +
      '  --keep           leave the fleet up afterwards',
  );
  process.exit(0);
}
const DOCUMENTS = Number(values.documents);
const DOCUMENT_KB = Number(values['document-kb']);
const FILE_MB = Number(values['file-mb']);
for (const [flag, value] of [['--documents', DOCUMENTS], ['--document-kb', DOCUMENT_KB], ['--file-mb', FILE_MB]] as const) {
  if (!Number.isInteger(value) || value < 0) {
    console.error(`${flag} must be a whole number of 0 or more, got ${String(value)}. See --help.`);
    process.exit(2);
  }
}

const PASSWORD_ENV = 'BENCH_RESTIC_PASSWORD';
const env = { [PASSWORD_ENV]: randomBytes(18).toString('base64url') };
/** Where --file-mb's files are: the data folder's storage/, which backups and restores carry. */
const storageOf = (droplet: string) => `${volumePathFor(droplet)}/data/storage/bench-files`;
/** Requests in flight at once when writing and reading documents. */
const CONCURRENCY = 8;

const output = (run: RunResult) => `${run.stdout}\n${run.stderr}`;
const load = () => os.loadavg().map(n => n.toFixed(1)).join(' ');

function mustSucceed(what: string, run: RunResult): void {
  if (run.code !== 0) throw new Error(`${what} exited ${run.code}:\n${output(run)}`);
}

/** Runs `work` for 0..count-1, CONCURRENCY at a time. */
async function forEachIndex(count: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, count) }, worker));
}

const documentValue = (i: number) => ({ n: i, text: randomBytes(Math.ceil((DOCUMENT_KB * 1024 * 3) / 4)).toString('base64').slice(0, DOCUMENT_KB * 1024) });

async function fillSource(fleet: Fleet, key: string): Promise<Array<ReturnType<typeof documentValue>>> {
  const written: Array<ReturnType<typeof documentValue>> = [];
  await forEachIndex(DOCUMENTS, async i => {
    written[i] = documentValue(i);
    const status = await putDocument(backendUrl(fleet, 'source'), key, `bench-${i}`, written[i]);
    if (status !== 200) throw new Error(`writing document bench-${i}: HTTP ${status}`);
  });
  if (FILE_MB > 0) {
    await fleet.exec('source', `mkdir -p ${storageOf('source')} && for i in $(seq 1 ${FILE_MB}); do head -c 1048576 /dev/urandom >${storageOf('source')}/file-$i; done`);
  }
  return written;
}

const fileSums = async (fleet: Fleet, droplet: string) =>
  FILE_MB > 0 ? (await fleet.exec(droplet, `cd ${storageOf(droplet)} && sha256sum file-* | sort`)).stdout : '';

/** Bytes: the newest local backup's dump, the data folder, and the repository on the vault. */
async function dataSizes(fleet: Fleet): Promise<{ dump: number; dataFolder: number; repository: number }> {
  const volume = volumePathFor('source');
  const bytes = async (droplet: string, cmd: string) => Number((await fleet.exec(droplet, cmd)).stdout.trim());
  return {
    dump: await bytes('source', `stat -c %s "$(ls -d ${volume}/backups/*/ | tail -n 1)database.dump"`),
    dataFolder: await bytes('source', `du -sb ${volume}/data | cut -f1`),
    repository: await bytes('vault', 'du -sb /srv/convex | cut -f1'),
  };
}

/** Every document read back from the target with the source's admin key; the mismatches. */
async function verify(fleet: Fleet, key: string, written: Array<ReturnType<typeof documentValue>>, sums: string): Promise<string[]> {
  const problems: string[] = [];
  await forEachIndex(DOCUMENTS, async i => {
    const { status, body } = await getDocument(backendUrl(fleet, 'target'), key, `bench-${i}`);
    if (status !== 200 || !isDeepStrictEqual(body, written[i])) problems.push(`bench-${i}: HTTP ${status}, ${status === 200 ? 'other content' : JSON.stringify(body).slice(0, 200)}`);
  });
  const restoredSums = await fileSums(fleet, 'target');
  if (restoredSums !== sums) problems.push(`the files under storage/ differ:\nwritten:\n${sums}\nrestored:\n${restoredSums}`);
  return problems;
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

async function bench(fleet: Fleet): Promise<number> {
  const backup = vaultBackup(PASSWORD_ENV);
  const inventory = await fleet.writeInventory('recovery', { hosts: { source: { backup }, target: { backup } } });
  console.log(`[recovery] converging the source (load ${load()})`);
  mustSucceed('all.ts --host source', await fleet.runScript('all.ts', ['--host', 'source', '--inventory', inventory]));
  const key = await adminKeyOf(fleet, 'source');
  console.log(`[recovery] writing ${DOCUMENTS} documents of ${DOCUMENT_KB} KiB${FILE_MB ? ` and ${FILE_MB} MiB of files` : ''}`);
  const written = await fillSource(fleet, key);
  const sums = await fileSums(fleet, 'source');
  mustSucceed('backup.ts --host source', await fleet.runScript('backup.ts', ['--host', 'source', '--inventory', inventory], env));
  const sizes = await dataSizes(fleet);
  await destroyDroplet(fleet, 'source');

  const loadBefore = load();
  console.log(`[recovery] restoring onto the bare target (load ${loadBefore})`);
  const started = Date.now();
  const restore = await fleet.runScript('restore.ts', ['--host', 'target', '--inventory', inventory, '--from-repository', '--yes', '--json'], env);
  const seconds = (Date.now() - started) / 1000;
  const loadAfter = load();
  mustSucceed('restore.ts --host target --from-repository --yes', restore);
  const problems = await verify(fleet, key, written, sums);

  console.log(`\nRecovery of ${DOCUMENTS} documents of ${DOCUMENT_KB} KiB${FILE_MB ? ` and ${FILE_MB} MiB of files` : ''}`);
  console.log(`  database dump ${mib(sizes.dump)}, data folder ${mib(sizes.dataFolder)}, repository on the vault ${mib(sizes.repository)}`);
  console.log(`  bare droplet to a serving, restored backend: ${round(seconds, 1)} s (load average ${loadBefore} before, ${loadAfter} after; ${os.cpus().length} CPUs)`);
  for (const host of parseRunJson(restore.stdout).hosts) {
    console.log(`  ${host.host} (its run ended after ${round(host.seconds, 1)} s; ${host.commands} remote commands):`);
    for (const step of host.steps) console.log(`    ${step.step.padEnd(24)} ${step.status.padEnd(8)} ${step.seconds.toFixed(1).padStart(6)} s`);
  }
  if (problems.length) {
    console.error(`\nverification FAILED: ${problems.length} problem(s)\n${problems.slice(0, 10).join('\n')}`);
    return 1;
  }
  console.log(`  verified: ${DOCUMENTS} documents read back with the old admin key${FILE_MB ? `, ${FILE_MB} files' SHA-256 equal` : ''}`);
  return 0;
}

const fleet = await fleetUp({ name: 'recovery-bench', droplets: [{ name: 'source' }, { name: 'vault' }, { name: 'target' }] });
let code = 1;
try {
  code = await bench(fleet);
} catch (error) {
  console.error(`[recovery] ${(error as Error).message}`);
} finally {
  if (!values.keep) await fleetDown(fleet.name);
}
process.exit(code);
