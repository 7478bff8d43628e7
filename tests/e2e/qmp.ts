// A small QMP client: enough to migrate (migrate, query-migrate) and to stop
// QEMU (quit). One command at a time; events are skipped.
//
// QMP runs on QEMU's stdin and stdout (-qmp stdio): a pipe needs no Deno
// permission, where a UNIX socket would need --allow-net for each exact path.

export class Qmp {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #buffer = "";
  readonly #decoder = new TextDecoder();

  private constructor(child: Deno.ChildProcess) {
    this.#reader = child.stdout.getReader();
    this.#writer = child.stdin.getWriter();
  }

  /** Takes over QEMU's stdin and stdout and leaves capabilities negotiation mode */
  static async open(child: Deno.ChildProcess): Promise<Qmp> {
    const qmp = new Qmp(child);
    await qmp.#reply(); // the greeting
    await qmp.execute("qmp_capabilities");
    return qmp;
  }

  async #line(): Promise<string> {
    for (;;) {
      const nl = this.#buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("QMP: QEMU closed its output");
      this.#buffer += this.#decoder.decode(value, { stream: true });
    }
  }

  async #reply(): Promise<Record<string, unknown>> {
    for (;;) {
      const line = (await this.#line()).trim();
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if (!("event" in msg)) return msg;
    }
  }

  /** Runs one command; throws on a QMP error */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const msg = args ? { execute: command, arguments: args } : { execute: command };
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(msg) + "\n"));
    const reply = await this.#reply();
    if ("error" in reply) {
      throw new Error(`QMP ${command}: ${JSON.stringify(reply.error)}`);
    }
    return reply.return;
  }

  /** Lets go of QEMU's pipes (its stdin closed, its output drained to the end) */
  close(): void {
    this.#writer.close().catch(() => {});
    (async () => {
      try {
        while (!(await this.#reader.read()).done) { /* drain */ }
      } catch { /* QEMU gone */ }
    })();
  }
}
