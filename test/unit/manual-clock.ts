// A clock for tests that moves only when told to, running the timers that fall due on the way,
// in order, each seeing the time it was due at: minutes of a reporter's life in no time at all.
import type { Clock } from '../../scripts/lib/report.ts';

interface Timer { due: number; ms: number; tick: () => void }

export class ManualClock implements Clock {
  private time: number;
  private readonly timers = new Set<Timer>();

  constructor(start = Date.parse('2026-12-01T12:00:00Z')) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  every(ms: number, tick: () => void): () => void {
    const timer = { due: this.time + ms, ms, tick };
    this.timers.add(timer);
    return () => {
      this.timers.delete(timer);
    };
  }

  /** Moves time on by ms. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (let next = this.nextDue(end); next; next = this.nextDue(end)) {
      this.time = next.due;
      next.due += next.ms;
      next.tick();
    }
    this.time = end;
  }

  private nextDue(end: number): Timer | undefined {
    const [first] = [...this.timers].filter(t => t.due <= end).sort((a, b) => a.due - b.due);
    return first;
  }
}
