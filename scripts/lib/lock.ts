// One run at a time per droplet: a flock held by a remote command whose stdin stays open for the
// whole run. When the run ends, is killed, or loses its connection, sshd closes that command and
// the kernel drops the lock, so a dead run never blocks the next one.
import { hostname, userInfo } from 'node:os';
import type { Connection } from './ssh.ts';
import { lines, script, sh } from './shell.ts';
import type { Script } from './shell.ts';
import { STATE_DIR } from './step.ts';

export class LockError extends Error {}

export interface RunLock {
  release: () => void;
  /** What `read` printed, run as soon as the lock was taken. */
  read?: string;
}

const READ_END = '@@convex-ops-read-end';

/**
 * Takes the run lock. `read`, a script, runs under the lock in the same remote command (the
 * state a run starts from costs no round trip of its own, and is read only once nothing else
 * can change it).
 */
export async function acquireRunLock(conn: Connection, opts: { waitSeconds: number; script: string; read?: Script; onWait: (holder: string) => void }): Promise<RunLock> {
  const time = new Date().toTimeString().slice(0, 5);
  const holder = `${userInfo().username}@${hostname()} since ${time} (${opts.script}, pid ${process.pid})`;
  const holdScript = lines(
    sh`mkdir -p ${STATE_DIR} && exec 9>>${`${STATE_DIR}/lock`}`,
    // The holder names itself just after it takes the lock, so until then the file still names
    // an earlier run: only a name whose shell (the pid first on the line) is alive is believed.
    sh`if ! flock -n 9; then`,
    sh`  who=""`,
    sh`  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do`,
    sh`    if read -r pid rest 2>/dev/null <${`${STATE_DIR}/lock.holder`} && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then who=$rest; break; fi`,
    sh`    sleep 0.1`,
    sh`  done`,
    sh`  echo "BUSY $who"`,
    sh`  flock -w ${opts.waitSeconds} 9 || { echo TIMEOUT; exit 75; }`,
    sh`fi`,
    // Renamed into place, so a waiting run never reads a half-written holder.
    sh`printf '%s %s\n' "$$" ${holder} > ${`${STATE_DIR}/.lock.holder.new`} && mv -f ${`${STATE_DIR}/.lock.holder.new`} ${`${STATE_DIR}/lock.holder`}`,
    sh`echo LOCKED`,
    ...(opts.read ? [script`( ${opts.read}
) 2>/dev/null`, sh`echo "${READ_END} $?"`] : []),
    sh`cat >/dev/null`,
  );
  let busyWith = 'another run';
  return new Promise((resolve, reject) => {
    let settled = false;
    let read: string[] | undefined;
    conn
      .hold(holdScript, (line, stream) => {
        if (read) {
          if (stream === 'stderr') return;
          if (!line.startsWith(READ_END)) return void read.push(line);
          settled = true;
          const code = Number(line.slice(READ_END.length + 1));
          if (code === 0) resolve({ release: () => release(), read: read.join('\n') + '\n' });
          else {
            release();
            reject(new Error(`${conn.host.name}: read state failed (exit ${code})`));
          }
        } else if (line.startsWith('BUSY')) {
          busyWith = line.slice(5) || 'another run';
          opts.onWait(busyWith);
        } else if (line === 'LOCKED' && !settled) {
          if (opts.read) read = [];
          else {
            settled = true;
            resolve({ release: () => release() });
          }
        } else if (line === 'TIMEOUT' && !settled) {
          settled = true;
          reject(new LockError(`${conn.host.name} is being changed by ${busyWith}; gave up after ${opts.waitSeconds}s. Wait for that run to finish, or raise --lock-timeout.`));
        }
      })
      .then(({ release: end, exited }) => {
        release = end;
        void exited.then(code => {
          if (!settled) {
            settled = true;
            reject(read ? new Error(`${conn.host.name}: the command reading state ended early (exit ${code})`) : new LockError(`${conn.host.name}: could not take the run lock (exit ${code}); is flock (util-linux) installed?`));
          }
        });
      }, reject);
    let release: () => void = () => {};
  });
}
