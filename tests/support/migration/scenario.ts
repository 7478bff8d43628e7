// The whole migration, driven from outside: starts the "remote" process, the
// "passt" process without CAP_NET_ADMIN, and the helper with it, then walks
// them through the steps below, one command at a time. Shared by the
// system test (tests/system/migration_test.ts) and the example
// (examples/migrate.ts), which only differ in what they do with the result.
//
// Needs only --allow-run: every socket is made by the child processes.

import { WITHOUT_NET_ADMIN } from "../helper.ts";
import type { MigrationReport } from "./migrate.ts";
import type { Family } from "../repair_state.ts";

const ROLE_DIR = new URL(".", import.meta.url).pathname;

/** How much each step moves */
export const SIZES = {
  /** Each way, before anything else: the connection works */
  warmUp: 64 * 1024,
  /** remote -> passt, left unread in passt's receive queue when it migrates */
  unread: 48 * 1024,
  /**
   * passt -> remote while the remote does not read: far more than the
   * remote's receive buffer and passt's send buffer hold, so some of it is
   * still unsent when passt migrates
   */
  burst: 16 * 1024 * 1024,
  /** Each way, after the migration */
  after: 256 * 1024,
} as const;

/** Bound of each step; a healthy run takes milliseconds per step */
const STEP_MS = 10000;

/** Bound of the wait for the remote's delayed ACK before the hand-over (it comes after 40 ms) */
const SETTLE_MS = 2000;

export interface MigrationOptions {
  family: Family;
  /** The helper's command line, without the socket path */
  helper: readonly string[];
  /** Called with a line describing each step as it happens */
  log?: (line: string) => void;
}

/** The final totals of one end */
export interface EndTotals {
  ok: boolean;
  written: number;
  requested: number;
  received: number;
  mismatchAt?: number;
  eof: boolean;
  error?: string;
}

export interface MigrationResult {
  family: Family;
  /** What setsockopt(TCP_REPAIR) gave the passt process by itself */
  negativeControl: { errno: number; errnoName: string | null; repair: number };
  /** The connection as each side saw it before the move */
  passtLocal: string;
  remoteLocal: string;
  report: MigrationReport;
  /** Whether the old socket's send queue held exactly the last bytes passt wrote */
  carriedIntact: boolean;
  passt: EndTotals;
  remote: EndTotals;
  helper: { code: number; stderr: string };
}

type Reply = { ok: boolean; error?: string; [key: string]: unknown };

/** Reads JSON lines from a child's stdout, each within a bound */
class LineReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  #text = "";
  #pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** The next line, null at EOF; throws after `ms` */
  async next(ms: number): Promise<string | null> {
    const deadline = performance.now() + ms;
    for (;;) {
      const nl = this.#text.indexOf("\n");
      if (nl >= 0) {
        const line = this.#text.slice(0, nl);
        this.#text = this.#text.slice(nl + 1);
        return line;
      }
      this.#pending ??= this.#reader.read();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - performance.now()));
      });
      const got = await Promise.race([this.#pending, timeout]);
      clearTimeout(timer);
      if (got === "timeout") throw new Error(`no answer within ${ms} ms`);
      this.#pending = null;
      if (got.done) return null;
      this.#text += this.#decoder.decode(got.value, { stream: true });
    }
  }

  cancel(): void {
    this.#reader.cancel().catch(() => {});
  }
}

/** A child process driven by commands on stdin, answering JSON lines */
class Role {
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: LineReader;
  readonly #stderr: Promise<string>;
  #exited = false;

  constructor(readonly name: string, argv: readonly string[]) {
    this.#child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.#lines = new LineReader(this.#child.stdout);
    this.#stderr = new Response(this.#child.stderr).text();
    this.#child.status.then(() => this.#exited = true);
  }

  /** The next reply; throws if it is not ok, with the process's stderr */
  async #reply(what: string, ms: number): Promise<Reply> {
    let line: string | null;
    try {
      line = await this.#lines.next(ms);
    } catch (e) {
      throw await this.#failure(`${what}: ${(e as Error).message}`);
    }
    if (line === null) throw await this.#failure(`${what}: the process ended`);
    const reply = JSON.parse(line) as Reply;
    // The process is still answering: leave it running, to be diagnosed
    if (!reply.ok) throw new Error(`${this.name}: ${what}: ${reply.error ?? "failed"}: ${line}`);
    return reply;
  }

  async #failure(message: string): Promise<Error> {
    this.kill();
    const stderr = (await this.#stderr).trim();
    return new Error(`${this.name}: ${message}${stderr ? `\n${this.name} stderr: ${stderr}` : ""}`);
  }

  /** The first line, written when the process is ready */
  hello(): Promise<Reply> {
    return this.#reply("start", STEP_MS);
  }

  /**
   * Sends several command lines in one write, so that the process handles
   * them back to back, and waits for all their replies
   */
  async askAll(commands: readonly string[]): Promise<Reply[]> {
    await this.#stdin.write(new TextEncoder().encode(commands.map((c) => c + "\n").join("")));
    const replies = [];
    for (const c of commands) replies.push(await this.#reply(c, STEP_MS + 5000));
    return replies;
  }

  /** Sends one command line and waits for its reply */
  async ask(command: string, ms = STEP_MS + 5000): Promise<Reply> {
    await this.#stdin.write(new TextEncoder().encode(command + "\n"));
    return this.#reply(command, ms);
  }

  /** The process's own account of its socket, for a failure message */
  async diagnose(): Promise<string> {
    if (this.#exited) return `${this.name}: ended`;
    try {
      return `${this.name}: ${JSON.stringify(await this.ask("diagnose", 3000))}`;
    } catch (e) {
      return `${this.name}: no diagnosis (${(e as Error).message})`;
    }
  }

  kill(): void {
    if (this.#exited) return;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Waits for the process to end (after "quit"), killing it past the bound */
  async close(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, STEP_MS);
    });
    await Promise.race([this.#child.status, timeout]);
    clearTimeout(timer);
    this.kill();
    await this.#child.status;
    this.#lines.cancel();
    await this.#stderr;
  }
}

/** The command line that starts a role script with exactly --allow-ffi */
function roleCommand(script: string, args: readonly string[]): string[] {
  return [Deno.execPath(), "run", "--no-prompt", "--allow-ffi", `${ROLE_DIR}${script}`, ...args];
}

/** Waits for the helper to end, within a bound */
async function helperExit(child: Deno.ChildProcess, stderr: Promise<string>) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), STEP_MS);
  });
  const status = await Promise.race([child.status, timeout]);
  clearTimeout(timer);
  if (status === "timeout") {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`helper did not exit within ${STEP_MS} ms; stderr: ${await stderr}`);
  }
  return { code: status.code, stderr: await stderr };
}

function kib(bytes: number): string {
  return bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : `${bytes / 1024} KiB`;
}

/** Runs the whole migration once; throws if any step fails */
export async function runMigration(options: MigrationOptions): Promise<MigrationResult> {
  const { family } = options;
  const log = options.log ?? (() => {});
  const roles: Role[] = [];
  let helper: Deno.ChildProcess | null = null;
  let helperStderr: Promise<string> = Promise.resolve("");
  try {
    const remote = new Role("remote", roleCommand("remote.ts", [String(family)]));
    roles.push(remote);
    const { port } = await remote.hello();
    const passt = new Role("passt", [
      ...WITHOUT_NET_ADMIN,
      ...roleCommand("passt.ts", [String(family), String(port)]),
    ]);
    roles.push(passt);
    const hello = await passt.hello();
    const socket = hello.socket as string;
    const accepted = await remote.ask(`accept ${STEP_MS}`);
    log(`connected: passt ${hello.local} <-> remote ${accepted.local}`);

    // The capability boundary: passt cannot switch repair mode by itself
    const control = await passt.ask("try-repair");
    const negativeControl = {
      errno: control.errno as number,
      errnoName: control.errnoName as string | null,
      repair: control.repair as number,
    };
    log(
      `negative control: passt (no CAP_NET_ADMIN) sets TCP_REPAIR itself -> ` +
        (negativeControl.errno === 0 ? "it worked (!)" : `${negativeControl.errnoName}`),
    );

    // The helper, with the capability, connects to passt's repair socket
    const argv = [...options.helper, socket];
    helper = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).spawn();
    helperStderr = new Response(helper.stderr).text();
    await passt.ask(`accept-helper ${STEP_MS}`);
    log(`helper (with CAP_NET_ADMIN) connected to passt's repair socket ${socket}`);

    // Data both ways on the old socket
    await remote.ask(`send ${SIZES.warmUp}`);
    await passt.ask(`send ${SIZES.warmUp}`);
    await remote.ask(`wait-received ${SIZES.warmUp} ${STEP_MS}`);
    await passt.ask(`wait-received ${SIZES.warmUp} ${STEP_MS}`);
    log(`exchanged ${kib(SIZES.warmUp)} each way on the old socket`);

    // Fill the old socket's queues: unread data in passt's receive queue, and
    // a send queue the remote does not drain because it stops reading
    await passt.ask("read off");
    await remote.ask(`send ${SIZES.unread}`);
    await remote.ask(`wait-flushed ${STEP_MS}`);
    await passt.ask(`wait-queued ${SIZES.unread} ${STEP_MS}`);
    log(
      `passt stopped reading; remote sent ${kib(SIZES.unread)} more, left in passt's receive queue`,
    );
    await remote.ask("read off");
    // The burst and the migration in one go: passt writes until its socket is
    // full and at once asks the helper for repair mode, well within the 40 ms
    // for which the remote delays its ACK of the last segments it took.
    const [, migrated] = await passt.askAll([`send ${SIZES.burst}`, `migrate ${SETTLE_MS}`]);
    if (!migrated!.full) throw new Error("passt: the socket did not fill up before migrating");
    log(`remote stopped reading; passt wrote until its socket was full, then migrated`);
    const report = migrated!.report as MigrationReport;
    const carriedIntact = migrated!.carriedIntact as boolean;
    log(`passt moved the connection to a new socket in ${report.totalMicros} µs`);

    // Everything flows again, and more goes both ways on the new socket
    await passt.ask("read on");
    await remote.ask("read on");
    await remote.ask(`send ${SIZES.after}`);
    await passt.ask(`send ${SIZES.after}`);
    const total = SIZES.warmUp + SIZES.burst + SIZES.after;
    const totalBack = SIZES.warmUp + SIZES.unread + SIZES.after;
    await remote.ask(`wait-received ${total} ${STEP_MS}`);
    await passt.ask(`wait-received ${totalBack} ${STEP_MS}`);

    // Both ends close their side; each reads to the other's FIN
    const [passtDone, remoteDone] = await Promise.all([
      passt.ask(`finish ${STEP_MS}`),
      remote.ask(`finish ${STEP_MS}`),
    ]);
    log(
      `both read on, ${kib(SIZES.after)} more each way, both closed: ` +
        (passtDone.ok && remoteDone.ok ? "every byte arrived as sent" : "DATA DIFFERS"),
    );

    await passt.ask("close-helper");
    const helperOutcome = await helperExit(helper, helperStderr);
    helper = null;
    log(
      `passt closed the helper's connection; the helper exited with status ${helperOutcome.code}`,
    );
    await Promise.all([passt.ask("quit"), remote.ask("quit")]);
    await Promise.all(roles.map((r) => r.close()));

    return {
      family,
      negativeControl,
      passtLocal: hello.local as string,
      remoteLocal: accepted.local as string,
      report,
      carriedIntact,
      passt: passtDone as unknown as EndTotals,
      remote: remoteDone as unknown as EndTotals,
      helper: helperOutcome,
    };
  } catch (e) {
    const states = [];
    for (const role of roles) states.push(await role.diagnose());
    throw new Error(`${(e as Error).message}\n${states.join("\n")}`);
  } finally {
    for (const role of roles) role.kill();
    await Promise.all(roles.map((r) => r.close()));
    if (helper !== null) {
      try {
        helper.kill("SIGKILL");
      } catch {
        // already gone
      }
      await helper.status;
      await helperStderr;
    }
  }
}
