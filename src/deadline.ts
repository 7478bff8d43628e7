// The one limit --timeout puts on every wait: for the socket to appear, and
// for it to accept (passt-repair(1), --timeout). Without --timeout there is none, as
// upstream. Pure: unit-tested without permissions.

import { TimeoutError } from "./errors.ts";

/** When waiting ends, fixed once at startup and shared by every wait */
export class Deadline {
  /** No limit */
  static readonly NONE = new Deadline(null, null);

  /** `seconds` from `now` (performance.now() milliseconds), or none for null */
  static after(seconds: number | null, now = performance.now()): Deadline {
    return seconds === null ? Deadline.NONE : new Deadline(seconds, now + seconds * 1000);
  }

  private constructor(
    /** As given on the command line, for the message */
    readonly seconds: number | null,
    /** performance.now() value at which waiting ends */
    readonly at: number | null,
  ) {}

  /**
   * Whole milliseconds left (at least 1), for poll(); -1 when there is no
   * limit. Once the deadline has passed, throws TimeoutError naming what was
   * `awaited`.
   */
  remainingMs(awaited: string, now = performance.now()): number {
    if (this.at === null) return -1;
    const left = this.at - now;
    if (left <= 0) throw new TimeoutError(this.seconds ?? 0, awaited);
    return Math.ceil(left);
  }
}
