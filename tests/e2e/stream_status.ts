// Reading the stream program's lines (tests/e2e/guest/stream.c): the
// guest's, from the serial console, and the server's, from its stdout. Pure.

export interface StreamStat {
  /** Connections open and connected */
  conns: number;
  /** Fewest bytes checked on one live connection */
  rxMin: number;
  /** Most bytes checked on one live connection */
  rxMax: number;
  /** Fewest bytes written on one live connection */
  txMin: number;
  /** Errors reported so far */
  errs: number;
}

export interface StreamError {
  line: string;
  /** The local port of the connection (the guest's port on the client), or null */
  port: number | null;
  /** A wrong byte: data lost or changed (as opposed to a reset or an end of stream) */
  mismatch: boolean;
}

export interface StreamReport {
  /** The last STAT line, or null */
  last: StreamStat | null;
  errors: StreamError[];
}

const STAT = /^STAT t=\d+ conns=(\d+) rx_min=(\d+) rx_max=(\d+) tx_min=(\d+) errs=(\d+)\s*$/;

/** Reads the program's output so far (a console log may hold other lines: they are skipped) */
export function parseStream(text: string): StreamReport {
  const report: StreamReport = { last: null, errors: [] };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    const s = STAT.exec(line);
    if (s) {
      report.last = {
        conns: Number(s[1]),
        rxMin: Number(s[2]),
        rxMax: Number(s[3]),
        txMin: Number(s[4]),
        errs: Number(s[5]),
      };
    } else if (line.startsWith("ERR ")) {
      const port = /\bport=(\d+)/.exec(line);
      report.errors.push({
        line,
        port: port ? Number(port[1]) : null,
        mismatch: line.includes("mismatch at"),
      });
    }
  }
  return report;
}

/**
 * Bytes lost host to guest, seen as a stall: the guest's reading stopped short
 * of `guestMark` while the server's went past `serverMark`, and neither end
 * reported an error. A segment that the source took in after passt dumped its
 * queue is acknowledged there and lost, so the target stays behind the host
 * for good: the host never sends those bytes again, and everything after them
 * waits in the target's out-of-order queue. The other direction goes on.
 */
export function stalledHostToGuest(
  guestMark: number,
  serverMark: number,
  guest: StreamReport,
  server: StreamReport,
): boolean {
  if (guest.errors.length > 0 || server.errors.length > 0) return false;
  if (!guest.last || !server.last) return false;
  return guest.last.rxMin <= guestMark && server.last.rxMin > serverMark;
}

/**
 * Bytes lost host to guest, and nothing else: the guest read a wrong byte on
 * each broken connection, and the server saw only the guest closing it (a
 * FIN, or a RST when unread data was left in the guest's socket)
 */
export function lostHostToGuest(guest: StreamError[], server: StreamError[]): boolean {
  if (guest.length === 0 || !guest.every((e) => e.mismatch)) return false;
  const closed = (e: StreamError) =>
    e.line.includes("end of stream") || e.line.includes("Connection reset by peer");
  return server.length <= guest.length && server.every(closed);
}
